"""CA set-up around keys in AWS KMS: ``issuer ca init`` and ``issuer ca rotate`` with a KMS key.

The issuing CA's key is a KMS key, found by id/ARN/alias or created here; the root is a
local file key (written encrypted, kept offline afterwards) or a KMS key too. The registry
stores every KMS key as ``kms:<key ARN>`` — the ARN KMS itself reports, never an alias — and
no issuing key file is ever written: replicas sign through KMS with neither files nor a
passphrase. ``root.pem``/``issuing.pem`` (and ``issuing-<fingerprint16>.pem`` after a
rotation) are still written to the CA directory for operators; the registry is the truth.

KMS calls block (boto3); the async use cases run them in a worker thread. Errors from KMS are
the ``ca.kms_client`` ones (SignerUnavailable, SignerDenied, KMSKeyError) with a detail naming
the key; the rest are :class:`~issuer.errors.IssuerError` s with stable codes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as BotoClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.errors import CAStateError
from ca.files import CAFiles, write_key_file
from ca.hierarchy import CertifiedKey, create_root
from ca.kms_client import KmsKey, kms_failure, kms_public_key
from ca.kms_setup import KmsAdminClient, KmsCertifiedKey, create_issuing_for_kms_key, create_kms_key, create_kms_root
from ca.kms_x509 import KMS_KEY_SPECS, KmsKeySpec
from issuer.aws.kms import is_key_arn
from issuer.errors import ClientError
from issuer.service.ca.marker import Marker, database_of, write_marker
from issuer.service.ca.register import (
    RegisteredCA,
    add_issuer_certificate,
    add_root_certificate,
    change_stamp,
    organization_of,
    registered_ca,
)
from issuer.service.ca.signers import file_key_ref, kms_key_ref
from issuer.store import issuers as store

__all__ = [
    "KmsCA",
    "KmsIssuer",
    "KmsKeyChoice",
    "KmsKeyInUse",
    "KmsSetupClient",
    "KmsSetupSource",
    "certify_kms_issuer",
    "clear_ca_dir",
    "init_kms_ca",
    "new_kms_issuer",
    "obtain_kms_key",
    "write_certificates",
]

_CERT_MODE: Final = 0o600  # as the other CA files; nothing secret, but the directory is the CA's


class KmsSetupClient(KmsAdminClient, Protocol):
    """The KMS calls set-up makes (a boto3 ``kms`` client has them)."""

    def describe_key(self, *, KeyId: str) -> Mapping[str, Any]: ...


class KmsSetupSource(Protocol):
    """Gives the client that reaches a key id, ARN or alias (``issuer.aws.kms.KmsClients`` is one)."""

    def for_key(self, key_id: str) -> KmsSetupClient: ...


@dataclass(frozen=True, slots=True)
class KmsKeyChoice:
    """Which KMS key: an existing one (``key_id``: id, key ARN, alias name or alias ARN) or a new one
    of ``key_spec`` under the alias ``create_alias``. Exactly one of the two; raises ``ValueError``."""

    key_id: str | None = None
    create_alias: str | None = None
    key_spec: KmsKeySpec = "ECC_NIST_P256"

    def __post_init__(self) -> None:
        if (self.key_id is None) == (self.create_alias is None):
            raise ValueError("name an existing KMS key or an alias to create, not both or neither")
        if self.key_spec not in KMS_KEY_SPECS:
            raise ValueError(f"key_spec must be one of {', '.join(KMS_KEY_SPECS)}")

    @property
    def name(self) -> str:
        return self.key_id if self.key_id is not None else str(self.create_alias)


@dataclass(frozen=True, slots=True)
class KmsKeyInUse:
    """A KMS key ready to certify or sign: its key ARN, what GetPublicKey said, the client, and whether
    this run created it."""

    arn: str
    key: KmsKey
    client: KmsSetupClient
    created: bool

    @property
    def key_ref(self) -> str:
        return kms_key_ref(self.arn)


@dataclass(frozen=True, slots=True)
class KmsCA:
    """What :func:`init_kms_ca` made and registered."""

    registered: RegisteredCA
    root: x509.Certificate
    issuing: x509.Certificate
    root_key_ref: str
    issuing_key_ref: str
    files: tuple[Path, ...]  # written to the CA directory
    created_keys: tuple[str, ...]  # ARNs of the KMS keys this run created


def obtain_kms_key(source: KmsSetupSource, choice: KmsKeyChoice) -> KmsKeyInUse:
    """The KMS key ``choice`` names, created first when it asks for a new one. Blocking.

    Raises ClientError ``kms_alias_invalid``; CAStateError ``ca_exists`` (the alias names another
    key); the ``ca.kms_client`` errors for an unreachable, refusing or unsuitable key.
    """
    client = source.for_key(choice.name)
    if choice.create_alias is not None:
        try:
            key = create_kms_key(client, key_spec=choice.key_spec, alias=choice.create_alias)
        except ValueError as exc:
            raise ClientError(str(exc), code="kms_alias_invalid") from None
    else:
        key = kms_public_key(client, choice.name)
    arn = key.key_id if is_key_arn(key.key_id) else _key_arn(client, key.key_id)
    return KmsKeyInUse(arn=arn, key=key, client=client, created=choice.create_alias is not None)


def _key_arn(client: KmsSetupClient, key_id: str) -> str:
    # Real KMS answers GetPublicKey with the key ARN; where an answer carries only the id, DescribeKey has it.
    try:
        arn = str(client.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"])
    except (BotoClientError, BotoCoreError) as exc:
        raise kms_failure(exc, key_id=key_id, operation="DescribeKey", public=False) from exc
    if not is_key_arn(arn):
        raise ClientError(f"KMS did not give a key ARN for {key_id} (got {arn!r})", code="kms_key_arn_unknown")
    return arn


def certify_kms_issuer(
    root: CertifiedKey | KmsCertifiedKey,
    key: KmsKeyInUse,
    *,
    now: datetime,
    validity: timedelta,
    common_name: str,
    organization: str | None,
) -> x509.Certificate:
    """An issuing CA certificate for ``key`` signed by ``root`` (locally or in KMS), verified. Blocking."""
    return create_issuing_for_kms_key(
        root, key.client, key.arn, now=now, validity=validity, common_name=common_name, organization=organization
    )


@dataclass(frozen=True, slots=True)
class KmsIssuer:
    """A new issuing CA certificate for a KMS key, and where a copy was written for operators."""

    certificate: x509.Certificate
    key: KmsKeyInUse
    certificate_path: Path


async def new_kms_issuer(
    root: CertifiedKey | KmsCertifiedKey,
    kms: KmsSetupSource,
    choice: KmsKeyChoice,
    *,
    ca_dir: Path,
    now: datetime,
    validity: timedelta,
    name: str,
) -> KmsIssuer:
    """An issuing CA named ``name`` (and the root's O=) for the KMS key ``choice`` (created first if asked),
    certified by ``root``, written to ``ca_dir/issuing-<fingerprint16>.pem``.

    Raises the errors of :func:`obtain_kms_key`, and CAStateError ``ca_expired`` for an expired root.
    """
    key = await asyncio.to_thread(obtain_kms_key, kms, choice)
    certificate = await asyncio.to_thread(
        certify_kms_issuer, root, key, now=now, validity=validity, common_name=name, organization=organization_of(root)
    )
    path = ca_dir / f"issuing-{certificate.fingerprint(hashes.SHA256()).hex()[:16]}.pem"
    return KmsIssuer(certificate=certificate, key=key, certificate_path=write_certificates(path, [certificate]))


def write_certificates(path: Path, certificates: Sequence[x509.Certificate]) -> Path:
    """Write ``certificates`` as PEM to ``path`` atomically (temporary file, fsync, rename); ``path``.

    Creates the directory (0700) when it is missing.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, _CERT_MODE)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


async def init_kms_ca(
    sessions: async_sessionmaker[AsyncSession],
    *,
    ca_dir: Path,
    kms: KmsSetupSource,
    issuing: KmsKeyChoice,
    root: KmsKeyChoice | None,
    passphrase: Callable[[], bytes] | None,
    now: datetime,
    root_validity: timedelta,
    issuing_validity: timedelta,
    trust_domain: str,
    organization: str | None = None,
    force: bool = False,
) -> KmsCA:
    """Create a root and an issuing CA whose key is in KMS, and register them as the active issuer.

    ``root`` None makes a local ECDSA P-384 root whose key is written to ``root.key.pem`` under
    ``passphrase()`` (the only call of it); otherwise the root is that KMS key. Refused while the
    registry has an issuer, and while CA files are in ``ca_dir`` unless ``force``.

    Raises ClientError ``ca_exists``, CAStateError ``ca_exists`` (files, or an alias taken),
    ValueError when a local root has no ``passphrase``, and the errors of :func:`obtain_kms_key`.
    A KMS key created before a later step failed stays in KMS; the error says nothing of it, the
    caller's progress output does.
    """
    if root is None and passphrase is None:
        raise ValueError("a local root key needs the CA passphrase")
    async with sessions() as session:
        if await store.list_issuers(session):
            raise ClientError("the CA registry already has an issuing CA; rotate it instead", code="ca_exists")
    files = clear_ca_dir(ca_dir, force=force)
    created: list[str] = []
    written: list[Path] = []
    root_name, issuing_name = f"{trust_domain} Root CA", f"{trust_domain} Issuing CA"
    try:
        certified_root: CertifiedKey | KmsCertifiedKey
        if root is None:
            local = create_root(now=now, validity=root_validity, common_name=root_name, organization=organization)
            assert passphrase is not None
            write_key_file(files.root_key_path, local.key, passphrase=passphrase(), certificate=local.certificate)
            written += [files.root_key_path, files.root_cert_path]
            certified_root, root_key_ref = local, file_key_ref(files.root_key_path, ca_dir=ca_dir)
        else:
            root_key = await asyncio.to_thread(obtain_kms_key, kms, root)
            created += [root_key.arn] if root_key.created else []
            certified_root = await asyncio.to_thread(
                create_kms_root,
                root_key.client,
                root_key.arn,
                now=now,
                validity=root_validity,
                common_name=root_name,
                organization=organization,
            )
            root_key_ref = root_key.key_ref
        issuing_key = await asyncio.to_thread(obtain_kms_key, kms, issuing)
        created += [issuing_key.arn] if issuing_key.created else []
        certificate = await asyncio.to_thread(
            certify_kms_issuer,
            certified_root,
            issuing_key,
            now=now,
            validity=issuing_validity,
            common_name=issuing_name,
            organization=organization,
        )
        registered = await _register(
            sessions, certified_root.certificate, root_key_ref, certificate, issuing_key.key_ref, now=now
        )
    except BaseException:
        # Nothing the registry does not name stays behind (a root key file above all).
        for path in written:
            path.unlink(missing_ok=True)
        raise
    if root is not None:
        written.append(write_certificates(files.root_cert_path, [certified_root.certificate]))
    written.append(write_certificates(files.issuing_cert_path, [certificate]))
    # The directory now names a registered CA: serving it against an empty database is refused.
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    write_marker(ca_dir, Marker(issuer=fingerprint, registered_at=now.isoformat(), database=database_of(sessions)))
    return KmsCA(
        registered=registered,
        root=certified_root.certificate,
        issuing=certificate,
        root_key_ref=root_key_ref,
        issuing_key_ref=issuing_key.key_ref,
        files=tuple(written),
        created_keys=tuple(created),
    )


def clear_ca_dir(ca_dir: Path, *, force: bool) -> CAFiles:
    """The CA files of ``ca_dir`` (made 0700), emptied with ``force``; CAStateError ``ca_exists`` if any are there."""
    files = CAFiles.at(ca_dir)
    present = [p for p in files.all_paths if p.exists() or p.is_symlink()]
    if present and not force:
        names = ", ".join(p.name for p in present)
        raise CAStateError(f"A CA already exists in {ca_dir} ({names}); refusing to overwrite it", code="ca_exists")
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in present:
        path.unlink()  # --force while the registry is empty: files nobody uses
    return files


async def _register(
    sessions: async_sessionmaker[AsyncSession],
    root: x509.Certificate,
    root_key_ref: str,
    issuing: x509.Certificate,
    issuing_key_ref: str,
    *,
    now: datetime,
) -> RegisteredCA:
    async with sessions() as session, session.begin():
        await store.lock_registry(session)
        if await store.list_issuers(session):
            raise ClientError("another `issuer ca init` registered a CA meanwhile", code="ca_exists")
        stamp = await change_stamp(session, now)
        await add_root_certificate(session, root, key_ref=root_key_ref, now=stamp)
        issuer_id = await add_issuer_certificate(session, issuing, key_ref=issuing_key_ref, state="active", now=stamp)
    return registered_ca(issuer_id, issuing)
