"""The AWS Private CA issuer as the integration tests set it up: registered in a migrated database, the app
around it, moto's ACM PCA as the peer (tests/support/moto_pca.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from ca.hierarchy import CertifiedKey
from ca.keys import generate_private_key
from ca.profile import authority_key_id
from issuer.aws.pca import PcaClients
from issuer.service.ca.pca import PcaCA, init_pca_ca
from issuer.service.ca.signers import KeySigners
from issuer.service.revocation.upstream import UpstreamRevocations
from issuer.store.engine import make_engine, make_session_factory
from tests.support.harness import Harness, new_csr
from tests.support.moto_pca import PcaCa

MAX_TTL = timedelta(hours=72)  # the harness roles' longest max_ttl
NO_PASSPHRASE = {"ISSUER_CA_PASSPHRASE": ""}  # a Private CA issuer needs no CA passphrase at all


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


def intermediate_under(root: CertifiedKey) -> CertifiedKey:
    """An intermediate CA (path length 1) between the root and the Private CA."""
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
