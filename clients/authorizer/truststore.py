"""The truststore the CRLs are verified with: the roots and issuing CAs API Gateway trusts.

A CA is identified by its name and key (``ca_id``), so that two certificates for one CA — a
re-issued or cross-signed certificate — share one CRL and one CRL-number history. For every
certificate the CAs in the file that signed it are found once, when the file is read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from .errors import SourceError

__all__ = ["TrustedCa", "Truststore", "describe_truststore", "key_identifier", "parse_truststore", "signed_by"]

_MAX_CERTIFICATES = 1000


@dataclass(frozen=True)
class TrustedCa:
    certificate: x509.Certificate
    ca_id: str  # SHA-256 of the subject and the public key: one CA, however many certificates it has
    subject: str  # RFC 4514, for log lines and Deny details
    subject_der: bytes
    key_id: bytes | None  # the subjectKeyIdentifier, when present
    self_signed: bool
    parents: tuple[str, ...]  # ca_ids of the CAs in the truststore whose key signed this certificate


@dataclass(frozen=True)
class Truststore:
    cas: tuple[TrustedCa, ...]
    by_subject: Mapping[bytes, tuple[TrustedCa, ...]]
    by_id: Mapping[str, tuple[TrustedCa, ...]]
    digest: str  # SHA-256 of the file: which version the CRLs were checked against

    def issuers_of(self, certificate: x509.Certificate) -> tuple[TrustedCa, ...]:
        """The CAs whose name is ``certificate``'s issuer, whose key identifier agrees with its
        authorityKeyIdentifier (when both are present), and whose key verifies its signature."""
        wanted = key_identifier(certificate, authority=True)
        return tuple(
            ca
            for ca in self.by_subject.get(certificate.issuer.public_bytes(), ())
            if (wanted is None or ca.key_id is None or wanted == ca.key_id) and signed_by(certificate, ca.certificate)
        )


def describe_truststore(truststore: Truststore) -> dict[str, Any]:
    return {"certificates": len(truststore.cas), "digest": truststore.digest[:16]}


def parse_truststore(body: bytes) -> Truststore:
    """The CA certificates of a PEM truststore. Raises :class:`SourceError` ``truststore_invalid``
    when it holds no certificate, one that does not parse, or more than 1,000."""

    def bad(why: str) -> SourceError:
        return SourceError(f"truststore refused: {why}", code="truststore_invalid")

    if body.count(b"-----BEGIN CERTIFICATE-----") > _MAX_CERTIFICATES:
        raise bad(f"more than {_MAX_CERTIFICATES} certificates")
    try:
        certificates = x509.load_pem_x509_certificates(body)
    except ValueError as exc:
        raise bad(f"not PEM certificates ({exc})") from None
    cas = [c for c in certificates if _is_ca(c)]
    if not cas:
        raise bad("no CA certificate in it")
    ids = {id(c): _ca_id(c) for c in cas}
    trusted: list[TrustedCa] = []
    for certificate in cas:
        parents = tuple(
            dict.fromkeys(
                ids[id(other)] for other in cas if other.subject == certificate.issuer and signed_by(certificate, other)
            )
        )
        trusted.append(
            TrustedCa(
                certificate=certificate,
                ca_id=ids[id(certificate)],
                subject=certificate.subject.rfc4514_string(),
                subject_der=certificate.subject.public_bytes(),
                key_id=key_identifier(certificate, authority=False),
                self_signed=ids[id(certificate)] in parents,
                parents=parents,
            )
        )
    by_subject: dict[bytes, list[TrustedCa]] = {}
    by_id: dict[str, list[TrustedCa]] = {}
    for ca in trusted:
        by_subject.setdefault(ca.subject_der, []).append(ca)
        by_id.setdefault(ca.ca_id, []).append(ca)
    return Truststore(
        cas=tuple(trusted),
        by_subject={k: tuple(v) for k, v in by_subject.items()},
        by_id={k: tuple(v) for k, v in by_id.items()},
        digest=hashlib.sha256(body).hexdigest(),
    )


def signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s name is ``certificate``'s issuer and its key verifies the signature."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def key_identifier(certificate: x509.Certificate, *, authority: bool) -> bytes | None:
    """The certificate's subjectKeyIdentifier (or authorityKeyIdentifier keyIdentifier), or None."""
    try:
        if authority:
            return certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return None


def _is_ca(certificate: x509.Certificate) -> bool:
    """CA:TRUE, with a key this build of cryptography can use (anything else is left out)."""
    try:
        certificate.public_key()
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError, UnsupportedAlgorithm):
        return False


def _ca_id(certificate: x509.Certificate) -> str:
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(certificate.subject.public_bytes() + spki).hexdigest()
