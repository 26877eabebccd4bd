"""The deny list's rows: add, list, find the ones in force, remove (kept for the record).

Each function takes a session and never commits (the service owns the transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import JSON, bindparam, func, insert, literal, or_, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store import hot
from issuer.store.models import Denial
from issuer.store.records import record_of

__all__ = [
    "IN_FORCE_JSON",
    "DenialRecord",
    "InForce",
    "add_denial",
    "denials_from_json",
    "denials_in_force",
    "get_denial",
    "list_denials",
    "remove_denial",
]

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


# The same list as a JSON column of another statement: a hot read that must also know the deny
# list (issuance on Postgres) gets it in its own round trip. ``p_now`` is the statement's.
_IN_FORCE_WHERE = (
    _DENIALS.c.removed_at.is_(None),
    or_(_DENIALS.c.until.is_(None), _DENIALS.c.until > bindparam("p_now", type_=_DENIALS.c.until.type)),
)
IN_FORCE_JSON = (
    select(
        type_coerce(
            func.coalesce(
                func.json_agg(
                    func.json_build_object(
                        literal("id"),
                        _DENIALS.c.id,
                        literal("kind"),
                        _DENIALS.c.kind,
                        literal("value"),
                        _DENIALS.c.value,
                        literal("reason"),
                        _DENIALS.c.reason,
                        literal("created_by"),
                        _DENIALS.c.created_by,
                    )
                ),
                func.json_build_array(),
            ),
            JSON,
        )
    )
    .where(*_IN_FORCE_WHERE)
    .scalar_subquery()
    .label("denials")
)


@dataclass(frozen=True, slots=True)
class InForce:
    """What a refusal says of a denial in force."""

    id: int
    kind: str
    value: str
    reason: str
    created_by: str


def denials_from_json(value: object) -> list[InForce]:
    """The rows of :data:`IN_FORCE_JSON` as read back."""
    if not isinstance(value, list):
        raise TypeError(f"denials: expected a JSON array, got {type(value).__name__}")
    return [
        InForce(id=int(d["id"]), kind=d["kind"], value=d["value"], reason=d["reason"], created_by=d["created_by"])
        for d in value
    ]


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
