"""The local-file backend's on-disk layout, and creating, loading and describing it.

A CA directory (mode 0700) holds four files, each mode 0600::

    root.pem           the root certificate(s): the trust bundle, first one current
    root.key.pem       the root key, PKCS#8 encrypted with the passphrase
    issuing.pem        the issuing CA certificate (then any further chain certificates)
    issuing.key.pem    the issuing key, PKCS#8 encrypted with the passphrase

Only the issuing key is needed to serve; ``root.key.pem`` may be moved offline.
Every file is written atomically (temporary file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ca.errors import CAError, CAKeyError, CAStateError
from ca.hierarchy import (
    DEFAULT_ISSUING_COMMON_NAME,
    DEFAULT_ROOT_COMMON_NAME,
    ISSUING_VALIDITY,
    ROOT_VALIDITY,
    CAHierarchy,
    create_hierarchy,
)
from ca.keys import PrivateKey, key_type_of
from ca.signer import LocalFileSigner

__all__ = [
    "MIN_PASSPHRASE_BYTES",
    "CAFiles",
    "CAInfo",
    "CertificateInfo",
    "describe_ca",
    "generate_passphrase",
    "init_ca",
    "load_ca_certificates",
    "load_key_file",
    "load_local_signer",
    "write_key_file",
]

# The PKCS#8 encryption cryptography offers uses a fast KDF, so the passphrase itself must carry the strength.
MIN_PASSPHRASE_BYTES: Final = 16
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700
_ENCRYPTED_KEY_LABEL: Final = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


@dataclass(frozen=True, slots=True)
class CAFiles:
    """Where the files of the CA in ``directory`` live."""

    directory: Path
    root_cert_path: Path
    root_key_path: Path
    issuing_cert_path: Path
    issuing_key_path: Path

    @classmethod
    def at(cls, directory: Path) -> CAFiles:
        """The layout of a CA directory (whether or not the files exist)."""
        return cls(
            directory=directory,
            root_cert_path=directory / "root.pem",
            root_key_path=directory / "root.key.pem",
            issuing_cert_path=directory / "issuing.pem",
            issuing_key_path=directory / "issuing.key.pem",
        )

    @property
    def all_paths(self) -> tuple[Path, ...]:
        return (self.root_cert_path, self.root_key_path, self.issuing_cert_path, self.issuing_key_path)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What a person needs to recognise a CA certificate."""

    subject: str
    serial: int
    not_before: datetime
    not_after: datetime
    sha256_fingerprint: str  # lowercase hex, no separators
    key_type: str

    @property
    def serial_hex(self) -> str:
        return f"{self.serial:x}"


@dataclass(frozen=True, slots=True)
class CAInfo:
    """The CA in a directory: its roots (current first), its issuing CA, and whether the root key is here."""

    directory: Path
    roots: tuple[CertificateInfo, ...]
    issuing: CertificateInfo
    root_key_present: bool

    @property
    def root(self) -> CertificateInfo:
        return self.roots[0]


def generate_passphrase() -> bytes:
    """A new random passphrase: 32 bytes from ``secrets``, URL-safe base64 (43 ASCII bytes)."""
    return secrets.token_urlsafe(32).encode("ascii")


def init_ca(
    directory: Path,
    *,
    passphrase: bytes,
    now: datetime,
    root_validity: timedelta = ROOT_VALIDITY,
    issuing_validity: timedelta = ISSUING_VALIDITY,
    root_common_name: str = DEFAULT_ROOT_COMMON_NAME,
    issuing_common_name: str = DEFAULT_ISSUING_COMMON_NAME,
    organization: str | None = None,
    force: bool = False,
) -> CAFiles:
    """Create a root and an issuing CA and write them to ``directory``.

    Creates the directory (0700; an existing one is tightened to 0700) and the
    four files (0600). Raises :class:`CAStateError` ``ca_exists`` if any CA file
    is already there and ``force`` is false, and :class:`CAKeyError`
    ``ca_passphrase_empty`` / ``ca_passphrase_weak`` (under
    :data:`MIN_PASSPHRASE_BYTES`). With ``force`` the old files are replaced.
    """
    _check_passphrase(passphrase, creating=True)
    files = CAFiles.at(directory)
    _prepare_directory(directory)
    existing = [p.name for p in files.all_paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise CAStateError(
            f"A CA already exists in {directory} ({', '.join(existing)}); refusing to overwrite it",
            code="ca_exists",
        )
    hierarchy = create_hierarchy(
        now=now,
        root_validity=root_validity,
        issuing_validity=issuing_validity,
        root_common_name=root_common_name,
        issuing_common_name=issuing_common_name,
        organization=organization,
    )
    _write_private_files(directory, _serialise(files, hierarchy, passphrase))
    return files


def load_local_signer(directory: Path, *, passphrase: bytes) -> LocalFileSigner:
    """Load the CA in ``directory`` into a :class:`LocalFileSigner` (the issuing key decrypted in memory).

    Raises :class:`CAStateError` ``ca_not_initialised`` (no CA there),
    ``ca_files_corrupt`` (files missing, unreadable, unparsable, not encrypted, or
    not belonging together), and :class:`CAKeyError` ``ca_passphrase_wrong``
    (or ``ca_passphrase_empty``).
    """
    _check_passphrase(passphrase, creating=False)
    files = CAFiles.at(directory)
    roots, issuing = _load_certificates(files)
    key = _load_key(files.issuing_key_path, passphrase)
    try:
        return LocalFileSigner(issuer_certificate=issuing[0], issuer_key=key, roots=roots, chain=issuing)
    except ValueError:
        raise CAStateError(
            f"{files.issuing_key_path} does not hold the key of the certificate in {files.issuing_cert_path}",
            code="ca_files_corrupt",
        ) from None


def load_key_file(path: Path, *, passphrase: bytes) -> PrivateKey:
    """Decrypt the CA key in ``path`` (an encrypted PKCS#8 PEM file).

    Raises :class:`CAStateError` ``ca_files_corrupt`` (missing, unreadable, not an
    encrypted key) and :class:`CAKeyError` ``ca_passphrase_wrong`` / ``ca_passphrase_empty``.
    """
    _check_passphrase(passphrase, creating=False)
    return _load_key(path, passphrase)


def write_key_file(
    path: Path, key: PrivateKey, *, passphrase: bytes, certificate: x509.Certificate | None = None
) -> None:
    """Write ``key`` encrypted with ``passphrase`` to ``path`` (0600, atomically), and ``certificate``
    beside it as ``<stem>.pem`` when given (so operators can see which CA a key file belongs to).

    Raises :class:`CAKeyError` ``ca_passphrase_weak``/``ca_passphrase_empty`` and
    :class:`CAStateError` ``ca_exists`` when ``path`` exists.
    """
    _check_passphrase(passphrase, creating=True)
    _prepare_directory(path.parent)
    if path.exists() or path.is_symlink():
        raise CAStateError(f"{path} exists; refusing to overwrite a CA key", code="ca_exists")
    contents = {
        path: key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
    }
    if certificate is not None:
        contents[path.with_name(path.name.removesuffix(".key.pem") + ".pem")] = certificate.public_bytes(
            serialization.Encoding.PEM
        )
    _write_private_files(path.parent, contents)


def load_ca_certificates(directory: Path) -> tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]:
    """The roots and the issuing certificate (then its chain) of the CA in ``directory``.

    Raises :class:`CAStateError` ``ca_not_initialised`` or ``ca_files_corrupt``.
    """
    return _load_certificates(CAFiles.at(directory))


def describe_ca(directory: Path) -> CAInfo:
    """Describe the CA in ``directory`` from its certificates (no passphrase needed).

    Raises :class:`CAStateError` ``ca_not_initialised`` or ``ca_files_corrupt``.
    """
    files = CAFiles.at(directory)
    roots, issuing = _load_certificates(files)
    return CAInfo(
        directory=directory,
        roots=tuple(_info(c) for c in roots),
        issuing=_info(issuing[0]),
        root_key_present=files.root_key_path.exists(),
    )


def _check_passphrase(passphrase: bytes, *, creating: bool) -> None:
    if not passphrase:
        raise CAKeyError("The CA passphrase is empty; set one", code="ca_passphrase_empty")
    if creating and len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise CAKeyError(
            f"The CA passphrase is {len(passphrase)} bytes; use at least {MIN_PASSPHRASE_BYTES} "
            "(a generated one is best)",
            code="ca_passphrase_weak",
        )


def _prepare_directory(directory: Path) -> None:
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    if directory.is_symlink() or not directory.is_dir():
        raise CAStateError(f"{directory} is not a directory", code="ca_files_corrupt")
    # mkdir leaves an existing directory's mode alone; keys must not sit in a readable one.
    if directory.stat().st_mode & 0o777 != _DIR_MODE:
        os.chmod(directory, _DIR_MODE)


def _serialise(files: CAFiles, hierarchy: CAHierarchy, passphrase: bytes) -> dict[Path, bytes]:
    def cert(c: x509.Certificate) -> bytes:
        return c.public_bytes(serialization.Encoding.PEM)

    def key(k: PrivateKey) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )

    # Keys first: a crash between renames then leaves a set that load_local_signer reports as corrupt.
    return {
        files.root_key_path: key(hierarchy.root.key),
        files.issuing_key_path: key(hierarchy.issuing.key),
        files.root_cert_path: cert(hierarchy.root.certificate),
        files.issuing_cert_path: cert(hierarchy.issuing.certificate),
    }


def _write_private_files(directory: Path, contents: Mapping[Path, bytes]) -> None:
    written: list[tuple[Path, Path]] = []
    try:
        for final, data in contents.items():
            temporary = directory / f".{final.name}.{secrets.token_hex(8)}.tmp"
            # Created 0600 from the start (never chmod after the secret is in it); O_EXCL and
            # O_NOFOLLOW refuse a file or symlink planted under the temporary name.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temporary, flags, _FILE_MODE)
            written.append((temporary, final))
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
        for temporary, final in written:
            os.replace(temporary, final)
    except BaseException:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_certificates(files: CAFiles) -> tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]:
    if not any(p.exists() for p in files.all_paths):
        raise CAStateError(
            f"There is no CA in {files.directory}; create one first (issuer ca init)",
            code="ca_not_initialised",
        )
    roots = _read_certificates(files.root_cert_path)
    issuing = _read_certificates(files.issuing_cert_path)
    top = issuing[0]  # then any intermediates (an AWS Private CA may sit below one): the top must be a root's
    for parent in issuing[1:]:
        if not _issued_by(top, parent):
            break
        top = parent
    if not any(_issued_by(top, root) for root in roots):
        raise CAStateError(
            f"The issuing certificate in {files.issuing_cert_path} was not signed by a root in {files.root_cert_path}",
            code="ca_files_corrupt",
        )
    return roots, issuing


def _read_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    data = _read(path)
    try:
        certificates = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        certificates = ()
    if not certificates:
        raise CAStateError(f"{path} does not hold PEM certificates", code="ca_files_corrupt")
    return certificates


def _load_key(path: Path, passphrase: bytes) -> PrivateKey:
    data = _read(path)
    if _ENCRYPTED_KEY_LABEL not in data:
        raise CAStateError(
            f"{path} is not an encrypted PKCS#8 private key; CA keys are only kept encrypted",
            code="ca_files_corrupt",
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except ValueError:
        # The file is an encrypted PKCS#8 key, so a failure to decrypt means the passphrase is wrong.
        raise CAKeyError(f"The CA passphrase does not unlock {path}", code="ca_passphrase_wrong") from None
    except TypeError:
        raise CAStateError(f"{path} is not an encrypted private key", code="ca_files_corrupt") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise CAStateError(f"{path} holds a {type(key).__name__}, not a CA key", code="ca_files_corrupt")
    return key


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CAStateError(
            f"The CA in {path.parent} is incomplete: {path.name} is missing", code="ca_files_corrupt"
        ) from None
    except OSError as exc:
        raise CAStateError(f"Cannot read {path}: {exc.strerror}", code="ca_files_corrupt") from None


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _info(certificate: x509.Certificate) -> CertificateInfo:
    key_type: str
    try:
        key_type = key_type_of(certificate.public_key())
    except CAError:
        key_type = "unsupported"
    return CertificateInfo(
        subject=certificate.subject.rfc4514_string(),
        serial=certificate.serial_number,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        sha256_fingerprint=hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest(),
        key_type=key_type,
    )
