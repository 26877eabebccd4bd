"""Proofs of possession as compact JWS (RFC 7515): parse, verify with the key they prove, read the claims.

Two proofs use this: renewal tokens (:mod:`issuer.attest.renewal`, signed by the current
certificate's key) and x509pop proofs (:mod:`issuer.attest.x509pop`, signed by the external
certificate's key). Both bind the same claims::

    {"aud": "<server id>", "iat": <int>, "exp": <int, at most 300 s after iat>,
     "jti": "<unique, 16-128 URL-safe characters>", "csr_sha256": "<hex SHA-256 of the new CSR's DER>"}

The algorithm is the caller's to allow and must match the key (P-256 → ES256, P-384 →
ES384, P-521 → ES512, RSA of 2048 bits or more → RS*/PS*, Ed25519 → EdDSA); ``none`` and
MACs (HS*) are never accepted, whatever a caller allows. ECDSA signatures are raw
``r || s`` of fixed length (RFC 7518 §3.4). Pure: the time is a parameter.

Errors are :class:`JwsRefused` with a ``kind`` (``invalid``, ``expired``, ``audience``,
``csr``); each caller turns them into its own stable codes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["CLOCK_SKEW", "MAX_LIFETIME", "CompactJws", "JwsRefused", "Possession", "check_claims", "parse", "verify"]

MAX_LIFETIME = timedelta(minutes=5)
CLOCK_SKEW = timedelta(seconds=60)
MIN_RSA_BITS = 2048
_PART = re.compile(r"[A-Za-z0-9_-]+")
_JTI = re.compile(r"[A-Za-z0-9_-]{16,128}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
# Every algorithm this module can verify; a caller allows a subset.
ALGORITHMS = frozenset({*_CURVES, "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"})

Kind = Literal["invalid", "expired", "audience", "csr"]


class JwsRefused(Exception):
    """The proof is not acceptable; ``reason`` is for the log and the audit table only."""

    def __init__(self, kind: Kind, reason: str) -> None:
        super().__init__(reason)
        self.kind: Kind = kind
        self.reason = reason


def _invalid(reason: str) -> NoReturn:
    raise JwsRefused("invalid", reason)


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A parsed, not yet verified, compact JWS."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Possession:
    """What verified claims prove: a single-use ``jti``, replayable until ``replayable_until``."""

    jti: str
    issued_at: datetime
    replayable_until: datetime  # exp plus the clock skew allowed: how long its replay guard must live


def parse(token: str, *, header_keys: Collection[str], max_chars: int = 16 * 1024) -> CompactJws:
    """Split and decode ``token``; only ``header_keys`` may appear in the header (no ``crit``, ``jwk``, ...)."""
    if len(token) > max_chars:
        _invalid(f"token of {len(token)} characters")
    parts = token.split(".")
    if len(parts) != 3:
        _invalid(f"{len(parts)} parts, not 3")
    header = _json_object(_b64url(parts[0], "header"), "header")
    claims = _json_object(_b64url(parts[1], "payload"), "payload")
    signature = _b64url(parts[2], "signature")
    unknown = set(header) - set(header_keys)
    if unknown:
        _invalid(f"header fields {sorted(unknown)[:5]} are not accepted")
    return CompactJws(
        header=header, claims=claims, signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"), signature=signature
    )


def verify(jws: CompactJws, key: CertificatePublicKeyTypes, *, algorithms: Collection[str]) -> str:
    """Check that ``jws.header["alg"]`` is allowed, fits ``key``, and that the signature verifies; the alg."""
    algorithm = jws.header.get("alg")
    allowed = sorted(ALGORITHMS.intersection(algorithms))
    if not isinstance(algorithm, str) or algorithm not in allowed:
        _invalid(f"alg {str(algorithm)[:20]!r} is not one of {', '.join(allowed)}")
    try:
        if algorithm in _CURVES:
            _verify_ecdsa(jws, key, algorithm)
        elif algorithm[:2] in ("RS", "PS"):
            if not isinstance(key, rsa.RSAPublicKey):
                _invalid(f"alg {algorithm} does not match the key's {type(key).__name__}")
            if key.key_size < MIN_RSA_BITS:
                _invalid(f"RSA key of {key.key_size} bits")
            hash_type = _HASHES[algorithm[2:]]()
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if algorithm.startswith("RS")
                else padding.PSS(mgf=padding.MGF1(hash_type), salt_length=hash_type.digest_size)
            )
            key.verify(jws.signature, jws.signing_input, pad, hash_type)
        else:  # EdDSA
            if not isinstance(key, ed25519.Ed25519PublicKey):
                _invalid(f"alg {algorithm} does not match the key's {type(key).__name__}")
            key.verify(jws.signature, jws.signing_input)
    except InvalidSignature:
        _invalid("the signature does not verify with the certificate's key")
    return algorithm


def _verify_ecdsa(jws: CompactJws, key: CertificatePublicKeyTypes, algorithm: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _CURVES[algorithm]:
        _invalid(f"alg {algorithm} does not match the key's {type(key).__name__}")
    size = (key.curve.key_size + 7) // 8
    if len(jws.signature) != 2 * size:
        _invalid(f"{algorithm} signature of {len(jws.signature)} bytes, not {2 * size}")
    r, s = int.from_bytes(jws.signature[:size], "big"), int.from_bytes(jws.signature[size:], "big")
    key.verify(encode_dss_signature(r, s), jws.signing_input, ec.ECDSA(_HASHES[algorithm[2:]]()))


def check_claims(claims: dict[str, Any], *, audience: str, csr_sha256_hex: str, now: datetime) -> Possession:
    """The claims every proof of possession binds (see the module). Raises :class:`JwsRefused`."""
    iat, exp = _seconds(claims.get("iat")), _seconds(claims.get("exp"))
    issued, expires = datetime.fromtimestamp(iat, UTC), datetime.fromtimestamp(exp, UTC)
    if not timedelta(0) < expires - issued <= MAX_LIFETIME:
        _invalid(f"exp - iat is {exp - iat} s; at most {int(MAX_LIFETIME.total_seconds())} s")
    if now > expires + CLOCK_SKEW or issued > now + CLOCK_SKEW:
        raise JwsRefused("expired", f"iat {issued.isoformat()} exp {expires.isoformat()} now {now.isoformat()}")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise JwsRefused("audience", f"aud {str(aud)[:200]!r} != {audience!r}")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        _invalid("jti must be 16 to 128 URL-safe characters")
    bound = claims.get("csr_sha256")
    if not isinstance(bound, str) or not _HEX64.fullmatch(bound):
        _invalid("csr_sha256 must be a hex SHA-256")
    if not hmac.compare_digest(bound.lower(), csr_sha256_hex.lower()):
        raise JwsRefused("csr", f"{bound} != {csr_sha256_hex}")
    return Possession(jti=jti, issued_at=issued, replayable_until=expires + CLOCK_SKEW)


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


def _seconds(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**40:
        _invalid("iat and exp must be integer seconds")
    return value
