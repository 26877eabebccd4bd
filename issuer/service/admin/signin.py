"""Sign-in for operators: an IAM identity proven per request, and what ``[[admins]]`` lets it do.

No new secret: the operator's proof is an STS ``GetCallerIdentity`` request signed with the IAM
credentials they already have (SSO, a CI role, a user's keys), made for one admin request
(:mod:`issuer.attest.admin_proof`). Checked locally first, burnt (single use, across replicas)
before the one STS call, then STS says who signed it; the ``[[admins]]`` grants say what that
principal may do. Refusals::

    Unauthorized  401  the codes of validate_admin_proof, admin_proof_replayed, sts_rejected,
                       sts_arn_unrecognised
    Forbidden     403  not_an_admin          no [[admins]] table names this principal
                       permission_denied     the principal lacks the permission (the detail names it)
    UpstreamUnavailable 503 sts_unavailable
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from issuer.attest.admin_proof import validate_admin_proof
from issuer.attest.arn import canonicalise
from issuer.attest.sts import StsRequest
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.attest.sts_response import StsCaller
from issuer.errors import Forbidden, Unauthorized
from issuer.policy.admins import PERMISSIONS, AdminGrant, Permission, permissions_of
from issuer.service.issuance.guards import ReplayGuards

__all__ = ["Operator", "OperatorSignIn", "require"]


@dataclass(frozen=True, slots=True)
class Operator:
    """Who is acting and what they may do. ``actor`` goes to the audit trail: the ARN STS returned
    (a role session keeps its session name: an SSO user's e-mail), or ``local:user@host``."""

    actor: str
    permissions: frozenset[Permission]
    canonical_arn: str | None = None
    account_id: str | None = None
    user_id: str | None = None

    @classmethod
    def local(cls, actor: str) -> Operator:
        """The operator of a local command: whoever can reach the database can do everything."""
        return cls(actor=actor, permissions=frozenset(PERMISSIONS))


def require(operator: Operator, permission: Permission | None) -> None:
    """Raise :class:`Forbidden` ``permission_denied`` naming ``permission`` unless ``operator`` holds it."""
    if permission is not None and permission not in operator.permissions:
        held = ", ".join(sorted(operator.permissions)) or "none"
        raise Forbidden(
            f"{operator.actor} lacks the '{permission}' permission (it holds: {held}); "
            f"an [[admins]] table must grant '{permission}'",
            code="permission_denied",
            reason=f"permission_denied: needs {permission}, holds {held}",
            principal=operator.actor,
        )


class OperatorSignIn:
    """Turns an admin request's proof into an :class:`Operator`. Build one per process."""

    def __init__(
        self,
        *,
        grants: tuple[AdminGrant, ...],
        hosts: StsHostAllowlist,
        caller: StsCaller,
        server_id: str,
        guards: ReplayGuards,
    ) -> None:
        self._grants = grants
        self._hosts = hosts
        self._caller = caller
        self._server_id = server_id
        self._guards = guards

    async def sign_in(self, proof: StsRequest, *, digest: str, now: datetime) -> Operator:
        """The operator who signed ``proof`` for the request whose digest is ``digest``; see the module doc."""
        validated = validate_admin_proof(proof, server_id=self._server_id, digest=digest, hosts=self._hosts, now=now)
        fresh = await self._guards.burn(
            kind="admin", digest=validated.signature_hash, expires_at=validated.expires_at, now=now
        )
        if not fresh:
            raise Unauthorized(
                "This proof has been used already; every admin request needs a new one.",
                code="admin_proof_replayed",
                reason=f"admin proof signature sha256 {validated.signature_hash} seen before",
            )
        caller = await self._caller.get_caller_identity(validated)
        principal = canonicalise(caller.arn)
        if principal.account_id != caller.account_id:
            raise Unauthorized(
                "STS returned a caller this service does not recognise",
                code="sts_arn_unrecognised",
                reason=f"ARN account {principal.account_id} != Account {caller.account_id}",
            )
        granted = permissions_of(self._grants, (caller.arn, principal.canonical_arn))
        if not granted:
            raise Forbidden(
                f"{caller.arn} is not an operator of this service (no [[admins]] table names it)",
                code="not_an_admin",
                reason=f"not_an_admin: {caller.arn} (canonical {principal.canonical_arn})",
                principal=caller.arn,
            )
        return Operator(
            actor=caller.arn,
            permissions=granted,
            canonical_arn=principal.canonical_arn,
            account_id=caller.account_id,
            user_id=caller.user_id,
        )
