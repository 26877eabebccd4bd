"""The IAM method: a signed STS GetCallerIdentity request → burnt → STS → the caller's identity.

Every part of the untrusted request is validated locally first
(:func:`issuer.attest.sts.validate_sts_request`); the signature is then burnt in
its own committed transaction before the one outbound call, so a signed request is
single-use whether or not the issuance then succeeds, and a replay never reaches STS.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ca.csr import CheckedCSR
from issuer.attest.arn import identity_from_caller
from issuer.attest.sts import StsRequest, ValidatedStsRequest, validate_sts_request
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.attest.sts_response import StsCaller
from issuer.attest.sts_wire import VAULT_FIELDS, parse_sts_request
from issuer.errors import Unauthorized
from issuer.policy import Role
from issuer.policy.iam import AWS_IAM
from issuer.service.issuance.entry import MethodEntry, Resources, Transport
from issuer.service.issuance.guards import ReplayGuards
from issuer.service.issuance.phases import Claimed, Identified, Verified, requested_role

__all__ = ["METHOD", "IamMethod"]


class IamMethod:
    """:class:`~issuer.service.issuance.phases.IssuanceMethod` for ``POST /v1/issue/aws-iam``.

    Refusals: the codes of :func:`~issuer.attest.sts.validate_sts_request`,
    ``sts_replayed``, ``sts_rejected`` (401), ``sts_arn_unrecognised`` and ``sts_unavailable`` (503).
    """

    name = AWS_IAM.method
    role_from_request = True

    def __init__(self, *, hosts: StsHostAllowlist, caller: StsCaller, server_id: str, guards: ReplayGuards) -> None:
        self._hosts = hosts
        self._caller = caller
        self._server_id = server_id
        self._guards = guards

    def verify(
        self, proof: StsRequest, *, csr: CheckedCSR, role: Role | None, now: datetime
    ) -> Verified[ValidatedStsRequest]:
        named = requested_role(role)
        validated = validate_sts_request(
            proof,
            server_id=self._server_id,
            csr_sha256_hex=csr.sha256_hex,
            require_csr_binding=AWS_IAM.of(named).require_csr_binding,
            hosts=self._hosts,
            now=now,
        )
        return Verified(state=validated, role=named)

    async def identify(
        self,
        verified: Verified[ValidatedStsRequest],
        *,
        transaction: AsyncSession,
        request_id: str,
        now: datetime,
    ) -> Identified[ValidatedStsRequest]:
        validated = verified.state
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
        return Identified(state=validated, identity=identity_from_caller(caller), role=requested_role(verified.role))

    async def check_upstream(self, identified: Identified[ValidatedStsRequest], *, now: datetime) -> None:
        return None

    async def claim_in_transaction(
        self,
        transaction: AsyncSession,
        identified: Identified[ValidatedStsRequest],
        *,
        request_id: str,
        now: datetime,
    ) -> Claimed:
        return Claimed()


def read_proof(body: Mapping[str, Any], transport: Transport) -> StsRequest:
    """``{"sts_request"}`` or Vault's ``iam_*`` fields (:func:`issuer.attest.sts_wire.parse_sts_request`)."""
    return parse_sts_request(body)


def _build(resources: Resources) -> IamMethod:
    return IamMethod(
        hosts=resources.sts_hosts,
        caller=resources.sts_caller,
        server_id=resources.settings.audience,
        guards=resources.guards,
    )


METHOD = MethodEntry(
    name=AWS_IAM.method,
    route="/v1/issue/aws-iam",
    fields=frozenset({"sts_request", *VAULT_FIELDS}),
    read_proof=read_proof,
    build=_build,
    rules=AWS_IAM,
)
