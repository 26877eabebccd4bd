"""Operator use cases on the CA issuer registry: registering a CA made on disk, listing issuers.

Rotation (prepare, activate, retire) builds on these in the lifecycle work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.files import CAFiles, load_ca_certificates
from issuer.service.signers import file_key_ref
from issuer.store import issuers as store

__all__ = ["RegisteredCA", "register_file_ca"]


@dataclass(frozen=True, slots=True)
class RegisteredCA:
    issuer_id: int
    subject: str
    fingerprint_sha256: str


def _pem(certificates: tuple[x509.Certificate, ...]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


async def register_file_ca(
    sessions: async_sessionmaker[AsyncSession], *, ca_dir: Path, now: datetime
) -> RegisteredCA | None:
    """Register the CA in ``ca_dir`` as the active issuer when the registry is still empty.

    The path from a CA made on disk (``issuer ca init``, the embedded default, a
    deployment from before the registry) into the registry. Returns what was
    registered, or None when the registry already had issuers (it is then the source
    of truth and the files are only a key store). Raises ``CAStateError`` when the
    files are missing or damaged.
    """
    roots, issuing = load_ca_certificates(ca_dir)
    files = CAFiles.at(ca_dir)
    certificate, chain = issuing[0], issuing[1:]
    async with sessions() as session, session.begin():
        registered = bool(await store.list_issuers(session))
        if registered and await store.list_roots(session):
            return None
        # A registry from before roots were kept in the database gets its roots from the files.
        for index, root in enumerate(roots):
            await store.add_root(
                session,
                fingerprint_sha256=root.fingerprint(hashes.SHA256()).hex(),
                subject=root.subject.rfc4514_string(),
                certificate_pem=root.public_bytes(serialization.Encoding.PEM).decode(),
                # Only the first (current) root's key is in root.key.pem.
                key_ref=file_key_ref(files.root_key_path, ca_dir=ca_dir) if index == 0 else None,
                not_before=root.not_valid_before_utc,
                not_after=root.not_valid_after_utc,
                now=now,
            )
        if registered:
            return None
        fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
        issuer_id = await store.add_issuer(
            session,
            fingerprint_sha256=fingerprint,
            subject=certificate.subject.rfc4514_string(),
            serial=format(certificate.serial_number, "x"),
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            chain_pem=_pem(chain),
            key_ref=file_key_ref(files.issuing_key_path, ca_dir=ca_dir),
            state="active",
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            now=now,
        )
    return RegisteredCA(
        issuer_id=issuer_id, subject=certificate.subject.rfc4514_string(), fingerprint_sha256=fingerprint
    )
