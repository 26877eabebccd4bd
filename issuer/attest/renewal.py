"""Renewal proofs: the machine's current certificate vouches for its new key.

Two ways, both pure here:

- mutual TLS: the TLS handshake verified the client certificate (chained to a root);
  nothing more to check here than which of our issuers signed it (the registry does that);
- a proof-of-possession token: a compact JWS (:mod:`issuer.attest.jws`) signed by the
  current key, the current certificate in ``x5c``::

      header  {"alg": "ES256" | "ES384" | "RS256", "typ": "JWT", "x5c": ["<base64 DER of the leaf>"]}
      claims  {"aud", "iat", "exp", "jti", "csr_sha256"} (see issuer.attest.jws), "sub": "<serial hex>" (optional)

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
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from issuer.attest import jws
from issuer.errors import Unauthorized

__all__ = ["MAX_TOKEN_LIFETIME", "RenewalToken", "verify_renewal_token"]

MAX_TOKEN_LIFETIME = jws.MAX_LIFETIME
_HEADER_KEYS = frozenset({"alg", "typ", "x5c", "kid"})
# What the agent makes (clients/agent/pop.py); nothing else is needed for our own leaves.
_ALGORITHMS = frozenset({"ES256", "ES384", "RS256"})
_REFUSALS: dict[jws.Kind, tuple[str, str]] = {
    "invalid": ("renew_token_invalid", "The renewal token is not valid."),
    "expired": (
        "renew_token_expired",
        "The renewal token has expired or is not yet valid: make a new one, and check the machine's clock.",
    ),
    "audience": ("renew_audience_mismatch", "The renewal token was made for another service."),
    "csr": ("renew_csr_mismatch", "The renewal token was made for another CSR."),
}


@dataclass(frozen=True, slots=True)
class RenewalToken:
    """A verified proof-of-possession token."""

    certificate: x509.Certificate
    jti: str
    expires_at: datetime


def verify_renewal_token(token: str, *, audience: str, csr_sha256_hex: str, now: datetime) -> RenewalToken:
    """Check ``token`` completely and return what it proves. Raises ``Unauthorized`` (see the module)."""
    try:
        parsed = jws.parse(token, header_keys=_HEADER_KEYS)
        certificate = _certificate(parsed.header.get("x5c"))
        jws.verify(parsed, certificate.public_key(), algorithms=_ALGORITHMS)
        possession = jws.check_claims(parsed.claims, audience=audience, csr_sha256_hex=csr_sha256_hex, now=now)
        subject = parsed.claims.get("sub")
        if subject is not None and subject != format(certificate.serial_number, "x"):
            raise jws.JwsRefused("invalid", f"sub {str(subject)[:80]!r} is not the x5c certificate's serial")
    except jws.JwsRefused as refused:
        code, detail = _REFUSALS[refused.kind]
        raise Unauthorized(detail, code=code, reason=f"{code}: {refused.reason}") from None
    return RenewalToken(certificate=certificate, jti=possession.jti, expires_at=possession.replayable_until)


def _certificate(x5c: object) -> x509.Certificate:
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= 3 or not all(isinstance(c, str) for c in x5c):
        raise jws.JwsRefused("invalid", "x5c must be a list of 1 to 3 base64 certificates")
    try:
        return x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except (binascii.Error, ValueError):
        raise jws.JwsRefused("invalid", "x5c[0] is not a base64 DER certificate") from None
