"""Trust on first use for EC2 instances: the pure decision over an instance's binding.

An identity document never expires, so replay protection is ours. The first
successful attestation of an instance binds it to a nonce (the client's, or one
generated and returned once) and its ``pendingTime``. Later attestations must
present that nonce — unless the role allows migration and ``pendingTime`` is
strictly newer (the instance was stopped and started). An older ``pendingTime``
is always refused. Randomness is a parameter: the caller passes a fresh nonce in.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

from issuer.errors import Unauthorized
from issuer.hashing import hash_secret

__all__ = ["BindingDecision", "BoundInstance", "decide_binding"]


@dataclass(frozen=True, slots=True)
class BoundInstance:
    """What the store knows of an instance that attested before."""

    nonce_hash: str
    pending_time: datetime
    bound_at: datetime


@dataclass(frozen=True, slots=True)
class BindingDecision:
    """Create or update the binding with ``nonce_hash``; ``returned_nonce`` goes to the client once."""

    create: bool
    nonce_hash: str
    returned_nonce: str | None


def decide_binding(
    bound: BoundInstance | None,
    *,
    instance_id: str,
    pending_time: datetime,
    given_nonce: str | None,
    allow_migration: bool,
    fresh_nonce: str,
) -> BindingDecision:
    """Decide the binding for an attestation of ``instance_id``.

    Raises :class:`Unauthorized` ``ec2_pending_time_older``, ``ec2_nonce_required``
    or ``ec2_nonce_mismatch``.
    """
    if bound is None:
        nonce = given_nonce or fresh_nonce
        return BindingDecision(
            create=True, nonce_hash=hash_secret(nonce), returned_nonce=None if given_nonce else nonce
        )
    if pending_time < bound.pending_time:
        raise Unauthorized(
            "This identity document is older than one already seen for the instance.",
            code="ec2_pending_time_older",
            reason=f"pendingTime {pending_time.isoformat()} < bound {bound.pending_time.isoformat()}",
        )
    if given_nonce is not None and hmac.compare_digest(bound.nonce_hash, hash_secret(given_nonce)):
        return BindingDecision(create=False, nonce_hash=bound.nonce_hash, returned_nonce=None)
    if allow_migration and pending_time > bound.pending_time:
        nonce = given_nonce or fresh_nonce
        return BindingDecision(
            create=False, nonce_hash=hash_secret(nonce), returned_nonce=None if given_nonce else nonce
        )
    if given_nonce is None:
        raise Unauthorized(
            "This instance has attested before; send the nonce it was given.",
            code="ec2_nonce_required",
            reason=f"instance {instance_id} bound at {bound.bound_at.isoformat()}, no nonce sent",
        )
    raise Unauthorized(
        "The nonce does not match the one this instance was given.",
        code="ec2_nonce_mismatch",
        reason=f"instance {instance_id}: wrong nonce",
    )
