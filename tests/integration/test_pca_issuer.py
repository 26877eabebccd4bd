"""The service issuing through AWS Private CA: moto's ACM PCA and S3 server (in this process, signatures
checked) as the peer, a migrated Postgres, openssl checking every leaf alone against GET /v1/truststore.

moto's IssueCertificate ignores ApiPassthrough and Validity: what plain moto returns is refused
(and nothing is recorded); the accepting paths run after ``honour_passthrough()`` extends moto's
backend in this process to apply them as Private CA documents (tests/support/moto_pca.py).
The app loads the signer through its default loader (``KeySigners`` → ``issuer.aws.pca.PcaClients``),
which reaches moto because ``AWS_ENDPOINT_URL_ACM_PCA``/``_S3`` point there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from ca.hierarchy import CertifiedKey, create_root
from ca.pca import PcaSigner, load_pca_signer
from issuer.aws.pca import PcaClients
from issuer.errors import UpstreamUnavailable
from issuer.service.ca.pca import PcaCA, init_pca_ca, prepare_pca_issuer
from issuer.service.ca.rotation import activate
from issuer.service.ca.signers import KeySigners
from issuer.service.revocation.pca_crl import PcaCrlCache, pca_crl
from issuer.service.revocation.revoke import RevocationTarget, revoke
from issuer.service.revocation.upstream import UpstreamRevocations
from issuer.store.engine import make_engine, make_session_factory
from issuer.store.models import CaIssuer, CaRoot
from tests.support.harness import Harness, check_issued, check_leaf_against_truststore, new_csr, running_issuer
from tests.support.moto_pca import MotoPca, PcaCa, moto_pca
from tests.support.x509_check import openssl_verify_crl

MAX_TTL = timedelta(hours=72)  # the harness roles' longest max_ttl
NO_PASSPHRASE = {"ISSUER_CA_PASSPHRASE": ""}  # a Private CA issuer needs no CA passphrase at all


@pytest.fixture
def moto() -> Iterator[MotoPca]:
    with moto_pca() as m:
        yield m


@pytest.fixture
def root() -> CertifiedKey:
    return create_root(now=datetime.now(UTC), organization="Example Corp")


@pytest.fixture
def private_ca(moto: MotoPca, root: CertifiedKey) -> PcaCa:
    return moto.create_ca(root)


@asynccontextmanager
async def sessions_of(db_url: str) -> AsyncIterator[Any]:
    engine = make_engine(db_url, pool_size=2)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def init_pca(tmp_path: Path, db_url: str, private_ca: PcaCa) -> PcaCA:
    """``issuer ca init --aws-pca-arn`` as a use case, into ``tmp_path/state``."""
    async with sessions_of(db_url) as sessions:
        return await init_pca_ca(
            sessions,
            arn=private_ca.arn,
            clients=PcaClients(),
            ca_dir=tmp_path / "state" / "ca",
            now=datetime.now(UTC),
            min_validity=MAX_TTL,
        )


async def token_issue(h: Harness, name: str, *, token: str | None = None) -> tuple[int, dict[str, Any], Any]:
    key, csr = new_csr()
    status, body = await h.post("/v1/issue/token", {"csr": csr, "token": token or await h.token(name=name)})
    return status, body, key


def upstream(h: Harness) -> UpstreamRevocations:
    signers = KeySigners(ca_dir=h.settings.ca_dir, passphrase=lambda: b"")
    return UpstreamRevocations(h.service.sessions, load_signer=signers, clock=lambda: datetime.now(UTC))


# -- set-up ----------------------------------------------------------------------------------------


async def test_init_registers_the_private_ca_with_its_root_and_no_key(
    tmp_path: Path, pg_url: str, private_ca: PcaCa
) -> None:
    done = await init_pca(tmp_path, pg_url, private_ca)
    assert done.issuer.certificate == private_ca.certificate
    assert (done.issuer.intermediates, done.issuer.root) == ((), private_ca.root.certificate)
    assert done.issuer.crl_bucket == private_ca.bucket
    async with sessions_of(pg_url) as sessions, sessions() as session:
        (issuer,) = (await session.scalars(select(CaIssuer))).all()
        (root,) = (await session.scalars(select(CaRoot))).all()
    assert (issuer.key_ref, issuer.state, issuer.chain_pem) == (f"pca:{private_ca.arn}", "active", "")
    assert issuer.fingerprint_sha256 == private_ca.certificate.fingerprint(hashes.SHA256()).hex()
    assert (root.key_ref, root.fingerprint_sha256) == (
        None,
        private_ca.root.certificate.fingerprint(hashes.SHA256()).hex(),
    )
    ca_dir = tmp_path / "state" / "ca"
    assert sorted(p.name for p in ca_dir.iterdir()) == ["issuing.pem", "root.pem"]  # certificates only, no key


def intermediate_under(root: CertifiedKey) -> CertifiedKey:
    """An intermediate CA (path length 1) between the root and the Private CA."""
    from cryptography.x509.oid import NameOID

    from ca.keys import generate_private_key
    from ca.profile import authority_key_id

    key = generate_private_key("ec-p384")
    now = datetime.now(UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Example Intermediate"),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=700))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(authority_key_id(root.certificate), critical=False)
        .sign(root.key, hashes.SHA384())
    )
    return CertifiedKey(certificate, key)


async def test_a_private_ca_below_an_intermediate_brings_its_chain_into_the_truststore(
    tmp_path: Path, pg_url: str, moto: MotoPca, root: CertifiedKey
) -> None:
    moto.honour_passthrough()
    intermediate = intermediate_under(root)
    private_ca = moto.create_ca(root, intermediate=intermediate)
    done = await init_pca(tmp_path, pg_url, private_ca)
    assert (done.issuer.intermediates, done.issuer.root) == ((intermediate.certificate,), root.certificate)
    async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE) as h:  # starts with issuing.pem a chain
        truststore = x509.load_pem_x509_certificates(await (await h.client.get("/v1/truststore")).read())
        assert truststore == [private_ca.certificate, intermediate.certificate, root.certificate]
        status, body, key = await token_issue(h, "deep-1")
        assert status == 201, body
        assert x509.load_pem_x509_certificates(body["chain"].encode()) == [
            private_ca.certificate,
            intermediate.certificate,
        ]
        check_issued(body, key=key)
        await check_leaf_against_truststore(h, body)


async def test_a_ca_that_is_not_active_or_in_short_lived_mode_for_long_roles_is_refused(
    tmp_path: Path, pg_url: str, moto: MotoPca, private_ca: PcaCa
) -> None:
    async with sessions_of(pg_url) as sessions:
        # moto creates every CA in short-lived certificate mode: leaves of at most 7 days.
        with pytest.raises(Exception) as excinfo:
            await init_pca_ca(
                sessions,
                arn=private_ca.arn,
                clients=PcaClients(),
                ca_dir=tmp_path / "ca",
                now=datetime.now(UTC),
                min_validity=timedelta(days=30),
            )
        assert getattr(excinfo.value, "code", None) == "pca_short_lived_mode"
        moto.client("acm-pca").update_certificate_authority(CertificateAuthorityArn=private_ca.arn, Status="DISABLED")
        with pytest.raises(Exception) as excinfo:
            await init_pca_ca(
                sessions,
                arn=private_ca.arn,
                clients=PcaClients(),
                ca_dir=tmp_path / "ca",
                now=datetime.now(UTC),
                min_validity=MAX_TTL,
            )
        assert getattr(excinfo.value, "code", None) == "pca_not_active"
        async with sessions() as session:
            assert not (await session.scalars(select(CaIssuer))).all()


# -- issuing ---------------------------------------------------------------------------------------


async def test_what_plain_moto_returns_is_refused_and_nothing_is_recorded(
    tmp_path: Path, pg_url: str, moto: MotoPca, private_ca: PcaCa
) -> None:
    await init_pca(tmp_path, pg_url, private_ca)
    async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE) as h:
        assert isinstance(h.service.registry.snapshot.active.signer, PcaSigner)
        token = await h.token(name="plain-1")
        status, body, _ = await token_issue(h, "plain-1", token=token)
        assert (status, body["code"]) == (502, "ca_signer_result_rejected"), body
        assert "certificate" not in body and private_ca.arn not in body["detail"]
        assert await h.certificates() == []
        (audit,) = await h.attestations()
        assert (audit.outcome, audit.code, audit.principal, audit.certificate_serial) == (
            "failure",
            "ca_signer_result_rejected",
            "plain-1",
            None,
        )
        assert "subject" in audit.reason  # moto copied the CSR's subject: what differed is in the trail

        # The refused request consumed nothing: with Private CA's behaviour the same token works.
        moto.honour_passthrough()
        status, body, key = await token_issue(h, "plain-1", token=token)
        assert status == 201, body
        check_issued(body, key=key)


async def test_a_leaf_from_private_ca_verifies_alone_renews_and_its_revocation_reaches_the_ca_and_its_crl(
    tmp_path: Path, pg_url: str, moto: MotoPca, private_ca: PcaCa
) -> None:
    moto.honour_passthrough()
    await init_pca(tmp_path, pg_url, private_ca)
    async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE) as h:
        status, body, key = await token_issue(h, "pca-1")
        assert status == 201, body
        leaf = check_issued(body, key=key)
        await check_leaf_against_truststore(h, body)  # openssl verify -CAfile truststore.pem leaf.pem
        leaf.verify_directly_issued_by(private_ca.certificate)
        assert leaf.subject.rfc4514_string() == "CN=pca-1,OU=onprem,O=Example Corp"
        assert leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints)  # Private CA's own addition
        (row,) = await h.certificates()
        assert (row.serial, row.not_after) == (format(leaf.serial_number, "x"), leaf.not_valid_after_utc)
        assert row.fingerprint_sha256 == leaf.fingerprint(hashes.SHA256()).hex()
        ready = await h.client.get("/readyz")
        assert ready.status == 200, await ready.text()

        # No CRL written yet: none to serve (nothing signed here for a CA that publishes its own).
        issuer = private_ca.certificate.fingerprint(hashes.SHA256()).hex()[:16]
        resp = await h.client.get(f"/v1/crl?issuer={issuer}")
        assert (resp.status, (await resp.json(content_type=None))["code"]) == (404, "crl_not_published")

        done = await revoke(
            h.service.sessions,
            RevocationTarget("serial", body["serial"]),
            reason="keyCompromise",
            now=datetime.now(UTC),
            upstream=upstream(h),
        )
        assert [(r.serial, r.ok) for r in done.upstream] == [(body["serial"], True)]
        colon = ":".join(f"{leaf.serial_number:040x}"[i : i + 2] for i in range(0, 40, 2)).lstrip("0:")
        assert {k.lstrip("0:") for k in moto.revoked_serials(private_ca.arn)} == {colon}
        assert moto.revoked_serials(private_ca.arn).popitem()[1] == "KEY_COMPROMISE"
        codes = [a.code for a in await h.attestations() if a.method == "revoke"]
        assert codes == ["certificate_revoked", "upstream_revoked"]

        moto.publish_crl(private_ca)  # what Private CA does about 30 minutes later
        resp = await h.client.get(f"/v1/crl?issuer={issuer}")
        assert resp.status == 200, await resp.text()
        crl = x509.load_der_x509_crl(await resp.read())
        assert [r.serial_number for r in crl] == [leaf.serial_number]
        assert crl.issuer == private_ca.certificate.subject
        openssl_verify_crl(crl, await (await h.client.get("/v1/truststore")).read())


async def test_renewal_goes_through_private_ca_too(
    tmp_path: Path, pg_url: str, moto: MotoPca, private_ca: PcaCa
) -> None:
    from tests.integration.test_renew import Machine, renew

    moto.honour_passthrough()
    await init_pca(tmp_path, pg_url, private_ca)
    async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE) as h:
        status, body, key = await token_issue(h, "pca-renew")
        assert status == 201, body
        machine = Machine(key, x509.load_pem_x509_certificate(body["certificate"].encode()), body)
        status, renewed, new_key = await renew(h, machine)
        assert status == 201, renewed
        check_issued(renewed, key=new_key)
        assert renewed["renewed_from"] == body["serial"]
        rows = {r.serial: r.status for r in await h.certificates()}
        assert rows == {body["serial"]: "superseded", renewed["serial"]: "active"}


async def test_throttling_is_a_503_with_retry_after_and_a_disabled_ca_fails_readiness(
    tmp_path: Path, pg_url: str, moto: MotoPca, private_ca: PcaCa
) -> None:
    moto.honour_passthrough()
    await init_pca(tmp_path, pg_url, private_ca)

    async def load(issuer: Any, *, certificate: Any, chain: Any, roots: Any) -> PcaSigner:
        # The default loader, but readiness asks Private CA on every check (no 30 s health cache).
        return await load_pca_signer(
            PcaClients().for_ca(private_ca.arn),
            private_ca.arn,
            issuer_certificate=certificate,
            roots=roots,
            chain=chain,
            health_ttl=0.0,
        )

    async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE, signer_loader=load) as h:
        moto.throttle(50)  # more than botocore's three attempts
        resp = await h.client.post("/v1/issue/token", json={"csr": new_csr()[1], "token": await h.token(name="t-1")})
        body = await resp.json(content_type=None)
        assert (resp.status, body["code"], resp.headers.get("Retry-After")) == (503, "ca_signer_unavailable", "2")
        assert await h.certificates() == []
        moto.throttle(0)

        assert (await h.client.get("/readyz")).status == 200
        moto.client("acm-pca").update_certificate_authority(CertificateAuthorityArn=private_ca.arn, Status="DISABLED")
        ready = await h.client.get("/readyz")
        assert ready.status == 503
        assert "signer: unavailable" in (await ready.json(content_type=None))["detail"]
        resp = await h.client.post("/v1/issue/token", json={"csr": new_csr()[1], "token": await h.token(name="t-2")})
        body = await resp.json(content_type=None)
        assert (resp.status, body["code"], resp.headers.get("Retry-After")) == (503, "ca_pca_not_active", "30")
        codes = [a.code for a in await h.attestations()]
        assert codes == ["ca_signer_unavailable", "ca_pca_not_active"]


async def test_an_unreachable_private_ca_is_unavailable_within_the_timeout(private_ca: PcaCa) -> None:
    import boto3

    from ca.pca_client import pca_botocore_config
    from tests.support.moto_server import free_port

    dead = boto3.client(
        "acm-pca",
        region_name="eu-west-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=pca_botocore_config(connect_timeout=0.5, max_attempts=1),
    )
    signer = PcaSigner(
        client=dead,
        ca_arn=private_ca.arn,
        issuer_certificate=private_ca.certificate,
        roots=[private_ca.root.certificate],
        call_timeout=3.0,
    )
    health = await signer.health()
    assert (health.ok, health.code) == (False, "ca_signer_unavailable")
    with pytest.raises(Exception) as excinfo:
        await signer.revoke(0x1234, reason=None)
    assert getattr(excinfo.value, "code", None) == "ca_signer_unavailable"


# -- rotation --------------------------------------------------------------------------------------


async def test_rotating_from_a_file_ca_to_private_ca(
    tmp_path: Path, pg_url: str, moto: MotoPca, private_ca: PcaCa
) -> None:
    moto.honour_passthrough()
    async with running_issuer(tmp_path, pg_url) as h:  # a file-key CA, as `issuer ca init` makes it
        status, before, _ = await token_issue(h, "file-1")
        assert status == 201, before
        rotation, root_added = await prepare_pca_issuer(
            h.service.sessions,
            arn=private_ca.arn,
            clients=PcaClients(),
            ca_dir=h.settings.ca_dir,
            now=datetime.now(UTC),
            min_validity=MAX_TTL,
        )
        assert root_added and rotation.issuer.state == "prepared" and rotation.key_path is None
        assert rotation.issuer.key_ref == f"pca:{private_ca.arn}"
        await h.service.registry.refresh()
        truststore = x509.load_pem_x509_certificates(await (await h.client.get("/v1/truststore")).read())
        assert private_ca.certificate in truststore and private_ca.root.certificate in truststore
        bundle = x509.load_pem_x509_certificates(await (await h.client.get("/v1/bundle")).read())
        assert private_ca.root.certificate in bundle  # a second trust anchor, side by side

        with pytest.raises(Exception) as excinfo:  # the same Private CA twice
            await prepare_pca_issuer(
                h.service.sessions,
                arn=private_ca.arn,
                clients=PcaClients(),
                ca_dir=h.settings.ca_dir,
                now=datetime.now(UTC),
                min_validity=MAX_TTL,
                force=True,
            )
        assert getattr(excinfo.value, "code", None) == "issuer_exists"

        signers = KeySigners(ca_dir=h.settings.ca_dir, passphrase=lambda: b"")
        await activate(
            h.service.sessions,
            fingerprint=rotation.issuer.fingerprint_sha256[:16],
            now=datetime.now(UTC),
            min_validity=MAX_TTL,
            load_signer=signers,
        )
        await h.service.registry.refresh()
        status, after, key = await token_issue(h, "pca-after")
        assert status == 201, after
        leaf = check_issued(after, key=key)
        leaf.verify_directly_issued_by(private_ca.certificate)
        await check_leaf_against_truststore(h, after)  # the PCA leaf alone
        await check_leaf_against_truststore(h, before)  # and the file CA's, still trusted


# -- the CRL Private CA publishes ------------------------------------------------------------------


async def test_pca_crl_is_verified_cached_and_a_forged_one_is_never_served(moto: MotoPca, private_ca: PcaCa) -> None:
    clients, cache = PcaClients(), PcaCrlCache()
    now = datetime.now(UTC)

    async def read(at: datetime) -> x509.CertificateRevocationList | None:
        return await pca_crl(
            private_ca.arn, issuer_certificate=private_ca.certificate, clients=clients, cache=cache, now=at
        )

    assert await read(now) is None  # enabled, nothing written yet
    published = moto.publish_crl(private_ca)
    crl = await read(now)
    assert crl is not None and crl.public_bytes(serialization.Encoding.DER) == published.public_bytes(
        serialization.Encoding.DER
    )

    # Someone with write access to the bucket puts a CRL of their own there.
    forger = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(private_ca.certificate.subject)
        .last_update(now)
        .next_update(now + timedelta(days=1))
        .sign(forger, hashes.SHA256())
    )
    moto.client("s3").put_object(
        Bucket=private_ca.bucket,
        Key=f"crl/{private_ca.ca_id}.crl",
        Body=forged.public_bytes(serialization.Encoding.DER),
    )
    assert await read(now + timedelta(minutes=1)) is crl  # cached: S3 is not asked again within the TTL
    # Past the TTL the forged one is read, refused, and the last good CRL is served until its nextUpdate.
    assert await read(now + timedelta(minutes=10)) is crl
    with pytest.raises(UpstreamUnavailable) as excinfo:
        await read(now + timedelta(days=8))  # past the good CRL's nextUpdate: nothing left to serve
    assert excinfo.value.code == "crl_unavailable" and "signature" in excinfo.value.reason


async def test_a_ca_with_crls_disabled_publishes_none(moto: MotoPca, root: CertifiedKey) -> None:
    quiet = moto.create_ca(root, common_name="Quiet PCA", crl=False)
    got = await pca_crl(
        quiet.arn,
        issuer_certificate=quiet.certificate,
        clients=PcaClients(),
        cache=PcaCrlCache(),
        now=datetime.now(UTC),
    )
    assert got is None
