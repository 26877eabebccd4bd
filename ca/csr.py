"""Checking a certificate signing request sent by a machine.

The CSR proves possession of a key and carries its public key; nothing else in
it (subject, SANs, requested extensions) is trusted or used downstream.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ca.errors import CSRError
from ca.keys import KeyType, PublicKey, key_type_of

__all__ = ["MAX_CSR_BYTES", "CheckedCSR", "parse_csr"]

# A PEM CSR for an RSA-4096 key is under 2 KiB; anything far larger is not a CSR we want to parse.
MAX_CSR_BYTES: Final = 64 * 1024

_PEM_BLOCK = re.compile(
    rb"-----BEGIN (?P<label>[A-Z0-9 ]+)-----\r?\n(?P<body>[A-Za-z0-9+/=\s]*?)-----END (?P=label)-----"
)
_CSR_LABELS: Final = (b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
# Proof of possession with MD5 or SHA-1 is forgeable in principle; accept only what we sign with.
_ACCEPTED_HASHES: Final = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


@dataclass(frozen=True, slots=True)
class CheckedCSR:
    """A CSR whose signature verified and whose key type is allowed.

    ``der`` is the CSR exactly as sent (decoded from its PEM), ``sha256_hex`` its
    lowercase hex SHA-256 (what ``X-Issuer-CSR-SHA256`` binds), and
    ``public_key_sha256_hex`` the SHA-256 of the key's SubjectPublicKeyInfo DER.
    """

    public_key: PublicKey
    key_type: KeyType
    der: bytes
    sha256_hex: str
    public_key_sha256_hex: str


def parse_csr(pem: str | bytes, *, allowed_key_types: Collection[str]) -> CheckedCSR:
    """Check a PEM CSR and return its public key.

    Exactly one ``CERTIFICATE REQUEST`` PEM block is accepted (surrounding
    whitespace only). Raises :class:`CSRError` with code ``csr_malformed`` (not
    PEM, not a CSR, more than one, undecodable), ``key_type_unsupported``,
    ``csr_signature_invalid`` or ``key_type_not_allowed`` (a supported type not
    in ``allowed_key_types``), in that order of checking.
    """
    der = _single_pem_csr(pem)
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise CSRError(
            "The CSR could not be decoded; send a PKCS#10 certificate signing request in PEM",
            reason=f"CSR DER did not parse: {exc}",
        ) from None
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        # An algorithm cryptography cannot load (X448, explicit EC parameters, ...) is one we refuse too.
        raise CSRError(
            "The CSR's key could not be loaded; use ECDSA P-256 or P-384, or RSA 2048, 3072 or 4096",
            code="key_type_unsupported",
            reason=f"CSR public key did not load: {exc}",
        ) from None
    key_type = key_type_of(public_key, holder="this CSR")
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        # Unreachable: key_type_of refuses every other key; this narrows the type for what follows.
        raise CSRError("Unsupported key", code="key_type_unsupported")
    _check_signature(csr)
    if key_type not in allowed_key_types:
        allowed = ", ".join(sorted(allowed_key_types)) or "none"
        raise CSRError(
            f"Key type {key_type} is not allowed here; allowed key types: {allowed}",
            code="key_type_not_allowed",
        )
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return CheckedCSR(
        public_key=public_key,
        key_type=key_type,
        der=der,
        sha256_hex=hashlib.sha256(der).hexdigest(),
        public_key_sha256_hex=hashlib.sha256(spki).hexdigest(),
    )


def _single_pem_csr(pem: str | bytes) -> bytes:
    if isinstance(pem, str):
        try:
            data = pem.encode("ascii")
        except UnicodeEncodeError:
            raise CSRError("The CSR must be PEM text (ASCII only)") from None
    else:
        data = bytes(pem)
    if len(data) > MAX_CSR_BYTES:
        raise CSRError(f"The CSR is {len(data)} bytes; a PEM CSR is at most {MAX_CSR_BYTES} bytes")
    begins = data.count(b"-----BEGIN ")
    if begins == 0:
        raise CSRError(
            "The CSR must be PEM ('-----BEGIN CERTIFICATE REQUEST-----'); this is not PEM (DER or another encoding?)"
        )
    if begins > 1:
        raise CSRError(f"Send exactly one CSR; this input has {begins} PEM blocks")
    match = _PEM_BLOCK.search(data)
    if match is None or data[: match.start()].strip() or data[match.end() :].strip():
        raise CSRError("The CSR is not a well-formed PEM block (only the block itself may be sent)")
    label = match["label"]
    if label not in _CSR_LABELS:
        raise CSRError(
            f"Expected a certificate signing request (PEM 'CERTIFICATE REQUEST'), got a PEM '{label.decode('ascii')}'"
        )
    try:
        return base64.b64decode(b"".join(match["body"].split()), validate=True)
    except binascii.Error:
        raise CSRError("The CSR's PEM body is not valid base64") from None


def _check_signature(csr: x509.CertificateSigningRequest) -> None:
    try:
        algorithm = csr.signature_hash_algorithm
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm, InvalidSignature) as exc:
        raise CSRError(
            "The CSR's signature could not be checked; sign it with the request's own key using SHA-256",
            code="csr_signature_invalid",
            reason=f"CSR signature check failed: {exc}",
        ) from None
    # Ed25519 signs without a separate hash (algorithm is None); the others must use SHA-2.
    if algorithm is not None and not isinstance(algorithm, _ACCEPTED_HASHES):
        raise CSRError(
            f"The CSR is signed with {algorithm.name.upper()}; sign it with SHA-256 or stronger",
            code="csr_signature_invalid",
        )
    if not valid:
        raise CSRError(
            "The CSR's signature does not verify with its public key (was it modified, or signed with another key?)",
            code="csr_signature_invalid",
        )
