"""The join-token method: the token's record names the machine and the role; using it consumes it.

On Postgres the token's record is read first (with the deny list, one round trip; a bad token
is refused there and costs no signature), and consumed by the statement that records the
certificate (:data:`~issuer.store.tokens.CONSUME_STEP`): a refused request never spends it, and
of two requests racing with one token exactly one gets a certificate. Elsewhere (SQLite) the
token is consumed while identifying, by one conditional UPDATE in the issuance's transaction,
rolled back with any refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ca.csr import CheckedCSR
from issuer.attest.identity import VerifiedIdentity
from issuer.attest.token import TokenProof
from issuer.errors import Unauthorized
from issuer.policy import Role
from issuer.policy.token import TOKEN
from issuer.service.issuance.entry import MethodEntry, Transport
from issuer.service.issuance.phases import Claimed, ClaimStep, Identified, Peeked, Verified
from issuer.service.issuance.roles import RoleBook
from issuer.service.issuance.wire import required_text
from issuer.store import tokens
from issuer.store.records import TokenRecord

__all__ = ["METHOD", "TokenMethod"]


class TokenMethod:
    """:class:`~issuer.service.issuance.phases.IssuanceMethod` for ``POST /v1/issue/token``.

    Refusals: ``token_invalid``, ``token_used``, ``token_revoked``, ``token_expired`` (401).
    """

    name = TOKEN.method
    role_from_request = False

    def __init__(self, roles: RoleBook) -> None:
        self._roles = roles

    def verify(self, proof: TokenProof, *, csr: CheckedCSR, role: Role | None, now: datetime) -> Verified[TokenProof]:
        if not proof.well_formed:
            raise Unauthorized("The join token is not valid.", code="token_invalid", reason="malformed token")
        return Verified(state=proof)

    async def identify(
        self, verified: Verified[TokenProof], *, transaction: AsyncSession, request_id: str, now: datetime
    ) -> Identified[TokenProof]:
        token_hash = verified.state.token_hash
        row = await tokens.consume_join_token(transaction, token_hash=token_hash, now=now, request_id=request_id)
        if row is None:
            raise await _refusal(transaction, token_hash)
        return self._identified(verified, row)

    async def peek(self, verified: Verified[TokenProof], *, session: AsyncSession, now: datetime) -> Peeked[TokenProof]:
        token_hash = verified.state.token_hash
        row, denials = await tokens.peek_join_token(session, token_hash=token_hash, now=now)
        if row is None or row.used_at is not None or row.revoked_at is not None or row.expires_at <= now:
            raise _refused(row)
        return Peeked(identified=self._identified(verified, row), denials=denials)

    def asks_upstream(self, identified: Identified[TokenProof]) -> bool:
        return False

    def claim_step(self, identified: Identified[TokenProof], *, now: datetime) -> ClaimStep:
        return ClaimStep(sql=tokens.CONSUME_STEP, params={"c_hash": identified.state.token_hash})

    async def claim_refused(self, identified: Identified[TokenProof], *, session: AsyncSession) -> Exception:
        return await _refusal(session, identified.state.token_hash)  # used, revoked or expired meanwhile

    def _identified(self, verified: Verified[TokenProof], row: TokenRecord) -> Identified[TokenProof]:
        role = self._roles.get(row.role, method=self.name)
        identity = VerifiedIdentity(
            method=self.name, principal=row.name, attributes=MappingProxyType({"name": row.name})
        )
        return Identified(state=verified.state, identity=identity, role=role)

    async def check_upstream(self, identified: Identified[TokenProof], *, now: datetime) -> None:
        return None

    async def claim_in_transaction(
        self, transaction: AsyncSession, identified: Identified[TokenProof], *, request_id: str, now: datetime
    ) -> Claimed:
        return Claimed()  # consumed while identifying


async def _refusal(session: AsyncSession, token_hash: str) -> Unauthorized:
    return _refused(await tokens.find_join_token(session, token_hash=token_hash))


def _refused(row: TokenRecord | None) -> Unauthorized:
    """Why a token with this record (None: no such token) cannot be used."""
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


def read_proof(body: Mapping[str, Any], transport: Transport) -> TokenProof:
    """``{"token"}``."""
    return TokenProof(token=required_text(body, "token", max_len=256))


METHOD = MethodEntry(
    name=TOKEN.method,
    route="/v1/issue/token",
    fields=frozenset({"token"}),
    read_proof=read_proof,
    build=lambda resources: TokenMethod(resources.roles),
    rules=TOKEN,
)
