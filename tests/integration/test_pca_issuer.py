"""The service issuing through AWS Private CA: moto's ACM PCA and S3 server (in this process, signatures
checked) as the peer, a migrated Postgres, openssl checking every leaf alone against GET /v1/truststore.

moto's IssueCertificate ignores ApiPassthrough and Validity: what plain moto returns is refused
(and nothing is recorded); the accepting paths run after ``honour_passthrough()`` extends moto's
backend in this process to apply them as Private CA documents (tests/support/moto_pca.py).
The app loads the signer through its default loader (``KeySigners`` → ``issuer.aws.pca.PcaClients``),
which reaches moto because ``AWS_ENDPOINT_URL_ACM_PCA``/``_S3`` point there.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select

from ca.hierarchy import CertifiedKey, create_root
from ca.pca import PcaSigner, load_pca_signer
from issuer.aws.pca import PcaClients
from issuer.service.ca.pca import init_pca_ca
from issuer.store.models import CaIssuer, CaRoot
from tests.support.harness import check_issued, check_leaf_against_truststore, new_csr, running_issuer
from tests.support.moto_pca import MotoPca, PcaCa, moto_pca
from tests.support.pca_issuer import (
    MAX_TTL,
    NO_PASSPHRASE,
    init_pca,
    intermediate_under,
    sessions_of,
    token_issue,
)


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
    assert sorted(p.name for p in ca_dir.iterdir()) == ["issuing.pem", "registered.json", "root.pem"]  # no key


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
        assert isinstance(h.service.registry.snapshot.active.signer.inner, PcaSigner)  # type: ignore[attr-defined]
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
