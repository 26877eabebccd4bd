"""Whether a certificate may be renewed: the pure rules over the certificate being replaced.

Renewal keeps the identity and the role and needs a new key — one this identity has never
had a certificate for (a key from two renewals back may have leaked). A revoked or
superseded certificate never renews; an expired one only within the role's
``renew_grace``; and a renewal chain may run at most ``max_renewal_age`` from the
machine's last attestation, after which it must attest again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from issuer.errors import ClientError, Forbidden, Unauthorized
from issuer.policy.roles import Role

__all__ = ["PriorCertificate", "check_renewal", "status_refusal"]


@dataclass(frozen=True, slots=True)
class PriorCertificate:
    """The certificate a renewal replaces, as recorded."""

    id: int
    serial: str
    role: str
    status: str  # active | revoked | superseded
    not_after: datetime
    chain_started_at: datetime
    public_key_sha256: str
    # Key hashes of the identity's earlier certificates that the new key must not be (the caller
    # looks up the new key's hash among them, so this holds it or nothing).
    earlier_keys: frozenset[str] = field(default_factory=frozenset)


def check_renewal(prior: PriorCertificate, role: Role, *, public_key_sha256: str, now: datetime) -> None:
    """Raise unless ``prior`` may be replaced by a certificate for the key hashed as ``public_key_sha256``.

    Codes: ``certificate_revoked``, ``certificate_superseded``, ``certificate_expired`` (401),
    ``renewal_chain_too_old`` (403), ``renew_same_key``, ``renew_key_reused`` (400).
    """
    if prior.status in ("revoked", "superseded"):
        raise status_refusal(prior.serial, prior.status)
    if now > prior.not_after + role.renew_grace:
        raise Unauthorized(
            "The certificate has expired; attest again.",
            code="certificate_expired",
            reason=f"serial {prior.serial} expired at {prior.not_after.isoformat()} (renew_grace {role.renew_grace})",
        )
    if role.max_renewal_age is not None and now - prior.chain_started_at > role.max_renewal_age:
        raise Forbidden(
            "This machine has renewed for as long as its role allows; attest again.",
            code="renewal_chain_too_old",
            reason=f"chain started {prior.chain_started_at.isoformat()}, max_renewal_age {role.max_renewal_age}",
        )
    if public_key_sha256 == prior.public_key_sha256:
        raise ClientError("A renewal needs a new key; generate one for the CSR.", code="renew_same_key")
    if public_key_sha256 in prior.earlier_keys:
        raise ClientError(
            "This machine had a certificate for this key before; a renewal needs a key it never used.",
            code="renew_key_reused",
            reason=f"public key sha256 {public_key_sha256} was in an earlier certificate of this identity",
        )


def status_refusal(serial: str, status: str) -> Unauthorized:
    """Why the certificate ``serial`` in ``status`` cannot renew: ``certificate_revoked`` when revoked,
    otherwise ``certificate_superseded`` (renewed already, or gone)."""
    if status == "revoked":
        return Unauthorized(
            "The certificate has been revoked; attest again.",
            code="certificate_revoked",
            reason=f"serial {serial} is revoked",
        )
    return Unauthorized(
        "The certificate has been renewed already; renew its successor.",
        code="certificate_superseded",
        reason=f"serial {serial} is {status}",
    )
