"""The PEM file API Gateway's mutual TLS needs as its truststore, and the rules it enforces.

API Gateway looks up the *issuer of the client's leaf* in the truststore and does not
build a path through intermediates the client sends. So the truststore must hold
every issuing CA that may still have unexpired leaves, not only the roots; a relying
party that behaves the same way verifies the leaf alone:
``openssl verify -CAfile truststore.pem cert.pem`` with no ``-untrusted``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

__all__ = ["build_truststore", "dedupe"]


def dedupe(certificates: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """``certificates`` in order, each DER-identical certificate once."""
    seen: set[bytes] = set()
    out: list[x509.Certificate] = []
    for certificate in certificates:
        fingerprint = certificate.fingerprint(hashes.SHA256())
        if fingerprint not in seen:
            seen.add(fingerprint)
            out.append(certificate)
    return tuple(out)


def build_truststore(issuing: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]) -> bytes:
    """The truststore PEM: the issuing CAs first (in the order given), then the roots; no duplicates."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in dedupe([*issuing, *roots]))
