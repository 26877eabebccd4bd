"""The signing seam, and its local backend with the issuing key held in memory.

:class:`Signer` takes *what to sign* — a :class:`SigningRequest`: the leaf template, the
public key and the CSR it came in — and returns an :class:`IssuedCertificate` (the
certificate and the chain to send with it). The backend chooses the serial: the file and
KMS signers a random 159-bit one (``serials``), AWS Private CA its own. What a backend can
do beyond issuing is declared in :class:`SignerCapabilities` (step-ca's ``cas/apiv1``
optional interfaces, as data): whether it signs CRLs (file, KMS) and whether a revocation
must also be sent to it (AWS Private CA). Calling what a backend declared it cannot do
raises :class:`~ca.errors.SignerCapabilityMissing`. ``health()`` says whether it can sign
now (``/readyz``); it never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ca.crl import RevokedEntry, crl_builder
from ca.errors import CAError, SignerCapabilityMissing
from ca.keys import PrivateKey, key_type_of, signature_hash_for
from ca.profile import LeafTemplate, leaf_builder

__all__ = [
    "IssuedCertificate",
    "LocalFileSigner",
    "Serials",
    "Signer",
    "SignerCapabilities",
    "SignerHealth",
    "SigningRequest",
]

# Where a backend's random serials come from (randomness is a parameter; tests pin it).
Serials = Callable[[], int]


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningRequest:
    """What to sign: the template policy decided, the public key, and the CSR as the machine sent it.

    ``csr_der`` is for backends that sign the CSR themselves (AWS Private CA); the file and KMS
    signers use ``public_key`` alone. Nothing of the CSR but its key reaches a certificate.
    """

    template: LeafTemplate
    public_key: CertificatePublicKeyTypes
    csr_der: bytes | None = None


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A signed leaf and the intermediates to send with it, nearest first (no root)."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SignerCapabilities:
    """What a backend does besides issuing, declared by the backend.

    ``signs_crls``: :meth:`Signer.sign_crl` works (the file and KMS keys); a backend that
    publishes its own CRL (AWS Private CA) says False. ``revokes_upstream``: a revocation
    must also be sent to the backend (:meth:`Signer.revoke`), because it keeps its own list.
    ``signs_locally``: signing is a computation in this process (a key in memory), not a call
    out that may wait; a caller may hold a pooled database connection across it.
    """

    signs_crls: bool
    revokes_upstream: bool
    signs_locally: bool = False


@dataclass(frozen=True, slots=True)
class SignerHealth:
    """Whether a signer can sign now; when not, a stable ``code``, a ``detail`` for logs, and ``retry_after``."""

    ok: bool
    code: str | None = None
    detail: str | None = None
    retry_after: int | None = None

    @classmethod
    def healthy(cls) -> SignerHealth:
        return cls(ok=True)

    @classmethod
    def failed(cls, error: CAError) -> SignerHealth:
        """The health a failed check reports: the error's code, its private reason and retry hint."""
        return cls(ok=False, code=error.code, detail=error.reason, retry_after=error.retry_after)


class Signer(Protocol):
    """Issues leaf certificates for one issuing CA; signs CRLs and revokes upstream as declared."""

    @property
    def issuer_certificate(self) -> x509.Certificate:
        """The issuing CA certificate that signs leaves."""
        ...

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The intermediates sent with a leaf, nearest first (the issuing certificate; no root)."""
        ...

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The trust bundle: the root certificates a relying party should trust."""
        ...

    @property
    def capabilities(self) -> SignerCapabilities:
        """What this backend does besides issuing (see :class:`SignerCapabilities`)."""
        ...

    async def issue(self, request: SigningRequest) -> IssuedCertificate:
        """A leaf for ``request`` (validity clamped to the issuer's), with a serial the backend chose.

        Raises ``CSRError`` ``key_type_unsupported`` for an unsupported key, ``CAStateError``
        ``ca_expired`` when the issuer cannot cover the period, and the backend's
        ``SignerUnavailable``/``SignerDenied``/``SignerResultRejected``.
        """
        ...

    async def sign_crl(
        self,
        revoked: Sequence[RevokedEntry],
        *,
        now: datetime,
        next_update: datetime,
        crl_number: int,
    ) -> x509.CertificateRevocationList:
        """A CRL listing ``revoked``, signed by the issuing CA. Only when ``capabilities.signs_crls``."""
        ...

    async def revoke(self, serial: int, *, reason: x509.ReasonFlags | None) -> None:
        """Tell the backend ``serial`` is revoked. Only when ``capabilities.revokes_upstream``."""
        ...

    async def health(self) -> SignerHealth:
        """Whether the backend can sign now (bounded, never raises)."""
        ...


class LocalFileSigner:
    """A :class:`Signer` whose issuing key is held in memory (loaded by ``ca.files``).

    Construct it through ``ca.files.load_local_signer``, or directly from a
    certificate and key (tests, a freshly created hierarchy). ``chain`` defaults
    to the issuing certificate alone; ``serials`` to cryptography's random 159-bit
    serials. Raises ``ValueError`` if the key does not belong to the certificate.
    """

    CAPABILITIES: ClassVar[SignerCapabilities] = SignerCapabilities(
        signs_crls=True, revokes_upstream=False, signs_locally=True
    )

    def __init__(
        self,
        *,
        issuer_certificate: x509.Certificate,
        issuer_key: PrivateKey,
        roots: Sequence[x509.Certificate],
        chain: Sequence[x509.Certificate] | None = None,
        serials: Serials = x509.random_serial_number,
    ) -> None:
        if not _same_key(issuer_certificate, issuer_key):
            raise ValueError("the issuing key does not belong to the issuing certificate")
        if not roots:
            raise ValueError("a signer needs at least one root in its trust bundle")
        self._certificate = issuer_certificate
        self._key = issuer_key
        self._hash = signature_hash_for(issuer_key)
        self._roots = tuple(roots)
        self._chain = tuple(chain) if chain is not None else (issuer_certificate,)
        self._serials = serials

    @property
    def issuer_certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self._chain

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self._roots

    @property
    def capabilities(self) -> SignerCapabilities:
        return self.CAPABILITIES

    async def issue(self, request: SigningRequest) -> IssuedCertificate:
        # The caller should have checked the CSR already; refusing here too keeps the CA safe on its own.
        key_type_of(request.public_key)
        builder = leaf_builder(request.template, request.public_key, issuer=self._certificate, serial=self._serials())
        certificate = builder.sign(self._key, self._hash)
        # A faulty signature must never leave the CA; checking costs one verification.
        certificate.verify_directly_issued_by(self._certificate)
        return IssuedCertificate(certificate, self._chain)

    async def sign_crl(
        self,
        revoked: Sequence[RevokedEntry],
        *,
        now: datetime,
        next_update: datetime,
        crl_number: int,
    ) -> x509.CertificateRevocationList:
        builder = crl_builder(
            revoked, issuer=self._certificate, now=now, next_update=next_update, crl_number=crl_number
        )
        return builder.sign(self._key, self._hash)

    async def revoke(self, serial: int, *, reason: x509.ReasonFlags | None) -> None:
        raise SignerCapabilityMissing("a local file key keeps no revocation list of its own; nothing to revoke there")

    async def health(self) -> SignerHealth:
        return SignerHealth.healthy()  # the key is in memory: it can sign whenever this process runs

    def __repr__(self) -> str:
        # Never show the key; the subject and serial identify the CA well enough.
        return (
            f"LocalFileSigner(issuer={self._certificate.subject.rfc4514_string()!r}, "
            f"serial={self._certificate.serial_number:x})"
        )


def _same_key(certificate: x509.Certificate, key: PrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(certificate.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki))
