"""Root rotation, side by side: register a second root made elsewhere, and retire the old one at the end.

A root is a trust anchor in ``GET /v1/bundle`` and ``GET /v1/truststore``. To replace one, an
operator creates the new root (``openssl``, an HSM ceremony, another ``issuer ca init`` elsewhere),
registers it with :func:`add_root` — from then on both roots are trusted — prepares and activates
an issuing CA under it (``issuer ca rotate --root``), retires the issuers under the old root as
their leaves expire, and finally :func:`retire_root` removes the old root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ca.errors import CAError
from ca.files import load_key_file
from ca.keys import key_type_of
from issuer.errors import ClientError
from issuer.service.ca.lifecycle import issued_by, match_fingerprint, phase_of, short, when
from issuer.service.ca.register import add_root_certificate, change_stamp
from issuer.service.ca.registry import certificates_of
from issuer.service.ca.rotation import Sessions
from issuer.service.ca.signers import file_key_ref
from issuer.store import issuers as store
from issuer.store.records import RootRecord

__all__ = ["AddedRoot", "add_root", "check_root_certificate", "retire_root"]

_ROOT_KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")  # what API Gateway's truststore takes
_STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
# A root made on a machine whose clock runs a little ahead is still accepted.
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class AddedRoot:
    root: RootRecord
    key_ref: str | None


def check_root_certificate(pem: bytes, *, now: datetime) -> x509.Certificate:
    """The one self-signed CA certificate in ``pem``, fit to be a trust anchor at ``now``.

    Raises ClientError ``root_invalid`` naming what is wrong: not exactly one PEM certificate, not
    self-signed, no critical CA basic constraints, no keyCertSign, a key API Gateway does not take,
    SHA-1 or weaker, expired or not yet valid.
    """
    try:
        found = x509.load_pem_x509_certificates(pem)
    except ValueError:
        found = []
    if len(found) != 1:
        raise ClientError(f"expected exactly one PEM certificate, found {len(found)}", code="root_invalid")
    (certificate,) = found

    def refuse(reason: str) -> ClientError:
        return ClientError(f"{certificate.subject.rfc4514_string()} cannot be a root: {reason}", code="root_invalid")

    if not issued_by(certificate, certificate):
        raise refuse("it is not self-signed (cross-signed roots are not supported; register the self-signed one)")
    extensions = {type(e.value): e for e in certificate.extensions}
    constraints = extensions.get(x509.BasicConstraints)
    usage = extensions.get(x509.KeyUsage)
    if constraints is None or not constraints.critical or not getattr(constraints.value, "ca", False):
        raise refuse("it has no critical basic constraints saying CA:TRUE")
    if usage is None or not getattr(usage.value, "key_cert_sign", False):
        raise refuse("it has no key usage with keyCertSign")
    try:
        key_type = key_type_of(certificate.public_key())
    except CAError as exc:
        raise refuse(exc.detail) from None
    if key_type not in _ROOT_KEY_TYPES:
        raise refuse(f"a {key_type} key; use ECDSA P-256/P-384 or RSA 2048-4096")
    if not isinstance(certificate.signature_hash_algorithm, _STRONG_HASHES):
        raise refuse("it is not signed with SHA-256 or stronger")
    if certificate.not_valid_after_utc <= now:
        raise refuse(f"it expired {when(certificate.not_valid_after_utc)}")
    if certificate.not_valid_before_utc > now + _CLOCK_SKEW:
        raise refuse(f"it is not valid before {when(certificate.not_valid_before_utc)}")
    return certificate


async def add_root(
    sessions: Sessions,
    *,
    certificate_pem: bytes,
    now: datetime,
    ca_dir: Path,
    key_file: Path | None = None,
    passphrase: Callable[[], bytes] | None = None,
) -> AddedRoot:
    """Register a root created elsewhere as an ``active`` trust anchor (bundle and truststore, every replica).

    ``key_file`` (an encrypted PKCS#8 key, CA passphrase) lets ``issuer ca rotate --root`` certify
    issuing CAs under it; it is checked to be the root's key and may be moved offline afterwards.
    Raises ClientError ``root_invalid`` (see :func:`check_root_certificate`), ``root_exists``,
    ``root_key_mismatch``, and the ``ca.files`` key errors.
    """
    certificate = check_root_certificate(certificate_pem, now=now)
    key_ref = None
    if key_file is not None:
        if passphrase is None:
            raise ValueError("a key file needs the passphrase to check it")
        key = load_key_file(key_file, passphrase=passphrase())
        if key.public_key() != certificate.public_key():
            raise ClientError(f"{key_file} is not the key of this root", code="root_key_mismatch")
        key_ref = file_key_ref(key_file, ca_dir=ca_dir)
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    async with sessions() as session, session.begin():
        await store.lock_registry(session)
        if await store.get_root(session, fingerprint_prefix=fingerprint):
            raise ClientError(f"the root {short(fingerprint)} is registered already", code="root_exists")
        await add_root_certificate(session, certificate, key_ref=key_ref, now=await change_stamp(session, now))
        (record,) = await store.get_root(session, fingerprint_prefix=fingerprint)
    return AddedRoot(root=record, key_ref=key_ref)


async def retire_root(sessions: Sessions, *, fingerprint: str, now: datetime) -> RootRecord:
    """Remove a root from the bundle and the truststore (state ``retired``); the root as it was before.

    Refused while it is the only active root, or while any issuer under it is neither retired nor
    expired (retire those first: ``issuer ca retire`` checks their leaves).
    Raises NotFound ``root_not_found``; ClientError ``fingerprint_invalid``, ``root_ambiguous``,
    ``root_retired``, ``root_last``, ``root_in_use``.
    """
    async with sessions() as session, session.begin():
        await store.lock_registry(session)
        roots = await store.list_roots(session)
        record = match_fingerprint(roots, fingerprint, kind="root")
        name = f"{record.subject} ({short(record.fingerprint_sha256)})"
        if record.state != "active":
            raise ClientError(f"the root {name} was retired already", code="root_retired")
        if not [r for r in roots if r.state == "active" and r.id != record.id]:
            raise ClientError(f"the root {name} is the only active root", code="root_last")
        root_cert = x509.load_pem_x509_certificate(record.certificate_pem.encode())
        under = [
            issuer
            for issuer in await store.list_issuers(session)
            if phase_of(issuer, now=now) not in ("retired", "expired")
            and issued_by(certificates_of(issuer)[-1], root_cert)
        ]
        if under:
            listed = ", ".join(short(i.fingerprint_sha256) for i in under)
            raise ClientError(
                f"issuers under the root {name} are still in use ({listed}); retire them first",
                code="root_in_use",
            )
        await store.retire_root(session, root_id=record.id, now=await change_stamp(session, now))
    return record
