"""``issuer ca root-crl``: sign a root's CRL where its key is, or import one made elsewhere.

A root whose key is online (a file in the CA directory, or KMS) gets its CRL from the service
(:class:`~issuer.service.revocation.root_crls.RootCrls`). For a root kept offline the operator
brings the key for this command only — as for ``issuer ca rotate`` — and signs a CRL with a long
``nextUpdate`` (180 days by default), or imports one an HSM ceremony or ``openssl ca -gencrl``
made. Either way it is stored, and every replica serves it in ``GET /v1/crls``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.errors import CAError
from ca.files import load_key_file
from ca.signer import LocalFileSigner, Signer
from issuer.errors import ClientError, ConfigError
from issuer.service.ca.lifecycle import match_fingerprint
from issuer.service.ca.signers import KeySigners, KmsClientSource
from issuer.service.issuance.model import Clock
from issuer.service.revocation.root_crls import RootCrl, RootCrls
from issuer.store import issuers as store
from issuer.store.records import RootRecord

__all__ = ["OFFLINE_ROOT_CRL_VALIDITY", "import_root_crl", "sign_root_crl"]

OFFLINE_ROOT_CRL_VALIDITY = timedelta(days=180)


async def sign_root_crl(
    sessions: async_sessionmaker[AsyncSession],
    *,
    root: str | None,
    key_file: Path | None,
    ca_dir: Path,
    passphrase: Callable[[], bytes],
    kms: KmsClientSource | None,
    next_update: timedelta,
    now: datetime,
    clock: Clock,
) -> RootCrl:
    """Sign and store the next CRL of the active root named by ``root`` (a fingerprint prefix; default:
    the only active root) with ``key_file`` (an encrypted PKCS#8 key under the CA passphrase) or the
    root's registered key when it is here.

    Raises ClientError ``root_ambiguous`` (several roots, none named), ``root_key_mismatch``,
    ``next_update_invalid``; ConfigError ``root_key_unavailable`` (no key given and none here);
    the ``ca.files`` errors for a key that does not decrypt.
    """
    if next_update <= timedelta(0):
        raise ClientError("--next-update must be a positive duration", code="next_update_invalid")
    async with sessions() as session:
        roots = [r for r in await store.list_roots(session) if r.state == "active"]
    record = _pick(roots, root)
    certificate = x509.load_pem_x509_certificate(record.certificate_pem.encode())
    signer: Signer | None
    if key_file is not None:
        key = load_key_file(key_file, passphrase=passphrase())
        if key.public_key() != certificate.public_key():
            raise ClientError(f"{key_file} is not the key of the root {record.subject}", code="root_key_mismatch")
        signer = LocalFileSigner(issuer_certificate=certificate, issuer_key=key, roots=[certificate])
    else:
        try:
            signer = await KeySigners(ca_dir=ca_dir, passphrase=passphrase, kms=kms).root(
                record, certificate=certificate
            )
        except CAError as exc:
            raise ConfigError(f"the root {record.subject}: {exc.detail}", code=exc.code) from None
        if signer is None:
            raise ConfigError(
                f"the key of the root {record.subject} is not here (kept offline): bring it for this command "
                "and pass --key-file PATH, or import a CRL made where it is with --import FILE",
                code="root_key_unavailable",
            )
    roots_crls = RootCrls(sessions, load_signer=None, clock=clock)
    return await roots_crls.sign(record, signer=signer, next_update=now + next_update, now=now)


async def import_root_crl(
    sessions: async_sessionmaker[AsyncSession], *, data: bytes, now: datetime, clock: Clock
) -> RootCrl:
    """Store a root CRL made elsewhere; raises as :meth:`RootCrls.import_crl` does."""
    return await RootCrls(sessions, load_signer=None, clock=clock).import_crl(data, now=now)


def _pick(roots: list[RootRecord], wanted: str | None) -> RootRecord:
    if wanted is not None:
        return match_fingerprint(roots, wanted, kind="root", among="active")
    if len(roots) != 1:
        raise ClientError(
            f"there are {len(roots)} active roots; name one with --root FINGERPRINT", code="root_ambiguous"
        )
    return roots[0]
