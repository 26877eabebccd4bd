"""Where issuing keys come from: a ``key_ref`` in the registry names the backend and the key.

- ``file:<path>`` — an encrypted PKCS#8 key file, decrypted with the CA passphrase; a
  relative path is relative to the CA directory (``<state_dir>/ca``).
- ``kms:<key ARN>`` — an asymmetric SIGN_VERIFY key in AWS KMS, always its full key ARN
  (never an alias, which an operator could point at another key). Signing calls
  ``kms:Sign``; loading calls ``kms:GetPublicKey`` once and refuses a key that is not the
  certificate's. No file and no passphrase are needed.
- ``pca:<CA ARN>`` — an AWS Private CA: it signs the CSR itself (``acm-pca:IssueCertificate``),
  publishes its own CRL and keeps its own revocation list. Loading calls
  ``DescribeCertificateAuthority`` and ``GetCertificateAuthorityCertificate`` once and refuses a
  CA that is not ACTIVE or no longer holds the certificate's key.

What each backend can do is declared by its signer class (``CAPABILITIES``);
:func:`capabilities_of` reads it from a ``key_ref`` without loading a key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from cryptography import x509

from ca.errors import CAError, CAStateError, KMSKeyError, SignerUnavailable
from ca.files import load_key_file
from ca.kms import DEFAULT_TIMEOUT, KmsSigner, load_kms_signer
from ca.kms_client import KmsClient
from ca.pca import DEFAULT_TIMEOUT as PCA_TIMEOUT
from ca.pca import PcaSigner, load_pca_signer
from ca.pca_client import PcaClient
from ca.signer import LocalFileSigner, Signer, SignerCapabilities
from issuer.aws.kms import is_key_arn
from issuer.aws.pca import is_ca_arn
from issuer.errors import ConfigError, UpstreamUnavailable
from issuer.store.records import IssuerRecord, RootRecord

__all__ = [
    "KMS_PREFIX",
    "PCA_PREFIX",
    "KeySigners",
    "KmsClientSource",
    "PcaClientSource",
    "capabilities_of",
    "file_key_ref",
    "kms_key_arn",
    "kms_key_ref",
    "pca_ca_arn",
    "pca_key_ref",
    "resolve_file_ref",
]

KMS_PREFIX = "kms:"
PCA_PREFIX = "pca:"


class KmsClientSource(Protocol):
    """Gives the KMS client that reaches a key (``issuer.aws.kms.KmsClients`` is one)."""

    def for_key(self, key_id: str) -> KmsClient: ...


class PcaClientSource(Protocol):
    """Gives the Private CA client that reaches a CA (``issuer.aws.pca.PcaClients`` is one)."""

    def for_ca(self, ca_arn: str) -> PcaClient: ...


def capabilities_of(key_ref: str) -> SignerCapabilities:
    """What the backend of ``key_ref`` declares it can do, without loading the key.

    Raises :class:`ConfigError` for an unknown backend.
    """
    for prefix, kind in (("file:", LocalFileSigner), (KMS_PREFIX, KmsSigner), (PCA_PREFIX, PcaSigner)):
        if key_ref.startswith(prefix):
            return kind.CAPABILITIES
    raise ConfigError(f"unknown key backend {key_ref.split(':', 1)[0]!r} in key_ref {key_ref!r}")


def file_key_ref(path: Path, *, ca_dir: Path) -> str:
    """The ``key_ref`` of a key file: relative to ``ca_dir`` when it lies inside it."""
    try:
        return f"file:{path.resolve().relative_to(ca_dir.resolve())}"
    except ValueError:
        return f"file:{path.resolve()}"


def resolve_file_ref(key_ref: str, *, ca_dir: Path) -> Path:
    path = Path(key_ref.removeprefix("file:"))
    return path if path.is_absolute() else ca_dir / path


def kms_key_ref(key_arn: str) -> str:
    """The ``key_ref`` of a KMS key; raises ``ValueError`` unless ``key_arn`` is a key ARN (not an alias)."""
    if not is_key_arn(key_arn):
        raise ValueError(f"{key_arn!r} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)")
    return KMS_PREFIX + key_arn


def kms_key_arn(key_ref: str, *, owner: str) -> str:
    """The key ARN in a ``kms:`` ``key_ref`` of ``owner`` (a CA subject, for the message).

    Raises :class:`ConfigError` ``kms_key_ref_invalid`` for anything but a key ARN: an alias or a
    bare key id could name another key tomorrow.
    """
    arn = key_ref.removeprefix(KMS_PREFIX)
    if not is_key_arn(arn):
        raise ConfigError(
            f"{owner}: key_ref {key_ref!r} is not kms:<key ARN>; the registry must name the key by its ARN "
            "(an alias or key id could point at another key)",
            code="kms_key_ref_invalid",
        )
    return arn


def pca_key_ref(ca_arn: str) -> str:
    """The ``key_ref`` of an AWS Private CA; raises ``ValueError`` unless ``ca_arn`` is a CA ARN."""
    if not is_ca_arn(ca_arn):
        raise ValueError(
            f"{ca_arn!r} is not an AWS Private CA ARN (arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID)"
        )
    return PCA_PREFIX + ca_arn.strip()


def pca_ca_arn(key_ref: str, *, owner: str) -> str:
    """The CA ARN in a ``pca:`` ``key_ref`` of ``owner``; ConfigError ``pca_key_ref_invalid`` for anything else."""
    arn = key_ref.removeprefix(PCA_PREFIX)
    if not key_ref.startswith(PCA_PREFIX) or not is_ca_arn(arn):
        raise ConfigError(f"{owner}: key_ref {key_ref!r} is not pca:<CA ARN>", code="pca_key_ref_invalid")
    return arn


class KeySigners:
    """The :class:`~issuer.service.ca.registry.SignerLoader` for every key backend this build knows.

    ``passphrase`` is called only when a file key must be decrypted. ``kms`` gives KMS clients
    (default: :class:`issuer.aws.kms.KmsClients`, made on first use of a ``kms:`` key);
    ``kms_timeout`` bounds each KMS call in seconds, retries included. ``pca`` gives Private CA
    clients (default: :class:`issuer.aws.pca.PcaClients`, made on first use of a ``pca:`` CA);
    ``pca_timeout`` bounds one issuance (IssueCertificate and the polling of GetCertificate).
    """

    def __init__(
        self,
        *,
        ca_dir: Path,
        passphrase: Callable[[], bytes],
        kms: KmsClientSource | None = None,
        kms_timeout: float = DEFAULT_TIMEOUT,
        pca: PcaClientSource | None = None,
        pca_timeout: float = PCA_TIMEOUT,
    ) -> None:
        self._ca_dir = ca_dir
        self._passphrase = passphrase
        self._kms = kms
        self._kms_timeout = kms_timeout
        self._pca = pca
        self._pca_timeout = pca_timeout

    async def __call__(
        self,
        issuer: IssuerRecord,
        *,
        certificate: x509.Certificate,
        chain: tuple[x509.Certificate, ...],
        roots: tuple[x509.Certificate, ...],
    ) -> Signer:
        """The signer of ``issuer``.

        Raises :class:`ConfigError` for an unknown backend, a malformed ``kms:`` ref or a key that is
        not the certificate's; the ``ca.files`` errors for a file key that is missing or does not
        decrypt; :class:`UpstreamUnavailable` when KMS cannot be reached, throttles or refuses the
        key. Every message names the issuer and the key.
        """
        if issuer.key_ref.startswith("file:"):
            key = load_key_file(resolve_file_ref(issuer.key_ref, ca_dir=self._ca_dir), passphrase=self._passphrase())
            try:
                return LocalFileSigner(issuer_certificate=certificate, issuer_key=key, roots=roots, chain=chain)
            except ValueError as exc:
                raise ConfigError(f"issuing CA {issuer.subject}: {issuer.key_ref} is not its key ({exc})") from None
        if issuer.key_ref.startswith(KMS_PREFIX):
            return await self._kms_signer(issuer, certificate=certificate, chain=chain, roots=roots)
        if issuer.key_ref.startswith(PCA_PREFIX):
            return await self._pca_signer(issuer, certificate=certificate, chain=chain, roots=roots)
        scheme = issuer.key_ref.split(":", 1)[0]
        raise ConfigError(f"issuing CA {issuer.subject}: unknown key backend {scheme!r} in key_ref {issuer.key_ref!r}")

    async def root(self, root: RootRecord, *, certificate: x509.Certificate) -> Signer | None:
        """A signer with ``root``'s key for the root's CRLs, or None when the key is not here: no key
        registered, or a key file not present (the root kept offline).

        Raises as :meth:`__call__` does when the key is here but cannot be used.
        """
        if not root.key_ref:
            return None
        owner = f"root {root.subject}"
        if root.key_ref.startswith("file:"):
            path = resolve_file_ref(root.key_ref, ca_dir=self._ca_dir)
            if not path.exists():
                return None
            key = load_key_file(path, passphrase=self._passphrase())
            try:
                return LocalFileSigner(issuer_certificate=certificate, issuer_key=key, roots=(certificate,))
            except ValueError as exc:
                raise ConfigError(f"{owner}: {root.key_ref} is not its key ({exc})") from None
        if root.key_ref.startswith(KMS_PREFIX):
            arn = kms_key_arn(root.key_ref, owner=owner)
            try:
                return await load_kms_signer(
                    self.kms.for_key(arn), arn, issuer_certificate=certificate, roots=(certificate,),
                    call_timeout=self._kms_timeout,
                )  # fmt: skip
            except SignerUnavailable as exc:
                detail, reason = f"{owner}: {exc.detail}", f"{owner}: {exc.reason}"
                raise UpstreamUnavailable(detail, code=exc.code, reason=reason) from None
            except KMSKeyError as exc:
                raise ConfigError(f"{owner}: {exc.detail}", code=exc.code) from None
        return None

    @property
    def kms(self) -> KmsClientSource:
        if self._kms is None:
            from issuer.aws.kms import KmsClients

            self._kms = KmsClients()
        return self._kms

    @property
    def pca(self) -> PcaClientSource:
        if self._pca is None:
            from issuer.aws.pca import PcaClients

            self._pca = PcaClients()
        return self._pca

    async def _pca_signer(
        self,
        issuer: IssuerRecord,
        *,
        certificate: x509.Certificate,
        chain: tuple[x509.Certificate, ...],
        roots: tuple[x509.Certificate, ...],
    ) -> Signer:
        owner = f"issuing CA {issuer.subject}"
        arn = pca_ca_arn(issuer.key_ref, owner=owner)
        # CAStateError: Private CA holds another key now.
        with _remote_key_errors(owner, CAStateError):
            return await load_pca_signer(
                self.pca.for_ca(arn),
                arn,
                issuer_certificate=certificate,
                roots=roots,
                chain=chain,
                call_timeout=self._pca_timeout,
            )

    async def _kms_signer(
        self,
        issuer: IssuerRecord,
        *,
        certificate: x509.Certificate,
        chain: tuple[x509.Certificate, ...],
        roots: tuple[x509.Certificate, ...],
    ) -> Signer:
        owner = f"issuing CA {issuer.subject}"
        arn = kms_key_arn(issuer.key_ref, owner=owner)
        # KMSKeyError: not the certificate's key, or a key that cannot sign certificates.
        with _remote_key_errors(owner, KMSKeyError):
            return await load_kms_signer(
                self.kms.for_key(arn),
                arn,
                issuer_certificate=certificate,
                roots=roots,
                chain=chain,
                call_timeout=self._kms_timeout,
            )


@contextlib.contextmanager
def _remote_key_errors(owner: str, wrong_key: type[CAError]) -> Iterator[None]:
    """A remote key's load failures, named for ``owner``: unavailable or denied (throttled, unreachable,
    disabled, gone) is 503 with Retry-After; ``wrong_key`` (a key that is not the certificate's) is a
    configuration error."""
    try:
        yield
    except SignerUnavailable as exc:  # SignerDenied too
        raise UpstreamUnavailable(
            f"{owner}: {exc.detail}", code=exc.code, reason=f"{owner}: {exc.reason}", retry_after=exc.retry_after
        ) from None
    except wrong_key as exc:
        raise ConfigError(f"{owner}: {exc.detail}", code=exc.code) from None
