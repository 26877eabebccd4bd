"""POST /v1/issue/x509pop: a machine with another CA's certificate gets ours, for a new key.

Real app, migrated Postgres, real CA; the external PKI is built in the test
(tests/support/external_pki.py). Every issued leaf passes cryptography's client verifier
and openssl, and ``openssl verify -CAfile truststore.pem leaf.pem`` alone, as API Gateway
checks it. Each refusal names its code, issues nothing, and leaves an audit row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.external_pki import ExternalPki, Machine, proof
from tests.support.harness import Harness, check_issued, check_leaf_against_truststore, new_csr, running_issuer
from tests.support.renewal_token import renewal_token
from tests.support.x509_check import make_csr

AUDIENCE = "issuer.test.example"
CONFIG = f"""
[issuer]
trust_domain = "test.example"
server_id = "{AUDIENCE}"

[[roles]]
name = "corp"
methods = ["x509pop"]
trust_bundle = "external-cas.pem"
ttl = "1h"

[[roles]]
name = "corp-web"
methods = ["x509pop"]
trust_bundle = "external-cas.pem"
allowed_common_names = ["web-*"]
allowed_organizational_units = ["Servers"]
principal = "{{ou}}-{{cn}}"
uri_san = "spiffe://{{trust_domain}}/x509pop/{{cn}}"
"""


@pytest.fixture(scope="module")
def pki() -> ExternalPki:
    return ExternalPki()


async def issue(
    h: Harness, machine: Machine, *, role: str = "corp", key: Any = None, chain: str | None = None, **knobs: Any
) -> tuple[int, dict[str, Any], Any]:
    """POST /v1/issue/x509pop for a new key (or ``key``), with a proof by ``machine``'s key (``knobs`` bend it)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key).decode()
    token = knobs.pop("token", None) or proof(machine.key, csr_pem=csr, audience=AUDIENCE, **knobs)
    body = {"csr": csr, "role": role, "chain": chain if chain is not None else machine.chain_pem, "proof": token}
    status, answer = await h.post("/v1/issue/x509pop", body)
    return status, answer, key


def issuer_for(tmp_path: Path, pg_url: str, pki: ExternalPki) -> Any:
    pki.write_bundle(tmp_path / "external-cas.pem")
    return running_issuer(tmp_path, pg_url, config=CONFIG)


async def audit_of(h: Harness, request_id: str) -> Any:
    (row,) = [a for a in await h.attestations() if a.request_id == request_id]
    return row


async def test_a_certificate_of_the_bundle_and_its_proof_get_ours(
    tmp_path: Path, pg_url: str, pki: ExternalPki
) -> None:
    async with issuer_for(tmp_path, pg_url, pki) as h:
        machine = pki.machine("dev-1")
        status, body, key = await issue(h, machine)
        assert status == 201, body
        leaf = check_issued(body, key=key)
        await check_leaf_against_truststore(h, body)
        assert body["identity"] == {
            "method": "x509pop",
            "principal": "dev-1",
            "uri_san": "spiffe://test.example/x509pop/dev-1",
        }
        assert leaf.issuer != machine.certificate.issuer  # ours, not the other CA's
        assert leaf.public_key().public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != machine.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (row,) = await h.certificates()
        assert (row.method, row.role, row.identity_attributes["fingerprint"]) == (
            "x509pop",
            "corp",
            machine.fingerprint,
        )
        audit = await audit_of(h, row.request_id)
        assert (audit.outcome, audit.method, audit.principal, audit.certificate_serial) == (
            "success",
            "x509pop",
            "dev-1",
            body["serial"],
        )


async def test_the_role_matchers_and_principal_template(tmp_path: Path, pg_url: str, pki: ExternalPki) -> None:
    async with issuer_for(tmp_path, pg_url, pki) as h:
        status, body, _ = await issue(h, pki.machine("web-3", ou=("Servers",)), role="corp-web")
        assert status == 201, body
        assert body["identity"]["principal"] == "Servers-web-3"
        assert body["identity"]["uri_san"] == "spiffe://test.example/x509pop/web-3"
        await check_leaf_against_truststore(h, body)
        for machine in (pki.machine("db-3", ou=("Servers",)), pki.machine("web-4", ou=("Lab",))):
            status, body, _ = await issue(h, machine, role="corp-web")
            assert (status, body["code"]) == (403, "binding_mismatch"), body
            assert body["detail"] == "The identity does not match the role's bindings."  # says not which
            row = await audit_of(h, body["request_id"])
            assert (row.outcome, row.code, row.role) == ("failure", "binding_mismatch", "corp-web")
            assert "allowed_" in (row.reason or "")


def _hs256_secret(machine: Machine) -> bytes:
    return machine.certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


REFUSALS: list[tuple[str, Any, dict[str, Any], int, str]] = [
    ("a CA outside the bundle", lambda pki: ExternalPki("Other Corp").machine(), {}, 401, "x509pop_chain_untrusted"),
    (
        "expired",
        lambda pki: pki.machine(
            not_before=datetime.now(UTC) - timedelta(days=2), not_after=datetime.now(UTC) - timedelta(minutes=1)
        ),
        {},
        401,
        "x509pop_certificate_expired",
    ),
    (
        "not yet valid",
        lambda pki: pki.machine(not_before=datetime.now(UTC) + timedelta(minutes=10)),
        {},
        401,
        "x509pop_certificate_not_yet_valid",
    ),
    (
        "not a client certificate",
        lambda pki: pki.machine(usages=(ExtendedKeyUsageOID.SERVER_AUTH,)),
        {},
        401,
        "x509pop_not_client_certificate",
    ),
    (
        "a proof by another key",
        lambda pki: pki.machine(),
        {"signing_key": ec.generate_private_key(ec.SECP256R1())},
        401,
        "x509pop_proof_invalid",
    ),
    ("alg none", lambda pki: pki.machine(), {"alg": "none"}, 401, "x509pop_proof_invalid"),
    ("alg HS256", lambda pki: pki.machine(), {"alg": "HS256", "hmac_secret": "public"}, 401, "x509pop_proof_invalid"),
    ("alg of another key type", lambda pki: pki.machine(), {"alg": "RS256"}, 401, "x509pop_proof_invalid"),
    ("alg of another curve", lambda pki: pki.machine(), {"alg": "ES384"}, 401, "x509pop_proof_invalid"),
    ("for another server", lambda pki: pki.machine(), {"aud": "elsewhere"}, 401, "x509pop_audience_mismatch"),
    ("for another CSR", lambda pki: pki.machine(), {"csr_sha256": "0" * 64}, 401, "x509pop_csr_mismatch"),
    (
        "an expired proof",
        lambda pki: pki.machine(),
        {"age": 900},
        401,
        "x509pop_proof_expired",
    ),
    ("a chain that is not PEM", lambda pki: pki.machine(), {"chain": "nope"}, 400, "x509pop_chain_malformed"),
    ("no proof", lambda pki: pki.machine(), {"token": None, "drop_proof": True}, 400, "field_missing"),
]


@pytest.mark.parametrize(("case", "make", "knobs", "status", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_refusals_each_with_its_code_and_audit_row(
    tmp_path: Path, pg_url: str, pki: ExternalPki, case: str, make: Any, knobs: dict[str, Any], status: int, code: str
) -> None:
    async with issuer_for(tmp_path, pg_url, pki) as h:
        machine: Machine = make(pki)
        knobs = dict(knobs)
        if "age" in knobs:  # made now, not when the cases were collected
            knobs["now"] = datetime.now(UTC).timestamp() - knobs.pop("age")
        if knobs.get("hmac_secret") == "public":
            knobs["hmac_secret"] = _hs256_secret(machine)
        if knobs.pop("drop_proof", False):
            knobs.pop("token")
            csr = new_csr()[1]
            got, body = await h.post("/v1/issue/x509pop", {"csr": csr, "chain": machine.chain_pem})
        else:
            got, body, _ = await issue(h, machine, **knobs)
        assert (got, body["code"]) == (status, code), body
        assert await h.certificates() == []
        row = await audit_of(h, body["request_id"])
        assert (row.outcome, row.method, row.code) == ("failure", "x509pop", code)


async def test_the_external_key_cannot_be_the_new_key(tmp_path: Path, pg_url: str, pki: ExternalPki) -> None:
    async with issuer_for(tmp_path, pg_url, pki) as h:
        machine = pki.machine()
        status, body, _ = await issue(h, machine, key=machine.key)
        assert (status, body["code"]) == (400, "x509pop_key_reused"), body
        row = await audit_of(h, body["request_id"])
        assert (row.outcome, row.code) == ("failure", "x509pop_key_reused")
        assert (await issue(h, machine))[0] == 201  # a new key is fine


async def test_a_proof_is_single_use(tmp_path: Path, pg_url: str, pki: ExternalPki) -> None:
    async with issuer_for(tmp_path, pg_url, pki) as h:
        machine = pki.machine()
        key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(key).decode()
        token = proof(machine.key, csr_pem=csr, audience=AUDIENCE)
        body = {"csr": csr, "role": "corp", "chain": machine.chain_pem, "proof": token}
        first, answer = await h.post("/v1/issue/x509pop", body)
        assert first == 201, answer
        again, answer = await h.post("/v1/issue/x509pop", body)
        assert (again, answer["code"]) == (401, "x509pop_proof_replayed")
        row = await audit_of(h, answer["request_id"])
        assert (row.outcome, row.code) == ("failure", "x509pop_proof_replayed")
        assert len(await h.certificates()) == 1


async def test_an_x509pop_certificate_renews_like_any_other(tmp_path: Path, pg_url: str, pki: ExternalPki) -> None:
    async with issuer_for(tmp_path, pg_url, pki) as h:
        status, body, key = await issue(h, pki.machine("web-9", ou=("Servers",)), role="corp-web")
        assert status == 201, body
        ours = x509.load_pem_x509_certificate(body["certificate"].encode())
        new_key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(new_key).decode()
        token = renewal_token(key, ours, csr_pem=csr, audience=AUDIENCE)
        resp = await h.client.post("/v1/renew", json={"csr": csr}, headers={"Authorization": f"Bearer {token}"})
        renewed = await resp.json()
        assert resp.status == 201, renewed
        check_issued(renewed, key=new_key)
        await check_leaf_against_truststore(h, renewed)
        assert renewed["renewed_from"] == body["serial"]
        assert renewed["identity"] == body["identity"] and renewed["role"] == "corp-web"
        statuses = {c.serial: c.status for c in await h.certificates()}
        assert statuses == {body["serial"]: "superseded", renewed["serial"]: "active"}
