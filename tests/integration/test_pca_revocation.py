"""Revocation, CRLs and rotation with an AWS Private CA issuer: moto's ACM PCA and S3 server (in this process,
signatures checked, its backend extended to honour ApiPassthrough and Validity and to publish CRLs as Private
CA does), a migrated Postgres, openssl checking leaves and CRLs against GET /v1/truststore.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.hierarchy import CertifiedKey, create_root
from ca.pca import PcaSigner
from issuer.aws.pca import PcaClients
from issuer.errors import UpstreamUnavailable
from issuer.service.ca.pca import prepare_pca_issuer
from issuer.service.ca.rotation import activate
from issuer.service.ca.signers import KeySigners
from issuer.service.revocation.pca_crl import PcaCrlCache, pca_crl
from issuer.service.revocation.revoke import RevocationTarget, revoke
from tests.support.harness import check_issued, check_leaf_against_truststore, running_issuer
from tests.support.moto_pca import MotoPca, PcaCa, moto_pca
from tests.support.pca_issuer import (
    MAX_TTL,
    NO_PASSPHRASE,
    init_pca,
    token_issue,
    upstream,
)
from tests.support.x509_check import openssl_verify_crl


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


async def test_a_leaf_from_private_ca_verifies_alone_and_its_revocation_reaches_the_ca_and_its_crl(
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
