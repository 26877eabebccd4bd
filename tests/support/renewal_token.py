"""Proof-of-possession tokens for ``POST /v1/renew``, built here independently of the agent,
with every knob a refusal test needs (another alg, another key, other claims)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.support.x509_check import csr_sha256


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def default_alg(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return "ES384" if key.curve.name == "secp384r1" else "ES256"


def sign(key: Any, alg: str, data: bytes) -> bytes:
    if alg == "none":
        return b""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    hash_type = hashes.SHA384() if alg == "ES384" else hashes.SHA256()
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_type)))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def renewal_token(
    key: Any,
    certificate: x509.Certificate,
    *,
    csr_pem: str,
    audience: str,
    now: float | None = None,
    lifetime: int = 120,
    alg: str | None = None,
    signing_key: Any = None,
    **overrides: Any,
) -> str:
    """A token for ``certificate`` signed by ``key`` (or ``signing_key``); ``overrides`` replace claims
    (a value of None removes the claim) or, prefixed ``header_``, header fields."""
    issued = int(now if now is not None else time.time())
    header: dict[str, Any] = {
        "alg": alg or default_alg(key),
        "typ": "JWT",
        "x5c": [base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()],
    }
    claims: dict[str, Any] = {
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": secrets.token_urlsafe(24),
        "csr_sha256": csr_sha256(csr_pem),
        "sub": format(certificate.serial_number, "x"),
    }
    for name, value in overrides.items():
        target, field = (header, name.removeprefix("header_")) if name.startswith("header_") else (claims, name)
        if value is None:
            target.pop(field, None)
        else:
            target[field] = value
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = sign(signing_key or key, header["alg"], signing_input.encode())
    return f"{signing_input}.{b64url(signature)}"
