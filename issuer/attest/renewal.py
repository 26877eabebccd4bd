"""Renewal proofs: the machine's current certificate vouches for its new key.

Two ways, both pure here:

- mutual TLS: the TLS handshake verified the client certificate (chained to a root);
  nothing more to check here than which of our issuers signed it (the registry does that);
- a proof-of-possession token: a compact JWS (RFC 7515) signed by the current key, the
  current certificate in ``x5c``::

      header  {"alg": "ES256" | "ES384" | "RS256", "typ": "JWT", "x5c": ["<base64 DER of the leaf>"]}
      claims  {"aud": "<server id>", "iat": <int>, "exp": <int, at most 300 s after iat>,
               "jti": "<unique, 16-128 URL-safe characters>",
               "csr_sha256": "<hex SHA-256 of the new CSR's DER>", "sub": "<serial hex>" (optional)}

  ``alg`` must be the certificate key's (P-256 → ES256, P-384 → ES384, RSA → RS256; never
  ``none``, never a MAC), the signature must verify with the ``x5c`` certificate's key, the
  token must be made for this service (``aud``), be unexpired (60 s clock skew allowed) and
  bound to this CSR. The ``jti`` is single use (the caller burns it).

Errors: ``Unauthorized`` with ``renew_token_invalid``, ``renew_token_expired``,
``renew_audience_mismatch``, ``renew_csr_mismatch``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from issuer.errors import Unauthorized

__all__ = ["MAX_TOKEN_LIFETIME", "RenewalToken", "verify_renewal_token"]

MAX_TOKEN_CHARS = 16 * 1024
MAX_TOKEN_LIFETIME = timedelta(minutes=5)
CLOCK_SKEW = timedelta(seconds=60)
_PART = re.compile(r"[A-Za-z0-9_-]+")
_JTI = re.compile(r"[A-Za-z0-9_-]{16,128}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEADER_KEYS = frozenset({"alg", "typ", "x5c", "kid"})
_ALGORITHMS = {
    "ES256": ("secp256r1", hashes.SHA256),
    "ES384": ("secp384r1", hashes.SHA384),
    "RS256": ("rsa", hashes.SHA256),
}


@dataclass(frozen=True, slots=True)
class RenewalToken:
    """A verified proof-of-possession token."""

    certificate: x509.Certificate
    jti: str
    expires_at: datetime


def _refuse(code: str, detail: str, reason: str) -> NoReturn:
    raise Unauthorized(detail, code=code, reason=f"{code}: {reason}")


def _invalid(reason: str) -> NoReturn:
    _refuse("renew_token_invalid", "The renewal token is not valid.", reason)


def _b64url(part: str, what: str) -> bytes:
    if not _PART.fullmatch(part):
        _invalid(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        _invalid(f"{what} is not base64url")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        _invalid(f"{what} is not JSON")
    if not isinstance(value, dict):
        _invalid(f"{what} is not a JSON object")
    return value


def verify_renewal_token(token: str, *, audience: str, csr_sha256_hex: str, now: datetime) -> RenewalToken:
    """Check ``token`` completely and return what it proves. Raises ``Unauthorized`` (see the module)."""
    if len(token) > MAX_TOKEN_CHARS:
        _invalid(f"token of {len(token)} characters")
    parts = token.split(".")
    if len(parts) != 3:
        _invalid(f"{len(parts)} parts, not 3")
    header = _json_object(_b64url(parts[0], "header"), "header")
    claims = _json_object(_b64url(parts[1], "payload"), "payload")
    signature = _b64url(parts[2], "signature")
    unknown = set(header) - _HEADER_KEYS
    if unknown:
        _invalid(f"header fields {sorted(unknown)[:5]} are not accepted (no crit, jwk, jku or x5u)")
    certificate = _certificate(header.get("x5c"))
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in _ALGORITHMS:
        _invalid(f"alg {str(algorithm)[:20]!r} is not ES256, ES384 or RS256")
    _verify_signature(certificate, algorithm, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)
    return _check_claims(claims, certificate, audience=audience, csr_sha256_hex=csr_sha256_hex, now=now)


def _certificate(x5c: object) -> x509.Certificate:
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= 3 or not all(isinstance(c, str) for c in x5c):
        _invalid("x5c must be a list of 1 to 3 base64 certificates")
    try:
        der = base64.b64decode(x5c[0], validate=True)
        return x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        _invalid("x5c[0] is not a base64 DER certificate")


def _verify_signature(certificate: x509.Certificate, algorithm: str, signing_input: bytes, signature: bytes) -> None:
    curve, hash_type = _ALGORITHMS[algorithm]
    key = certificate.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == curve:
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                _invalid(f"{algorithm} signature of {len(signature)} bytes, not {2 * size}")
            r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hash_type()))
        elif isinstance(key, rsa.RSAPublicKey) and curve == "rsa":
            key.verify(signature, signing_input, padding.PKCS1v15(), hash_type())
        else:
            _invalid(f"alg {algorithm} does not match the certificate's {type(key).__name__}")
    except InvalidSignature:
        _invalid("the signature does not verify with the x5c certificate's key")


def _seconds(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**40:
        _invalid("iat and exp must be integer seconds")
    return value


def _check_claims(
    claims: dict[str, Any], certificate: x509.Certificate, *, audience: str, csr_sha256_hex: str, now: datetime
) -> RenewalToken:
    iat, exp = _seconds(claims.get("iat")), _seconds(claims.get("exp"))
    issued, expires = datetime.fromtimestamp(iat, UTC), datetime.fromtimestamp(exp, UTC)
    if not timedelta(0) < expires - issued <= MAX_TOKEN_LIFETIME:
        _invalid(f"exp - iat is {exp - iat} s; at most {int(MAX_TOKEN_LIFETIME.total_seconds())} s")
    if now > expires + CLOCK_SKEW or issued > now + CLOCK_SKEW:
        _refuse(
            "renew_token_expired",
            "The renewal token has expired or is not yet valid: make a new one, and check the machine's clock.",
            f"iat {issued.isoformat()} exp {expires.isoformat()} now {now.isoformat()}",
        )
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        _refuse(
            "renew_audience_mismatch",
            "The renewal token was made for another service.",
            f"aud {str(aud)[:200]!r} != {audience!r}",
        )
    jti = claims.get("jti")
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        _invalid("jti must be 16 to 128 URL-safe characters")
    bound = claims.get("csr_sha256")
    if not isinstance(bound, str) or not _HEX64.fullmatch(bound):
        _invalid("csr_sha256 must be a hex SHA-256")
    if not hmac.compare_digest(bound.lower(), csr_sha256_hex.lower()):
        _refuse("renew_csr_mismatch", "The renewal token was made for another CSR.", f"{bound} != {csr_sha256_hex}")
    subject = claims.get("sub")
    if subject is not None and subject != format(certificate.serial_number, "x"):
        _invalid(f"sub {str(subject)[:80]!r} is not the x5c certificate's serial")
    return RenewalToken(certificate=certificate, jti=jti, expires_at=expires + CLOCK_SKEW)
