"""The machine's key and its certificate signing request.

The key is generated here and never leaves the machine. The CSR proves
possession of it; the issuer trusts nothing else in the CSR (the subject is a
hint for people reading logs, e.g. the hostname).
"""

from __future__ import annotations

import socket
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from clients.errors import UsageError
from clients.wire import KEY_TYPES, KeyType

__all__ = [
    "PrivateKey",
    "build_csr",
    "csr_der",
    "csr_pem",
    "generate_private_key",
    "hostname_hint",
    "key_type_of",
    "private_key_pem",
    "same_public_key",
]

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]

_CURVES: dict[KeyType, ec.EllipticCurve] = {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}
_RSA_BITS: dict[KeyType, int] = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}
_CN_MAX = 64  # ub-common-name (RFC 5280)


def generate_private_key(key_type: KeyType) -> PrivateKey:
    """Return a fresh private key of ``key_type``; raise :class:`UsageError` for an unknown type."""
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type])
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    raise UsageError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}", code="key_type_unknown")


def key_type_of(key: PrivateKey) -> KeyType | None:
    """The :data:`KeyType` name of ``key`` (e.g. ``ec-p256``), or None for a key the agent would not make."""
    for name, curve in _CURVES.items():
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == curve.name:
            return name
    for name, bits in _RSA_BITS.items():
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size == bits:
            return name
    return None


def build_csr(key: PrivateKey, *, common_name: str | None) -> x509.CertificateSigningRequest:
    """Return a CSR for ``key`` whose subject is ``CN=<common_name>`` (empty when None or blank)."""
    name: list[x509.NameAttribute[str]] = []
    if common_name and common_name.strip():
        name.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name.strip()[:_CN_MAX]))
    # SHA-384 for P-384 keeps the signature as strong as the key; SHA-256 elsewhere.
    digest: hashes.SHA256 | hashes.SHA384 = hashes.SHA256()
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        digest = hashes.SHA384()
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name(name)).sign(key, digest)


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file's 0600 mode is its protection (servers read it unattended)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def same_public_key(certificate: x509.Certificate, key: PrivateKey) -> bool:
    """True when ``certificate`` certifies ``key`` (compared as SubjectPublicKeyInfo DER)."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def hostname_hint() -> str | None:
    """This machine's hostname, for the CSR subject (a hint only); None when unknown."""
    try:
        name = socket.gethostname()
    except OSError:
        return None
    return name or None
