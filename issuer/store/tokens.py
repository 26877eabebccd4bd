"""Join tokens: stored hashed, consumed once by one conditional UPDATE."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import JoinToken
from issuer.store.records import TokenRecord, record_of

__all__ = ["add_join_token", "consume_join_token", "find_join_token", "list_join_tokens", "revoke_join_token"]


async def add_join_token(
    session: AsyncSession, *, token_hash: str, name: str, role: str, now: datetime, expires_at: datetime
) -> None:
    await session.execute(
        insert(JoinToken).values(token_hash=token_hash, name=name, role=role, created_at=now, expires_at=expires_at)
    )


async def consume_join_token(
    session: AsyncSession, *, token_hash: str, now: datetime, request_id: str, certificate_serial: str
) -> TokenRecord | None:
    """Mark the token used (by ``certificate_serial``) if it is unused and unexpired; the record, or None.

    One conditional UPDATE: under concurrent use the database lets exactly one
    transaction see the row unused; the others find ``used_at`` set (Postgres
    re-checks the WHERE clause after the winner commits).
    """
    result = await session.execute(
        update(JoinToken)
        .where(JoinToken.token_hash == token_hash, JoinToken.used_at.is_(None), JoinToken.expires_at > now)
        .values(used_at=now, used_by_request_id=request_id, certificate_serial=certificate_serial)
        .returning(JoinToken)
        .execution_options(synchronize_session=False)
    )
    row = result.scalar_one_or_none()
    return None if row is None else record_of(TokenRecord, row)


async def find_join_token(session: AsyncSession, *, token_hash: str) -> TokenRecord | None:
    row = await session.scalar(select(JoinToken).where(JoinToken.token_hash == token_hash))
    return None if row is None else record_of(TokenRecord, row)


async def list_join_tokens(session: AsyncSession, *, include_used: bool = False) -> Sequence[TokenRecord]:
    query = select(JoinToken)
    if not include_used:
        query = query.where(JoinToken.used_at.is_(None))
    rows = (await session.scalars(query.order_by(JoinToken.id.desc()))).all()
    return [record_of(TokenRecord, r) for r in rows]


async def revoke_join_token(session: AsyncSession, *, name: str, now: datetime) -> int:
    """Expire every unused token named ``name`` at ``now``; how many were revoked."""
    result = await session.execute(
        update(JoinToken)
        .where(JoinToken.name == name, JoinToken.used_at.is_(None), JoinToken.expires_at > now)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
