"""The join-token method: the token's record names the machine and the role; using it consumes it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from types import MappingProxyType

from sqlalchemy.ext.asyncio import AsyncSession

from ca.csr import CheckedCSR
from issuer.attest.identity import VerifiedIdentity
from issuer.attest.token import TokenProof
from issuer.errors import Unauthorized
from issuer.policy import Role
from issuer.service.issuance.model import AuditMethod
from issuer.service.issuance.pipeline import Claim
from issuer.service.issuance.roles import RoleBook
from issuer.store import tokens

__all__ = ["TokenMethod"]


class TokenMethod:
    """:class:`~issuer.service.issuance.pipeline.IssuanceMethod` for ``POST /v1/issue/token``.

    Refusals: ``token_invalid``, ``token_used``, ``token_revoked``, ``token_expired`` (401). A refused
    request does not consume the token (its transaction rolls back).
    """

    name: AuditMethod = "token"
    role_from_request = False

    def __init__(self, roles: RoleBook) -> None:
        self._roles = roles

    def verify(self, proof: TokenProof, *, csr: CheckedCSR, role: Role | None, now: datetime) -> Claim[TokenProof]:
        if not proof.well_formed:
            raise Unauthorized("The join token is not valid.", code="token_invalid", reason="malformed token")
        return Claim(state=proof)

    async def outbound(self, claim: Claim[TokenProof], *, now: datetime) -> Claim[TokenProof]:
        return claim

    async def admit(
        self, session: AsyncSession, claim: Claim[TokenProof], *, request_id: str, now: datetime
    ) -> Claim[TokenProof]:
        token_hash = claim.state.token_hash
        row = await tokens.consume_join_token(session, token_hash=token_hash, now=now, request_id=request_id)
        if row is None:
            raise await _refusal(session, token_hash)
        role = self._roles.get(row.role, method="token")
        identity = VerifiedIdentity(method="token", principal=row.name, attributes=MappingProxyType({"name": row.name}))
        return replace(claim, identity=identity, role=role)

    async def signed(self, session: AsyncSession, claim: Claim[TokenProof], *, serial: str, now: datetime) -> None:
        # The token was consumed before signing (it names the machine); which certificate it became is known now.
        await tokens.link_certificate(session, token_hash=claim.state.token_hash, certificate_serial=serial)


async def _refusal(session: AsyncSession, token_hash: str) -> Unauthorized:
    row = await tokens.find_join_token(session, token_hash=token_hash)
    if row is None:
        return Unauthorized("The join token is not valid.", code="token_invalid")
    if row.used_at is not None:
        return Unauthorized(
            "The join token has been used already.",
            code="token_used",
            reason=f"token {row.name!r} used at {row.used_at.isoformat()} by request {row.used_by_request_id}",
            principal=row.name,
            role=row.role,
        )
    if row.revoked_at is not None:
        return Unauthorized(
            "The join token has been revoked.",
            code="token_revoked",
            reason=f"token {row.name!r} revoked at {row.revoked_at.isoformat()}",
            principal=row.name,
            role=row.role,
        )
    return Unauthorized(
        "The join token has expired.",
        code="token_expired",
        reason=f"token {row.name!r} expired at {row.expires_at.isoformat()}",
        principal=row.name,
        role=row.role,
    )
