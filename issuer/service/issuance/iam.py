"""The IAM method: a signed STS GetCallerIdentity request → burnt → STS → the caller's identity.

Every part of the untrusted request is validated locally first
(:func:`issuer.attest.sts.validate_sts_request`); the signature is then burnt in
its own committed transaction before the one outbound call, so a signed request is
single-use whether or not the issuance then succeeds, and a replay never reaches STS.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from ca.csr import CheckedCSR
from issuer.attest.arn import identity_from_caller
from issuer.attest.sts import StsRequest, ValidatedStsRequest, validate_sts_request
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.attest.sts_response import StsCaller
from issuer.errors import Unauthorized
from issuer.policy import Role
from issuer.service.issuance.guards import ReplayGuards
from issuer.service.issuance.model import AuditMethod
from issuer.service.issuance.pipeline import Claim

__all__ = ["IamMethod"]


class IamMethod:
    """:class:`~issuer.service.issuance.pipeline.IssuanceMethod` for ``POST /v1/issue/aws-iam``.

    Refusals: the codes of :func:`~issuer.attest.sts.validate_sts_request`,
    ``sts_replayed``, ``sts_rejected`` (401), ``sts_arn_unrecognised`` and ``sts_unavailable`` (503).
    """

    name: AuditMethod = "aws-iam"
    role_from_request = True

    def __init__(self, *, hosts: StsHostAllowlist, caller: StsCaller, server_id: str, guards: ReplayGuards) -> None:
        self._hosts = hosts
        self._caller = caller
        self._server_id = server_id
        self._guards = guards

    def verify(
        self, proof: StsRequest, *, csr: CheckedCSR, role: Role | None, now: datetime
    ) -> Claim[ValidatedStsRequest]:
        assert role is not None
        validated = validate_sts_request(
            proof,
            server_id=self._server_id,
            csr_sha256_hex=csr.sha256_hex,
            require_csr_binding=role.require_csr_binding,
            hosts=self._hosts,
            now=now,
        )
        return Claim(state=validated, role=role)

    async def outbound(self, claim: Claim[ValidatedStsRequest], *, now: datetime) -> Claim[ValidatedStsRequest]:
        validated = claim.state
        fresh = await self._guards.burn(
            kind="sts", digest=validated.signature_hash, expires_at=validated.expires_at, now=now
        )
        if not fresh:
            raise Unauthorized(
                "This signed request has been used already; sign a new one.",
                code="sts_replayed",
                reason=f"signature sha256 {validated.signature_hash} seen before",
            )
        caller = await self._caller.get_caller_identity(validated)
        return replace(claim, identity=identity_from_caller(caller))

    async def admit(
        self,
        session: AsyncSession,
        claim: Claim[ValidatedStsRequest],
        *,
        request_id: str,
        now: datetime,
    ) -> Claim[ValidatedStsRequest]:
        return claim

    async def signed(
        self, session: AsyncSession, claim: Claim[ValidatedStsRequest], *, serial: str, now: datetime
    ) -> None:
        return None
