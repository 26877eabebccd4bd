"""Replay guards: the digests of single-use proofs (STS signatures, renewal and x509pop proof ids).

The unique ``digest`` decides whether a proof was seen (``ON CONFLICT DO NOTHING``), so
it holds across replicas. Expired guards are deleted in batches by the janitor.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store import hot
from issuer.store.models import ReplayGuard

__all__ = ["add_replay_guard", "count_replay_guards", "delete_expired_replay_guards"]

_REPLAY_GUARDS = ReplayGuard.metadata.tables[ReplayGuard.__tablename__]
_ADD = {
    name: hot.HotStatement(
        dialect_insert(_REPLAY_GUARDS)
        .values({name: bindparam(name) for name in ("kind", "digest", "expires_at", "created_at")})
        .on_conflict_do_nothing(index_elements=[_REPLAY_GUARDS.c.digest])
        .returning(_REPLAY_GUARDS.c.id)
    )
    for name, dialect_insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


async def add_replay_guard(
    session: AsyncSession, *, kind: str, digest: str, expires_at: datetime, now: datetime, autocommit: bool = False
) -> bool:
    """Record a single-use proof; False if the digest was recorded before (a replay).

    ``autocommit``: on Postgres, a statement of its own when the session has no transaction open
    (see :func:`issuer.store.hot.fetch`).
    """
    dialect = (await session.connection()).dialect.name
    values = {"kind": kind, "digest": digest, "expires_at": expires_at, "created_at": now}
    return await hot.fetch_one(session, _ADD[dialect], values, autocommit=autocommit) is not None


async def delete_expired_replay_guards(session: AsyncSession, *, now: datetime, batch: int = 5000) -> int:
    """Delete up to ``batch`` guards whose proofs can no longer be replayed; how many went."""
    ids = select(ReplayGuard.id).where(ReplayGuard.expires_at < now).limit(batch).scalar_subquery()
    result = await session.execute(delete(ReplayGuard).where(ReplayGuard.id.in_(ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def count_replay_guards(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(ReplayGuard)) or 0)
