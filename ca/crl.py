"""Certificate revocation lists signed by the issuing CA.

API Gateway checks no CRL itself; the CRL is published for relying parties and
the Lambda authorizer's operators (``GET /v1/crl``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.profile import authority_key_id, utc_seconds

__all__ = ["MAX_CRL_NUMBER", "RevokedEntry", "crl_builder", "load_verified_crl"]

# RFC 5280 §5.2.3: a CRL number is at most 20 octets.
MAX_CRL_NUMBER = 2**159 - 1


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One revoked certificate: its serial, when it was revoked and, optionally, why."""

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None = None


def crl_builder(
    revoked: Sequence[RevokedEntry],
    *,
    issuer: x509.Certificate,
    now: datetime,
    next_update: datetime,
    crl_number: int,
) -> x509.CertificateRevocationListBuilder:
    """An unsigned CRL builder for ``issuer`` listing ``revoked``, with CRL number and AKI.

    Each entry carries a CRLReason extension when a reason is given, except
    ``unspecified`` (RFC 5280 §5.3.1: omit rather than say "unspecified").
    Raises ``ValueError`` on naive times, ``next_update`` not after ``now``, a CRL
    number out of range, a duplicate serial, or ``remove_from_crl`` (delta CRLs only).
    """
    this_update = utc_seconds(now, "now")
    next_update = utc_seconds(next_update, "next_update")
    if next_update <= this_update:
        raise ValueError("next_update must be after now")
    if not 0 <= crl_number <= MAX_CRL_NUMBER:
        raise ValueError(f"crl_number must be between 0 and 2**159-1, got {crl_number}")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(authority_key_id(issuer), critical=False)
    )
    seen: set[int] = set()
    for entry in revoked:
        if entry.serial in seen:
            raise ValueError(f"serial {entry.serial:x} is listed twice")
        seen.add(entry.serial)
        builder = builder.add_revoked_certificate(_revoked_certificate(entry))
    return builder


def _revoked_certificate(entry: RevokedEntry) -> x509.RevokedCertificate:
    if entry.reason is x509.ReasonFlags.remove_from_crl:
        raise ValueError("remove_from_crl is only meaningful in delta CRLs")
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(entry.serial)
        .revocation_date(utc_seconds(entry.revoked_at, "revoked_at"))
    )
    if entry.reason is not None and entry.reason is not x509.ReasonFlags.unspecified:
        builder = builder.add_extension(x509.CRLReason(entry.reason), critical=False)
    return builder.build()


def load_verified_crl(data: bytes, *, issuer: x509.Certificate) -> x509.CertificateRevocationList:
    """A CRL (DER, or PEM) read from elsewhere, checked to be ``issuer``'s: its issuer name and signature.

    For CRLs a backend publishes itself (AWS Private CA writes its CRL to S3). Raises
    ``ValueError`` saying what is wrong: not a CRL, another issuer's, a bad signature.
    """
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise ValueError(f"not a CRL ({exc})") from None
    if crl.issuer != issuer.subject:
        raise ValueError(f"a CRL of {crl.issuer.rfc4514_string()}, not of {issuer.subject.rfc4514_string()}")
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) or not crl.is_signature_valid(key):
        raise ValueError(f"its signature does not verify with {issuer.subject.rfc4514_string()}'s key")
    return crl
