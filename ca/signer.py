"""The signing seam, and its local backend with the issuing key held in memory.

:class:`Signer` takes *what to sign* (a leaf template and a public key, or a list
of revocations) so that a file key, a KMS/HSM key or AWS Private CA can stand
behind it; the profile is the same whichever backend signs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ca.crl import RevokedEntry, crl_builder
from ca.keys import PrivateKey, key_type_of, signature_hash_for
from ca.profile import LeafTemplate, leaf_builder

__all__ = ["LocalFileSigner", "Signer"]


class Signer(Protocol):
    """Issues leaf certificates and CRLs for one issuing CA."""

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

    async def issue(
        self,
        template: LeafTemplate,
        public_key: CertificatePublicKeyTypes,
        *,
        serial: int | None = None,
    ) -> x509.Certificate:
        """A signed leaf for ``public_key`` following ``template`` (validity clamped to the issuer's).

        Raises ``CSRError`` ``key_type_unsupported`` for an unsupported key and
        ``CAStateError`` ``ca_expired`` when the issuer cannot cover the period.
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
        """A CRL listing ``revoked``, signed by the issuing CA."""
        ...


class LocalFileSigner:
    """A :class:`Signer` whose issuing key is held in memory (loaded by ``ca.files``).

    Construct it through ``ca.files.load_local_signer``, or directly from a
    certificate and key (tests, a freshly created hierarchy). ``chain`` defaults
    to the issuing certificate alone. Raises ``ValueError`` if the key does not
    belong to the certificate.
    """

    def __init__(
        self,
        *,
        issuer_certificate: x509.Certificate,
        issuer_key: PrivateKey,
        roots: Sequence[x509.Certificate],
        chain: Sequence[x509.Certificate] | None = None,
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

    @property
    def issuer_certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self._chain

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self._roots

    async def issue(
        self,
        template: LeafTemplate,
        public_key: CertificatePublicKeyTypes,
        *,
        serial: int | None = None,
    ) -> x509.Certificate:
        # The caller should have checked the CSR already; refusing here too keeps the CA safe on its own.
        key_type_of(public_key)
        builder = leaf_builder(template, public_key, issuer=self._certificate, serial=serial)
        certificate = builder.sign(self._key, self._hash)
        # A faulty signature must never leave the CA; checking costs one verification.
        certificate.verify_directly_issued_by(self._certificate)
        return certificate

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
