"""The deny list's rows: add, list, find the ones in force, remove (kept for the record).

Each function takes a session and never commits (the service owns the transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store import hot
from issuer.store.models import Denial
from issuer.store.records import record_of

__all__ = ["DenialRecord", "add_denial", "denials_in_force", "get_denial", "list_denials", "remove_denial"]

_DENIALS = Denial.metadata.tables[Denial.__tablename__]


@dataclass(frozen=True, slots=True)
class DenialRecord:
    id: int
    kind: str  # principal | instance | account
    value: str
    reason: str
    until: datetime | None
    created_by: str
    created_at: datetime
    request_id: str
    removed_at: datetime | None
    removed_by: str | None


# Every issuance asks, so the statement is built once; the list is short (usually empty).
_IN_FORCE = hot.HotStatement(
    select(*(_DENIALS.c[name] for name in DenialRecord.__dataclass_fields__))
    .where(_DENIALS.c.removed_at.is_(None))
    .where(or_(_DENIALS.c.until.is_(None), _DENIALS.c.until > bindparam("p_now", type_=_DENIALS.c.until.type)))
    .order_by(_DENIALS.c.id)
)


async def add_denial(
    session: AsyncSession,
    *,
    kind: str,
    value: str,
    reason: str,
    until: datetime | None,
    created_by: str,
    request_id: str,
    now: datetime,
) -> DenialRecord:
    result = await session.execute(
        insert(Denial)
        .values(
            kind=kind,
            value=value,
            reason=reason,
            until=until,
            created_by=created_by,
            created_at=now,
            request_id=request_id,
        )
        .returning(Denial)
    )
    return record_of(DenialRecord, result.scalar_one())


async def denials_in_force(session: AsyncSession, *, now: datetime) -> Sequence[DenialRecord]:
    """Denials not removed and not past their ``until``, oldest first."""
    rows = await hot.fetch(session, _IN_FORCE, {"p_now": now})
    return [DenialRecord(**row) for row in rows]


async def list_denials(
    session: AsyncSession, *, now: datetime, include_inactive: bool, limit: int = 500
) -> Sequence[DenialRecord]:
    """Denials in force (with ``include_inactive``: also expired and removed ones), newest first."""
    query = select(Denial)
    if not include_inactive:
        query = query.where(Denial.removed_at.is_(None), or_(Denial.until.is_(None), Denial.until > now))
    rows = (await session.scalars(query.order_by(Denial.id.desc()).limit(limit))).all()
    return [record_of(DenialRecord, r) for r in rows]


async def get_denial(session: AsyncSession, denial_id: int) -> DenialRecord | None:
    row = await session.get(Denial, denial_id)
    return None if row is None else record_of(DenialRecord, row)


async def remove_denial(session: AsyncSession, *, denial_id: int, removed_by: str, now: datetime) -> bool:
    """Mark a denial removed; False when there is no such denial or it was removed before."""
    result = await session.execute(
        update(Denial)
        .where(Denial.id == denial_id, Denial.removed_at.is_(None))
        .values(removed_at=now, removed_by=removed_by)
        .returning(Denial.id)
    )
    return result.scalar_one_or_none() is not None
