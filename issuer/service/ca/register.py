"""Operator use cases on the CA issuer registry: register a CA made on disk, prepare and activate issuers.

The building blocks of CA rotation (load a root, write an issuing key, register a prepared
issuer, switch the active one) live here; the rotation commands with their checks are in
:mod:`issuer.service.ca.rotation`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.files import CAFiles, load_ca_certificates, load_key_file, write_key_file
from ca.hierarchy import CertifiedKey
from ca.kms_client import kms_public_key, same_public_key
from ca.kms_setup import KmsCertifiedKey
from issuer.errors import ClientError, ConfigError
from issuer.service.ca.lifecycle import match_fingerprint
from issuer.service.ca.marker import Marker, database_of, read_marker, write_marker
from issuer.service.ca.signers import KMS_PREFIX, KmsClientSource, file_key_ref, kms_key_arn, resolve_file_ref
from issuer.store import issuers as store
from issuer.store.records import IssuerRecord, RootRecord

__all__ = [
    "Adoption",
    "RegisteredCA",
    "activate_issuer",
    "add_issuer_certificate",
    "add_root_certificate",
    "adopt_file_ca",
    "change_stamp",
    "insert_prepared",
    "load_kms_root",
    "load_root",
    "load_root_key",
    "organization_of",
    "register_file_ca",
    "registered_ca",
    "write_issuer_key",
]


@dataclass(frozen=True, slots=True)
class RegisteredCA:
    issuer_id: int
    subject: str
    fingerprint_sha256: str


async def register_file_ca(
    sessions: async_sessionmaker[AsyncSession], *, ca_dir: Path, now: datetime
) -> RegisteredCA | None:
    """Register the CA in ``ca_dir`` as the active issuer when the registry is still empty.

    The path from a CA made on disk (``issuer ca init``, the embedded default, a
    deployment from before the registry) into the registry. Returns what was
    registered, or None when the registry already had issuers (it is then the source
    of truth and the files are only a key store). Either way the directory is marked
    as registered (:mod:`issuer.service.ca.marker`).

    Raises ConfigError ``ca_registered_before`` when the registry is empty but the directory's CA
    was registered before — a lost database or the wrong one: restore it, or adopt the files on
    purpose (:func:`adopt_file_ca`). Raises ``CAStateError`` when the files are missing or damaged.
    """
    try:
        return (await _register_file_ca(sessions, ca_dir=ca_dir, now=now, adopt=False)).issuer
    except IntegrityError:
        # Another process (a worker, a replica) registered it at the same moment: the registry
        # is filled, which is all this wanted.
        return None


@dataclass(frozen=True, slots=True)
class Adoption:
    """What :func:`adopt_file_ca` registered."""

    roots: int
    issuer: RegisteredCA | None
    retired_issuer: str | None  # the directory's issuer, not registered because it was retired


async def adopt_file_ca(sessions: async_sessionmaker[AsyncSession], *, ca_dir: Path, now: datetime) -> Adoption:
    """Register the CA files of ``ca_dir`` in an empty registry even though they were registered elsewhere before.

    The explicit way past ``ca_registered_before`` (``issuer ca adopt``): for a database that is
    really lost. An issuer the directory's marker records as retired is never made active again —
    only the roots are registered then, and the operator rotates. Raises ClientError
    ``registry_not_empty`` when the registry already holds an issuer.
    """
    return await _register_file_ca(sessions, ca_dir=ca_dir, now=now, adopt=True)


async def _register_file_ca(
    sessions: async_sessionmaker[AsyncSession], *, ca_dir: Path, now: datetime, adopt: bool
) -> Adoption:
    roots, issuing = load_ca_certificates(ca_dir)
    files = CAFiles.at(ca_dir)
    certificate, chain = issuing[0], issuing[1:]
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    marker = read_marker(ca_dir)
    if marker is not None and marker.issuer and marker.issuer != fingerprint:
        marker = None  # the files were made anew (`ca init --force`): that marker was about another CA
    retired = marker is not None and fingerprint in marker.retired
    result = Adoption(roots=0, issuer=None, retired_issuer=None)
    async with sessions() as session, session.begin():
        issuers = await store.list_issuers(session)
        if issuers and adopt:
            raise ClientError(
                "the CA registry of this database already has issuers: there is nothing to adopt "
                "(see `issuer ca status`)",
                code="registry_not_empty",
            )
        if not issuers and marker is not None and not adopt:
            raise ConfigError(
                f"the CA in {ca_dir} was registered in a database before ({marker.database}, "
                f"{marker.registered_at}) but this database has no CA registry: restoring the CA files "
                "without the database would lose every revocation and could re-activate a retired issuer. "
                "Restore the database backup (README: Backup and restore), or if that database is gone "
                "for good adopt the files on purpose with `issuer ca adopt`",
                code="ca_registered_before",
            )
        if not issuers or not await store.list_roots(session):
            # A registry from before roots were kept in the database gets its roots from the files.
            for index, root in enumerate(roots):
                await add_root_certificate(
                    session,
                    root,
                    # Only the first (current) root's key is in root.key.pem.
                    key_ref=file_key_ref(files.root_key_path, ca_dir=ca_dir) if index == 0 else None,
                    now=now,
                )
            result = Adoption(roots=len(roots), issuer=None, retired_issuer=None)
        if not issuers and not retired:
            issuer_id = await add_issuer_certificate(
                session,
                certificate,
                chain=chain,
                key_ref=file_key_ref(files.issuing_key_path, ca_dir=ca_dir),
                state="active",
                now=now,
            )
            result = Adoption(roots=result.roots, issuer=registered_ca(issuer_id, certificate), retired_issuer=None)
        elif not issuers:
            result = Adoption(roots=result.roots, issuer=None, retired_issuer=fingerprint)
        known = not issuers or any(r.fingerprint_sha256 == fingerprint for r in issuers)
    if known and (marker is None or adopt):
        write_marker(
            ca_dir,
            Marker(
                issuer=fingerprint,
                registered_at=now.isoformat(),
                database=database_of(sessions),
                retired=marker.retired if marker is not None else {},
            ),
        )
    return result


def load_root_key(
    record: RootRecord, *, ca_dir: Path, passphrase: Callable[[], bytes], kms: KmsClientSource | None
) -> CertifiedKey | KmsCertifiedKey:
    """The root of ``record`` with its key — a file key (:func:`load_root`) or a KMS key (:func:`load_kms_root`).

    ``passphrase`` is called only for a file key, once its file has been found. Blocking (file or
    KMS I/O). Raises as those two do; ConfigError ``root_key_unavailable`` for a KMS root without ``kms``.
    """
    if record.key_ref and record.key_ref.startswith(KMS_PREFIX):
        if kms is None:
            raise ConfigError(
                f"the root {record.subject} key is in AWS KMS: no KMS client", code="root_key_unavailable"
            )
        return load_kms_root(record, kms=kms)
    return load_root(record, ca_dir=ca_dir, passphrase=passphrase)


def load_kms_root(record: RootRecord, *, kms: KmsClientSource) -> KmsCertifiedKey:
    """The root of ``record`` signing through its KMS key (``key_ref`` ``kms:<key ARN>``), checked with one
    ``GetPublicKey``.

    Raises ConfigError ``kms_key_ref_invalid`` and ``root_key_mismatch`` (the KMS key is not the root
    certificate's), and the ``ca.kms_client`` errors (SignerUnavailable, SignerDenied, KMSKeyError)
    naming the key.
    """
    arn = kms_key_arn(record.key_ref or "", owner=f"the root {record.subject}")
    client = kms.for_key(arn)
    key = kms_public_key(client, arn)
    certificate = x509.load_pem_x509_certificate(record.certificate_pem.encode())
    if not same_public_key(key, certificate):
        raise ConfigError(
            f"KMS key {arn} is not the key of the root {record.subject}: their public keys differ",
            code="root_key_mismatch",
        )
    return KmsCertifiedKey(certificate=certificate, client=client, key_id=key.key_id)


def load_root(record: RootRecord, *, ca_dir: Path, passphrase: bytes | Callable[[], bytes]) -> CertifiedKey:
    """The root of ``record`` with its file key, to certify a new issuing CA.

    ``passphrase`` may be a callable, called only once the key file has been found.
    Raises :class:`ConfigError` ``root_key_unavailable`` (no key registered, not a file key, or the
    file is not where the registry says: the root key is kept offline) and the ``ca.files`` errors
    for a key that does not decrypt or does not belong to the root.
    """
    if not record.key_ref:
        raise ConfigError(
            f"the root {record.subject} has no key registered; only a root with a key can certify an issuing CA",
            code="root_key_unavailable",
        )
    if not record.key_ref.startswith("file:"):
        raise ConfigError(
            f"the root {record.subject} key {record.key_ref!r} is neither a file key nor a KMS key",
            code="root_key_unavailable",
        )
    path = resolve_file_ref(record.key_ref, ca_dir=ca_dir)
    if not path.exists():
        raise ConfigError(
            f"the root key is needed to prepare a new issuing CA and is not at {path} (kept offline?); "
            "bring it back for this command only",
            code="root_key_unavailable",
        )
    certificate = x509.load_pem_x509_certificate(record.certificate_pem.encode())
    key = load_key_file(path, passphrase=passphrase() if callable(passphrase) else passphrase)
    if key.public_key() != certificate.public_key():
        raise ConfigError(f"{path} is not the key of the root {record.subject}", code="root_key_mismatch")
    return CertifiedKey(certificate, key)


def write_issuer_key(issuing: CertifiedKey, *, ca_dir: Path, passphrase: bytes) -> Path:
    """Write a new issuing key (encrypted) and its certificate as ``issuing-<fingerprint16>.key.pem``/``.pem``."""
    fingerprint = issuing.certificate.fingerprint(hashes.SHA256()).hex()
    key_path = ca_dir / f"issuing-{fingerprint[:16]}.key.pem"
    write_key_file(key_path, issuing.key, passphrase=passphrase, certificate=issuing.certificate)
    return key_path


async def insert_prepared(
    session: AsyncSession,
    certificate: x509.Certificate,
    *,
    key_path: Path | None = None,
    ca_dir: Path,
    now: datetime,
    key_ref: str | None = None,
) -> int:
    """Register ``certificate`` (signed by a registered root) as a ``prepared`` issuer; its id.

    Its key is the file ``key_path``, or ``key_ref`` (``kms:<key ARN>``) when given.
    """
    if key_ref is None:
        if key_path is None:
            raise ValueError("an issuer needs a key_path or a key_ref")
        key_ref = file_key_ref(key_path, ca_dir=ca_dir)
    return await add_issuer_certificate(session, certificate, key_ref=key_ref, state="prepared", now=now)


async def add_issuer_certificate(
    session: AsyncSession,
    certificate: x509.Certificate,
    *,
    chain: Sequence[x509.Certificate] = (),
    key_ref: str,
    state: str,
    now: datetime,
) -> int:
    """Register the issuing CA ``certificate`` (with its intermediates ``chain``) in ``state``; its id.

    Raises ``IntegrityError`` for a second active issuer.
    """
    return await store.add_issuer(
        session,
        fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        subject=certificate.subject.rfc4514_string(),
        serial=format(certificate.serial_number, "x"),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        chain_pem="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain),
        key_ref=key_ref,
        state=state,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        now=now,
    )


async def add_root_certificate(
    session: AsyncSession, certificate: x509.Certificate, *, key_ref: str | None, now: datetime
) -> None:
    """Register ``certificate`` as an active root (a no-op when it is registered already)."""
    await store.add_root(
        session,
        fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        subject=certificate.subject.rfc4514_string(),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        key_ref=key_ref,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        now=now,
    )


async def change_stamp(session: AsyncSession, now: datetime) -> datetime:
    """The ``updated_at`` for a registry change: ``now``, or just after the newest change if that is later.

    Replicas notice a change by the newest ``updated_at``; an operator's clock behind the one that
    made the last change (or a test's injected past) must still move it forward.
    """
    latest = await store.latest_change(session)
    return now if latest is None or now > latest else latest + timedelta(milliseconds=1)


async def activate_issuer(
    sessions: async_sessionmaker[AsyncSession], *, fingerprint_prefix: str, now: datetime
) -> IssuerRecord:
    """Switch signing to the prepared issuer named by ``fingerprint_prefix`` (every replica within a refresh).

    The issuer active before goes back to ``prepared``: still in the truststore, its leaves still valid.
    The state is re-checked under the registry lock, so an issuer retired or activated meanwhile is
    never switched to. Returns the issuer as it was before the switch.
    Raises NotFound ``issuer_not_found``, ClientError ``fingerprint_invalid`` / ``issuer_ambiguous`` /
    ``issuer_not_prepared`` / ``issuer_expired``.
    """
    async with sessions() as session, session.begin():
        await store.lock_registry(session)
        record = match_fingerprint(await store.list_issuers(session), fingerprint_prefix, kind="issuer")
        if record.state != "prepared":
            raise ClientError(f"issuer {record.subject} is {record.state}, not prepared", code="issuer_not_prepared")
        if record.not_after <= now:
            raise ClientError(f"issuer {record.subject} has expired", code="issuer_expired")
        if not await store.activate_prepared_issuer(session, issuer_id=record.id, now=await change_stamp(session, now)):
            raise ClientError(f"issuer {record.subject} changed meanwhile; look again", code="issuer_not_prepared")
    return record


def registered_ca(issuer_id: int, certificate: x509.Certificate) -> RegisteredCA:
    """What was registered as issuer ``issuer_id``, for the operator."""
    return RegisteredCA(
        issuer_id=issuer_id,
        subject=certificate.subject.rfc4514_string(),
        fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
    )


def organization_of(root: CertifiedKey | KmsCertifiedKey) -> str | None:
    """The O= of ``root``'s subject, which its issuing CAs carry too."""
    values = root.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = values[0].value if values else None
    return value if isinstance(value, str) else None
