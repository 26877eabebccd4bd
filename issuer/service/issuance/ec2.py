"""The EC2 method: identity document → optional liveness check → trust-on-first-use binding.

The binding is unique per (account, instance) in the database, so two first
attestations racing on two replicas cannot both win; the loser gets
``ec2_binding_race`` (409) and may retry.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ca.csr import CheckedCSR
from issuer.attest.ec2 import Ec2Proof, InstanceIdentityDocument, identity_from_document, verify_instance_identity
from issuer.attest.ec2_certs import AwsCertStore
from issuer.attest.ec2_instance import InstanceLookup
from issuer.attest.identity import VerifiedIdentity
from issuer.errors import Conflict
from issuer.policy import BoundInstance, Role, check_instance, decide_binding
from issuer.service.issuance.model import AuditMethod
from issuer.service.issuance.pipeline import Claim
from issuer.store import bindings

__all__ = ["Ec2Method", "Ec2Submission", "LookupFactory", "check_live"]

# (assume_role template or None, region) -> the lookup to use
LookupFactory = Callable[[str | None, str], InstanceLookup]


async def check_live(lookups: LookupFactory, role: Role, identity: VerifiedIdentity) -> None:
    """Ask AWS about the instance ``identity`` names, through ``role``'s lookup, and apply the role to the answer.

    Raises the refusals of :func:`issuer.policy.check_instance` and ``ec2_lookup_unavailable`` (503).
    """
    region = identity.region or ""
    info = await lookups(role.assume_role, region).describe(
        account_id=identity.account_id or "", region=region, instance_id=identity.attributes.get("instance_id", "")
    )
    check_instance(info, identity=identity, role=role)


@dataclass(frozen=True, slots=True)
class Ec2Submission:
    """An identity document with its signature, and the nonce the instance was given (if any)."""

    proof: Ec2Proof
    nonce: str | None


@dataclass(frozen=True, slots=True)
class _State:
    doc: InstanceIdentityDocument
    given_nonce: str | None


class Ec2Method:
    """:class:`~issuer.service.issuance.pipeline.IssuanceMethod` for ``POST /v1/issue/aws-ec2``.

    Refusals: the attestation codes of :mod:`issuer.attest.ec2`, the liveness codes of
    :func:`issuer.policy.check_instance`, the binding codes of
    :func:`issuer.policy.decide_binding`, ``ec2_binding_race`` (409) and
    ``ec2_lookup_unavailable`` (503).
    """

    name: AuditMethod = "aws-ec2"
    role_from_request = True

    def __init__(
        self,
        *,
        certs: AwsCertStore,
        lookups: LookupFactory,
        fresh_nonce: Callable[[], str] = lambda: secrets.token_urlsafe(32),
    ) -> None:
        self._certs = certs
        self._lookups = lookups
        self._fresh_nonce = fresh_nonce

    def verify(self, proof: Ec2Submission, *, csr: CheckedCSR, role: Role | None, now: datetime) -> Claim[_State]:
        doc = verify_instance_identity(proof.proof, certs=self._certs)
        return Claim(state=_State(doc=doc, given_nonce=proof.nonce), identity=identity_from_document(doc), role=role)

    async def outbound(self, claim: Claim[_State], *, now: datetime) -> Claim[_State]:
        role, identity = claim.role, claim.identity
        assert role is not None
        assert identity is not None
        if role.check_instance:
            await check_live(self._lookups, role, identity)
        return claim

    async def admit(
        self, session: AsyncSession, claim: Claim[_State], *, request_id: str, now: datetime
    ) -> Claim[_State]:
        doc, role = claim.state.doc, claim.role
        assert role is not None
        bound = await bindings.lock_binding(session, account_id=doc.account_id, instance_id=doc.instance_id)
        decision = decide_binding(
            BoundInstance(nonce_hash=bound.nonce_hash, pending_time=bound.pending_time, bound_at=bound.created_at)
            if bound is not None
            else None,
            instance_id=doc.instance_id,
            pending_time=doc.pending_time,
            given_nonce=claim.state.given_nonce,
            allow_migration=role.allow_migration,
            fresh_nonce=self._fresh_nonce(),
        )
        if not decision.create:
            await bindings.update_binding(
                session,
                account_id=doc.account_id,
                instance_id=doc.instance_id,
                role=role.name,
                nonce_hash=decision.nonce_hash,
                pending_time=doc.pending_time,
                now=now,
            )
            return replace(claim, nonce=decision.returned_nonce)
        try:
            await bindings.create_binding(
                session,
                account_id=doc.account_id,
                instance_id=doc.instance_id,
                region=doc.region,
                role=role.name,
                nonce_hash=decision.nonce_hash,
                pending_time=doc.pending_time,
                now=now,
            )
        except IntegrityError as exc:
            raise Conflict(
                "Another attestation of this instance is in progress; try again.",
                code="ec2_binding_race",
                reason=f"instance binding insert lost a race: {exc.orig!r}",
            ) from None
        return replace(claim, nonce=decision.returned_nonce)

    async def signed(self, session: AsyncSession, claim: Claim[_State], *, serial: str, now: datetime) -> None:
        return None  # the binding names the instance, not a certificate
