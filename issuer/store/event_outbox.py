"""Repository functions of the event relay: its cursor on the chain, the outbox, and the expiring scan.

Each takes a session and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import Attestation, AuditChainEntry, EventCursor, EventOutbox

__all__ = [
    "EVENTS_LOCK",
    "add_outbox",
    "chain_head",
    "count_unpublished",
    "cursor",
    "expiring_unrenewed",
    "mark_published",
    "move_cursor",
    "sealed_after",
    "unpublished",
]

EVENTS_LOCK: Final = 0x6175646974657674
_ROWS = Attestation.metadata.tables[Attestation.__tablename__]
_CHAIN = AuditChainEntry.metadata.tables[AuditChainEntry.__tablename__]
_CURSOR = EventCursor.metadata.tables[EventCursor.__tablename__]
_OUTBOX = EventOutbox.metadata.tables[EventOutbox.__tablename__]


def _insert(session_dialect: str) -> Any:
    return pg_insert if session_dialect == "postgresql" else sqlite_insert


async def cursor(session: AsyncSession, name: str, *, now: datetime) -> int:
    """The last chain seq ``name`` handled; created at the chain's current end (events from then on)."""
    connection = await session.connection()
    head = select(func.coalesce(func.max(_CHAIN.c.seq), 0)).scalar_subquery()
    statement = _insert(connection.dialect.name)(_CURSOR).values(name=name, seq=head, updated_at=now)
    await connection.execute(statement.on_conflict_do_nothing(index_elements=["name"]))
    return int((await connection.execute(select(_CURSOR.c.seq).where(_CURSOR.c.name == name))).scalar_one())


async def move_cursor(session: AsyncSession, name: str, *, old: int, new: int, now: datetime) -> bool:
    """Move the cursor from ``old`` to ``new``; False if someone else moved it meanwhile."""
    connection = await session.connection()
    result = await connection.execute(
        update(_CURSOR).where(_CURSOR.c.name == name, _CURSOR.c.seq == old).values(seq=new, updated_at=now)
    )
    return bool(result.rowcount)


async def sealed_after(session: AsyncSession, *, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """Sealed rows after ``after_seq`` in seq order: (seq, every column of the row). Deleted rows are skipped."""
    connection = await session.connection()
    query = (
        select(_CHAIN.c.seq, *_ROWS.c)
        .select_from(_CHAIN.join(_ROWS, _ROWS.c.id == _CHAIN.c.attestation_id))
        .where(_CHAIN.c.seq > after_seq)
        .order_by(_CHAIN.c.seq)
        .limit(limit)
    )
    out = []
    for row in (await connection.execute(query)).mappings():
        values = dict(row)
        out.append((int(values.pop("seq")), values))
    return out


async def chain_head(session: AsyncSession) -> int:
    connection = await session.connection()
    return int((await connection.execute(select(func.coalesce(func.max(_CHAIN.c.seq), 0)))).scalar_one())


async def add_outbox(
    session: AsyncSession, *, dedupe_key: str, detail_type: str, detail: Mapping[str, Any], now: datetime
) -> bool:
    """Queue an event once per ``dedupe_key``; False when it was queued before (by any replica)."""
    connection = await session.connection()
    values = {"dedupe_key": dedupe_key, "detail_type": detail_type, "detail": dict(detail), "created_at": now}
    statement = _insert(connection.dialect.name)(_OUTBOX).values(values)
    statement = statement.on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(_OUTBOX.c.id)
    return (await connection.execute(statement)).scalar_one_or_none() is not None


async def unpublished(session: AsyncSession, *, limit: int) -> list[dict[str, Any]]:
    """Outbox rows not published yet, oldest first."""
    connection = await session.connection()
    query = select(_OUTBOX).where(_OUTBOX.c.published_at.is_(None)).order_by(_OUTBOX.c.id).limit(limit)
    return [dict(row) for row in (await connection.execute(query)).mappings()]


async def mark_published(session: AsyncSession, ids: Sequence[int], *, now: datetime) -> None:
    if not ids:
        return
    connection = await session.connection()
    await connection.execute(update(_OUTBOX).where(_OUTBOX.c.id.in_(list(ids))).values(published_at=now))


async def count_unpublished(session: AsyncSession, *, name: str) -> int:
    """Chain entries after the cursor (some may publish nothing) plus outbox rows not published."""
    connection = await session.connection()
    head = await chain_head(session)
    seq = (await connection.execute(select(_CURSOR.c.seq).where(_CURSOR.c.name == name))).scalar_one_or_none()
    waiting = (
        await connection.execute(select(func.count()).select_from(_OUTBOX).where(_OUTBOX.c.published_at.is_(None)))
    ).scalar_one()
    return max(0, head - int(seq or 0)) + int(waiting)


# Active, unexpired certificates past their renewal point (issue time plus renew_fraction of the
# lifetime: what the service told the machine) with no outbox row yet; SQLite keeps naive UTC text.
_EXPIRING_PG = text(
    "SELECT c.serial, c.method, c.role, c.not_after, c.created_at, i.principal FROM certificates c "
    "JOIN identities i ON i.id = c.identity_id WHERE c.status = 'active' AND c.not_after > :now "
    "AND c.created_at + (c.not_after - c.created_at) * CAST(:fraction AS double precision) <= :now "
    "AND NOT EXISTS (SELECT 1 FROM event_outbox o WHERE o.dedupe_key = :prefix || c.serial) "
    "ORDER BY c.not_after LIMIT :limit"
)
_EXPIRING_SQLITE = text(
    "SELECT c.serial, c.method, c.role, c.not_after, c.created_at, i.principal FROM certificates c "
    "JOIN identities i ON i.id = c.identity_id WHERE c.status = 'active' "
    "AND julianday(c.not_after) > julianday(:now) "
    "AND julianday(c.created_at) + (julianday(c.not_after) - julianday(c.created_at)) * :fraction "
    "<= julianday(:now) "
    "AND NOT EXISTS (SELECT 1 FROM event_outbox o WHERE o.dedupe_key = :prefix || c.serial) "
    "ORDER BY c.not_after LIMIT :limit"
)


async def expiring_unrenewed(
    session: AsyncSession, *, now: datetime, renew_fraction: float, prefix: str, limit: int
) -> list[dict[str, Any]]:
    """Certificates past their renewal point, not renewed, not revoked, not expired, whose
    ``prefix + serial`` is not in the outbox: serial, method, role, not_after, created_at, principal."""
    connection = await session.connection()
    params: dict[str, Any] = {"fraction": renew_fraction, "prefix": prefix, "limit": limit}
    if connection.dialect.name == "sqlite":
        params["now"] = now.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        rows = (await connection.execute(_EXPIRING_SQLITE, params)).mappings()
    else:
        params["now"] = now
        rows = (await connection.execute(_EXPIRING_PG, params)).mappings()
    out = []
    for row in rows:
        values = dict(row)
        for name in ("not_after", "created_at"):
            values[name] = _aware(values[name])
        out.append(values)
    return out


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
