"""POST /v1/renew: the current certificate (a proof-of-possession token or mutual TLS) vouches for a new key.

Real app, migrated Postgres, real CA; every renewed leaf is checked by openssl against the
truststore, leaf alone. Each refusal names its code, issues nothing, and leaves the old
certificate as it was.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, update

from issuer.attest.ec2_instance import InstanceInfo
from issuer.store.models import Attestation, Certificate, Identity
from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign
from tests.support.harness import (
    Harness,
    check_issued,
    check_leaf_against_truststore,
    new_csr,
    running_issuer,
)
from tests.support.renewal_token import renewal_token
from tests.support.x509_check import make_csr

AUDIENCE = "issuer.test.example"
CONFIG = f"""
[issuer]
trust_domain = "test.example"
server_id = "{AUDIENCE}"

[[roles]]
name = "edge"
methods = ["token"]
ttl = "1h"
max_ttl = "2h"

[[roles]]
name = "short-chain"
methods = ["token"]
ttl = "1h"
renew_grace = "10m"
max_renewal_age = "3h"
"""


@dataclass
class Machine:
    """What an agent keeps: its key and certificate."""

    key: Any
    certificate: x509.Certificate
    body: dict[str, Any]

    @property
    def serial(self) -> str:
        return self.body["serial"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def bootstrap(h: Harness, *, role: str = "edge", name: str = "edge-1") -> Machine:
    key, csr = new_csr()
    status, body = await h.post("/v1/issue/token", {"csr": csr, "token": await h.token(role=role, name=name)})
    assert status == 201, body
    return Machine(key, x509.load_pem_x509_certificate(body["certificate"].encode()), body)


async def renew(
    h: Harness, machine: Machine, *, key: Any = None, token: str | None = None, **token_options: Any
) -> tuple[int, dict[str, Any], Any]:
    """POST /v1/renew for a new key (or ``key``), vouched for by ``machine``'s token (or ``token``)."""
    new_key = key or ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(new_key).decode()
    if token is None:
        token = renewal_token(machine.key, machine.certificate, csr_pem=csr, audience=AUDIENCE, **token_options)
    resp = await h.client.post(
        "/v1/renew",
        json={"csr": csr},
        headers={"Authorization": f"Bearer {token}"},
    )
    return resp.status, await resp.json(content_type=None), new_key


async def statuses(h: Harness) -> dict[str, str]:
    return {c.serial: c.status for c in await h.certificates()}


async def test_a_token_renews_for_a_new_key_and_supersedes_the_old(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        old = await bootstrap(h)
        status, body, key = await renew(h, old)
        assert status == 201, body
        leaf = check_issued(body, key=key)
        await check_leaf_against_truststore(h, body)
        assert body["renewed_from"] == old.serial != body["serial"]
        assert body["identity"] == old.body["identity"] and body["role"] == "edge"
        assert body["server_id"] == AUDIENCE
        assert leaf.subject == old.certificate.subject
        assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=1, seconds=60)
        assert await statuses(h) == {old.serial: "superseded", body["serial"]: "active"}
        rows = {c.serial: c for c in await h.certificates()}
        assert rows[body["serial"]].renewed_from == rows[old.serial].id
        assert rows[body["serial"]].chain_started_at == rows[old.serial].chain_started_at
        audit = [(a.outcome, a.method, a.principal, a.certificate_serial) for a in await h.attestations()]
        assert audit[-1] == ("success", "renew", "edge-1", body["serial"])


async def test_renewal_keeps_this_certificates_identity_not_the_principals_latest(tmp_path: Path, pg_url: str) -> None:
    # Many machines share a principal (ECS tasks of one role); the identity row holds the latest facts.
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        old = await bootstrap(h, name="task-a")
        async with h.service.sessions() as session, session.begin():
            await session.execute(update(Identity).values(attributes={"name": "someone-else"}))
        status, body, _ = await renew(h, old)
        assert status == 201, body
        assert body["identity"]["uri_san"] == "spiffe://test.example/onprem/task-a"


async def test_the_same_key_is_refused(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        old = await bootstrap(h)
        status, body, _ = await renew(h, old, key=old.key)
        assert (status, body["code"]) == (400, "renew_same_key")
        assert await statuses(h) == {old.serial: "active"}


async def test_a_token_is_single_use(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        old = await bootstrap(h)
        key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(key).decode()
        token = renewal_token(old.key, old.certificate, csr_pem=csr, audience=AUDIENCE)
        auth = {"Authorization": f"Bearer {token}"}
        first = await h.client.post("/v1/renew", json={"csr": csr}, headers=auth)
        assert first.status == 201
        again = await h.client.post("/v1/renew", json={"csr": csr}, headers=auth)
        assert (again.status, (await again.json())["code"]) == (401, "renew_token_replayed")


def _other_ca_certificate(key: Any) -> x509.Certificate:
    """A certificate for ``key`` from a CA that is not ours, with a serial and subject like ours."""
    from tests.support.x509_check import pem  # noqa: F401  (keeps the helper module loaded)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Issuer Issuing CA")])
    now = datetime.now(UTC)
    from cryptography.hazmat.primitives import hashes

    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "edge-1")]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(ca_key, hashes.SHA256())
    )


REFUSALS: list[tuple[str, dict[str, Any], int, str]] = [
    ("wrong audience", {"aud": "another.service"}, 401, "renew_audience_mismatch"),
    ("audience missing", {"aud": None}, 401, "renew_audience_mismatch"),
    ("expired", {"now": datetime.now(UTC).timestamp() - 3600}, 401, "renew_token_expired"),
    ("from the future", {"now": datetime.now(UTC).timestamp() + 3600}, 401, "renew_token_expired"),
    ("lives too long", {"lifetime": 301}, 401, "renew_token_invalid"),
    ("alg none", {"alg": "none"}, 401, "renew_token_invalid"),
    ("alg HS256", {"alg": "HS256"}, 401, "renew_token_invalid"),
    ("alg of another key type", {"alg": "ES384"}, 401, "renew_token_invalid"),
    ("alg RS256 with an EC key", {"alg": "RS256"}, 401, "renew_token_invalid"),
    ("signed by another key", {"signing_key": ec.generate_private_key(ec.SECP256R1())}, 401, "renew_token_invalid"),
    ("bound to another CSR", {"csr_sha256": "0" * 64}, 401, "renew_csr_mismatch"),
    ("no jti", {"jti": None}, 401, "renew_token_invalid"),
    ("another serial in sub", {"sub": "1234"}, 401, "renew_token_invalid"),
    ("a jwk header", {"header_jwk": {"kty": "EC"}}, 401, "renew_token_invalid"),
    ("no x5c", {"header_x5c": None}, 401, "renew_token_invalid"),
]


@pytest.mark.parametrize(("case", "options", "status", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_token_refusals(
    tmp_path: Path, pg_url: str, case: str, options: dict[str, Any], status: int, code: str
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        old = await bootstrap(h)
        got, body, _ = await renew(h, old, **options)
        assert (got, body["code"]) == (status, code), body
        assert await statuses(h) == {old.serial: "active"}  # nothing issued, nothing superseded
        (row,) = [a for a in await h.attestations() if a.request_id == body["request_id"]]
        assert (row.outcome, row.method, row.code) == ("failure", "renew", code)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "renew_auth_missing"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "renew_token_invalid"),
        ({"Authorization": "Bearer not.a.token"}, "renew_token_invalid"),
        ({"Authorization": "Bearer " + "A" * 8_000}, "renew_token_invalid"),
    ],
)
async def test_no_usable_proof(tmp_path: Path, pg_url: str, headers: dict[str, str], code: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        resp = await h.client.post("/v1/renew", json={"csr": new_csr()[1]}, headers=headers)
        assert (resp.status, (await resp.json())["code"]) == (401, code)


async def test_a_certificate_from_another_ca_or_not_recorded_is_unknown(tmp_path: Path, pg_url: str) -> None:
    from ca.files import load_local_signer
    from ca.profile import LeafTemplate
    from tests.support.harness import PASSPHRASE
    from tests.support.signing import sign

    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        key = ec.generate_private_key(ec.SECP256R1())
        stranger = Machine(key, _other_ca_certificate(key), {"serial": "0"})
        status, body, _ = await renew(h, stranger)
        assert (status, body["code"]) == (401, "renew_certificate_unknown")
        # Signed with our issuing key but never recorded: not ours either.
        signer = load_local_signer(h.settings.ca_dir, passphrase=PASSPHRASE.encode())
        now = datetime.now(UTC)
        template = LeafTemplate(
            common_name="ghost",
            uri_sans=("spiffe://test.example/onprem/ghost",),
            not_before=now,
            not_after=now + timedelta(hours=1),
        )
        ghost = Machine(key, await sign(signer, template, key.public_key()), {"serial": "0"})
        status, body, _ = await renew(h, ghost)
        assert (status, body["code"]) == (401, "renew_certificate_unknown")


def _forged_copy(victim: x509.Certificate, key: Any) -> x509.Certificate:
    """``victim`` rebuilt for ``key`` — its serial, names, validity and extensions, our issuer's name
    and AKI — and signed by a key that is not ours."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(victim.subject)
        .issuer_name(victim.issuer)
        .public_key(key.public_key())
        .serial_number(victim.serial_number)
        .not_valid_before(victim.not_valid_before_utc)
        .not_valid_after(victim.not_valid_after_utc)
    )
    for extension in victim.extensions:
        if isinstance(extension.value, x509.SubjectKeyIdentifier):
            extension = x509.Extension(
                extension.oid, extension.critical, x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            )
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())


async def test_a_forged_copy_of_a_recorded_certificate_is_unknown_and_changes_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        victim = await bootstrap(h, name="victim")
        key = ec.generate_private_key(ec.SECP256R1())
        forged = Machine(key, _forged_copy(victim.certificate, key), victim.body)
        assert forged.certificate.serial_number == victim.certificate.serial_number
        assert forged.certificate.issuer == victim.certificate.issuer  # passes the issuer-name check
        status, body, _ = await renew(h, forged)
        assert (status, body["code"]) == (401, "renew_certificate_unknown")
        assert (await statuses(h))[victim.serial] == "active"
        async with h.service.sessions() as session:
            reason = await session.scalar(
                select(Attestation.reason).where(Attestation.method == "renew").order_by(Attestation.id.desc())
            )
        assert reason is not None and "not with these bytes" in reason
        status, body, _ = await renew(h, victim)  # the real one still renews
        assert status == 201, body


async def test_revoked_superseded_and_expired_certificates_cannot_renew(tmp_path: Path, pg_url: str) -> None:
    clock = Clock()
    async with running_issuer(tmp_path, pg_url, config=CONFIG, clock=clock) as h:
        revoked = await bootstrap(h, name="stolen")
        async with h.service.sessions() as session, session.begin():
            await session.execute(
                update(Certificate).where(Certificate.serial == revoked.serial).values(status="revoked")
            )
        status, body, _ = await renew(h, revoked)
        assert (status, body["code"]) == (401, "certificate_revoked")

        renewed = await bootstrap(h, name="twice")
        assert (await renew(h, renewed))[0] == 201
        status, body, _ = await renew(h, renewed)
        assert (status, body["code"]) == (401, "certificate_superseded")

        late = await bootstrap(h, name="late")
        clock.now += timedelta(hours=1, minutes=2)  # past not_after; role edge has no renew_grace
        status, body, _ = await renew(h, late, now=clock.now.timestamp())
        assert (status, body["code"]) == (401, "certificate_expired")


async def test_renew_grace_and_max_renewal_age(tmp_path: Path, pg_url: str) -> None:
    clock = Clock()
    async with running_issuer(tmp_path, pg_url, config=CONFIG, clock=clock) as h:
        machine = await bootstrap(h, role="short-chain", name="chain")
        clock.now += timedelta(hours=1, minutes=5)  # expired, inside the 10-minute grace
        status, body, key = await renew(h, machine, now=clock.now.timestamp())
        assert status == 201, body
        machine = Machine(key, x509.load_pem_x509_certificate(body["certificate"].encode()), body)
        clock.now += timedelta(minutes=55)  # 2h00 after the first attestation: the chain may go on
        status, body, key = await renew(h, machine, now=clock.now.timestamp())
        assert status == 201, body
        machine = Machine(key, x509.load_pem_x509_certificate(body["certificate"].encode()), body)
        clock.now += timedelta(hours=1, minutes=1)  # in the grace again, but the chain started 3h01 ago
        status, body, _ = await renew(h, machine, now=clock.now.timestamp())
        assert (status, body["code"]) == (403, "renewal_chain_too_old")


async def test_two_renewals_of_one_certificate_only_one_wins(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        old = await bootstrap(h)
        results = await asyncio.gather(*(renew(h, old) for _ in range(6)))
        codes = sorted((status, body.get("code")) for status, body, _ in results)
        assert codes == [(201, None)] + [(401, "certificate_superseded")] * 5, codes
        assert sorted((await statuses(h)).values()) == ["active", "superseded"]


async def test_renewal_over_mutual_tls(tmp_path: Path, pg_url: str) -> None:
    from demo.mtls_endpoint import make_server_certificate

    server_cert, server_key = make_server_certificate(tmp_path)
    (tmp_path / "state").mkdir(mode=0o700)
    from tests.support.harness import write_ca

    write_ca(tmp_path / "state")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert, server_key)
    context.load_verify_locations(tmp_path / "state" / "ca" / "root.pem")
    context.verify_mode = ssl.CERT_OPTIONAL
    async with running_issuer(tmp_path, pg_url, config=CONFIG, ssl_context=context) as h:
        client_tls = ssl.create_default_context(cafile=str(server_cert))
        key, csr = new_csr()
        resp = await h.client.post(
            "/v1/issue/token",
            json={"csr": csr, "token": await h.token(role="edge")},
            ssl=client_tls,
            server_hostname="localhost",
        )
        old_body = await resp.json()
        assert resp.status == 201, old_body
        # The agent presents cert + chain with its key; no Authorization header.
        from cryptography.hazmat.primitives import serialization

        (tmp_path / "cert.pem").write_text(old_body["certificate"] + old_body["chain"])
        (tmp_path / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        # A context of its own: the keep-alive connection of the first request had no client certificate.
        client_tls = ssl.create_default_context(cafile=str(server_cert))
        client_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        new_key, new_pem = new_csr()
        resp = await h.client.post("/v1/renew", json={"csr": new_pem}, ssl=client_tls, server_hostname="localhost")
        body = await resp.json()
        assert resp.status == 201, body
        assert body["renewed_from"] == old_body["serial"]
        check_issued(body, key=new_key)


class ScriptedLookup:
    """An injected InstanceLookup (the service's seam) whose answer a test sets."""

    def __init__(self) -> None:
        self.state = "running"

    async def describe(self, *, account_id: str, region: str, instance_id: str) -> InstanceInfo | None:
        return InstanceInfo(
            instance_id=instance_id,
            state=self.state,
            image_id="ami-0abcdef1234567890",
            vpc_id=None,
            subnet_id=None,
            instance_profile_arn=None,
        )


async def test_an_ec2_renewal_asks_aws_again_and_a_terminated_instance_cannot_renew(
    tmp_path: Path, pg_url: str
) -> None:
    from issuer.attest.ec2_certs import AwsCertStore

    aws = FakeAwsSigner.create(kind="rsa2048")
    lookup = ScriptedLookup()
    config = f"""
[issuer]
trust_domain = "test.example"
server_id = "{AUDIENCE}"

[[roles]]
name = "fleet"
methods = ["aws-ec2"]
check_instance = true
"""
    async with running_issuer(
        tmp_path,
        pg_url,
        config=config,
        aws_certs=AwsCertStore.builtin(extra={"eu-west-1": [aws.cert]}),
        instance_lookups=lambda assume_role, region: lookup,
    ) as h:
        pending = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        document = build_document(region="eu-west-1", pending_time=pending)
        key, csr = new_csr()
        status, body = await h.post(
            "/v1/issue/aws-ec2", {"csr": csr, "document": document.decode(), "rsa2048": sign(document, aws, "rsa2048")}
        )
        assert status == 201, body
        machine = Machine(key, x509.load_pem_x509_certificate(body["certificate"].encode()), body)
        status, renewed, key = await renew(h, machine)
        assert status == 201, renewed
        machine = Machine(key, x509.load_pem_x509_certificate(renewed["certificate"].encode()), renewed)
        lookup.state = "terminated"
        status, body, _ = await renew(h, machine)
        assert (status, body["code"]) == (401, "ec2_instance_not_found")
        async with h.service.sessions() as session:
            codes = (await session.scalars(select(Attestation.code).where(Attestation.method == "renew"))).all()
        assert list(codes) == [None, "ec2_instance_not_found"]
