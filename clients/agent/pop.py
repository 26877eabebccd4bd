"""Proofs of possession as compact JWS (RFC 7515): the renewal token, and the x509pop proof.

Both bind the same claims: ``aud`` (the issuer's server id), ``iat``, ``exp`` (iat + 120 s;
the issuer accepts at most 300), ``jti`` (random, single use) and ``csr_sha256`` (hex
SHA-256 of the *new* CSR's DER: a stolen proof gets no certificate for another key).

- The renewal token of ``POST /v1/renew`` is signed by the current key; its header carries
  the current leaf in ``x5c`` (standard base64 of the DER) and its claims ``sub`` (the
  current serial, lowercase hex). ``alg`` follows the key: P-256 → ES256, P-384 → ES384,
  RSA → RS256 (PKCS#1 v1.5, SHA-256).
- The proof of ``POST /v1/issue/x509pop`` is signed by the external certificate's key; the
  chain travels beside it in the body. ``alg`` also allows P-521 → ES512 and Ed25519 → EdDSA.

ECDSA signatures are raw ``r || s`` of fixed length (RFC 7518 §3.4), not DER. Pure: the
time and the ``jti`` are parameters.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Final, Literal, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from clients.errors import ConfigError
from clients.keys import PrivateKey
from clients.wire import POP_TOKEN_LIFETIME

__all__ = [
    "ExternalKey",
    "JwsAlgorithm",
    "b64url",
    "external_algorithm",
    "jws_algorithm",
    "new_jti",
    "possession_proof",
    "renewal_token",
]

JwsAlgorithm = Literal["ES256", "ES384", "ES512", "RS256", "EdDSA"]
# A key another CA certified: what an x509pop proof may be signed with (typing.Union: Python 3.9).
ExternalKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]
_EC_ALGORITHMS: Final[dict[str, JwsAlgorithm]] = {"secp256r1": "ES256", "secp384r1": "ES384"}
_EXTERNAL_EC_ALGORITHMS: Final[dict[str, JwsAlgorithm]] = {**_EC_ALGORITHMS, "secp521r1": "ES512"}


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_jti() -> str:
    """32 random URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def jws_algorithm(key: PrivateKey) -> JwsAlgorithm:
    """The JWS ``alg`` for ``key``; raise :class:`ConfigError` for a key the issuer would not accept."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    algorithm = _EC_ALGORITHMS.get(key.curve.name)
    if algorithm is None:
        raise ConfigError(
            f"cannot sign a renewal token with an EC {key.curve.name} key; use --auth mtls or bootstrap again",
            code="key_unsupported",
        )
    return algorithm


def external_algorithm(key: ExternalKey) -> JwsAlgorithm:
    """The JWS ``alg`` for an external certificate's key; :class:`ConfigError` for one the issuer would not accept."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    algorithm = _EXTERNAL_EC_ALGORITHMS.get(key.curve.name)
    if algorithm is None:
        raise ConfigError(f"cannot sign an x509pop proof with an EC {key.curve.name} key", code="key_unsupported")
    return algorithm


def renewal_token(
    *,
    key: PrivateKey,
    certificate: x509.Certificate,
    audience: str,
    csr_der: bytes,
    now: datetime,
    jti: str | None = None,
) -> str:
    """Return the compact JWS proving possession of ``key`` (which ``certificate`` certifies)
    for renewing with the CSR whose DER is ``csr_der``, for the issuer named ``audience``.

    Raises :class:`ConfigError` for a key type the issuer would not accept.
    """
    algorithm = jws_algorithm(key)
    header = {
        "alg": algorithm,
        "typ": "JWT",
        "x5c": [base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")],
    }
    claims = _claims(audience=audience, csr_der=csr_der, now=now, jti=jti)
    claims["sub"] = format(certificate.serial_number, "x")
    return _compact(key, algorithm, header, claims)


def possession_proof(*, key: ExternalKey, audience: str, csr_der: bytes, now: datetime, jti: str | None = None) -> str:
    """Return the x509pop proof: a compact JWS by the external ``key`` for the CSR whose DER is ``csr_der``,
    for the issuer named ``audience``. Raises :class:`ConfigError` for a key the issuer would not accept."""
    algorithm = external_algorithm(key)
    claims = _claims(audience=audience, csr_der=csr_der, now=now, jti=jti)
    return _compact(key, algorithm, {"alg": algorithm, "typ": "JWT"}, claims)


def _claims(*, audience: str, csr_der: bytes, now: datetime, jti: str | None) -> dict[str, object]:
    issued_at = int(now.timestamp())
    return {
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + POP_TOKEN_LIFETIME,
        "jti": jti or new_jti(),
        "csr_sha256": hashlib.sha256(csr_der).hexdigest(),
    }


def _compact(
    key: ExternalKey, algorithm: JwsAlgorithm, header: Mapping[str, object], claims: Mapping[str, object]
) -> str:
    signing_input = f"{_b64json(header)}.{_b64json(claims)}".encode("ascii")
    return f"{signing_input.decode('ascii')}.{b64url(_sign(key, algorithm, signing_input))}"


def _b64json(value: Mapping[str, object]) -> str:
    return b64url(json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def _sign(key: ExternalKey, algorithm: JwsAlgorithm, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    digest: hashes.HashAlgorithm = (
        hashes.SHA512() if algorithm == "ES512" else hashes.SHA384() if algorithm == "ES384" else hashes.SHA256()
    )
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")
