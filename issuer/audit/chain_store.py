"""Repository functions of the audit chain: its tail, unsealed rows, entries, checkpoints, locks.

Each takes a session and never commits. The chain reads ``attestations`` and never writes it:
whoever writes audit rows, and however, the sealer finds them here after they committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import exists, func, insert, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.audit.canonical import AUDIT_COLUMNS
from issuer.audit.chain import ChainEntry, ChainTail
from issuer.store.models import Attestation, AuditChainEntry, AuditCheckpoint

__all__ = [
    "SEAL_LOCK",
    "CheckpointRecord",
    "add_checkpoint",
    "append_entries",
    "chain_end",
    "chain_tail",
    "checkpoints",
    "count_pending",
    "entries_after",
    "first_sealed_at",
    "latest_checkpoint",
    "tail_before",
    "try_lock",
    "unsealed_older_than",
    "unsealed_rows",
]

# pg_try_advisory_xact_lock keys ("audit-sealer", "audit-events" as 64-bit numbers): one holder at a time.
SEAL_LOCK: Final = 0x6175646974736561
_ROWS = Attestation.metadata.tables[Attestation.__tablename__]
_CHAIN = AuditChainEntry.metadata.tables[AuditChainEntry.__tablename__]
_CHECKPOINTS = AuditCheckpoint.metadata.tables[AuditCheckpoint.__tablename__]
_COVERED = tuple(_ROWS.c[c.name] for c in AUDIT_COLUMNS)
_SEALED = exists().where(_CHAIN.c.attestation_id == _ROWS.c.id)


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    seq: int
    head_hash: str
    at: datetime
    key_ref: str
    algorithm: str
    signature: str  # base64
    format: int


async def try_lock(session: AsyncSession, key: int) -> bool:
    """Take the transaction-scoped advisory lock ``key`` if free (Postgres); True on SQLite (one writer at a time)."""
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        return True
    return bool((await connection.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key})).scalar_one())


def _entry(row: Any) -> ChainEntry:
    return ChainEntry(
        seq=int(row["seq"]),
        attestation_id=int(row["attestation_id"]),
        format=int(row["format"]),
        prev_hash=row["prev_hash"],
        row_hash=row["row_hash"],
        sealed_at=row["sealed_at"],
    )


async def _tail_at(session: AsyncSession, seq: int | None) -> ChainTail:
    """The tail after the entry ``seq`` (None: the last one); the empty tail when there is none."""
    connection = await session.connection()
    last = select(_CHAIN).order_by(_CHAIN.c.seq.desc()).limit(1)
    if seq is not None:
        last = last.where(_CHAIN.c.seq <= seq)
    row = (await connection.execute(last)).mappings().first()
    if row is None:
        return ChainTail()
    top_id = select(func.max(_CHAIN.c.attestation_id)).where(_CHAIN.c.seq <= row["seq"]).scalar_subquery()
    top = (
        await connection.execute(
            select(top_id.label("id"), select(_ROWS.c.created_at).where(_ROWS.c.id == top_id).scalar_subquery())
        )
    ).first()
    assert top is not None
    return ChainTail(
        seq=int(row["seq"]),
        row_hash=row["row_hash"],
        sealed_at=row["sealed_at"],
        max_id=int(top[0]),
        max_id_created_at=top[1],
    )


async def chain_tail(session: AsyncSession) -> ChainTail:
    """The chain's last entry, and its highest sealed id with that row's ``created_at``."""
    return await _tail_at(session, None)


async def tail_before(session: AsyncSession, seq: int) -> ChainTail:
    """The tail as it was before entry ``seq`` was appended (for ``verify --from``)."""
    return await _tail_at(session, seq - 1) if seq > 1 else ChainTail()


async def first_sealed_at(session: AsyncSession) -> datetime | None:
    """When entry 1 was sealed: the adopted prefix of the chain shares this ``sealed_at``."""
    connection = await session.connection()
    return (await connection.execute(select(_CHAIN.c.sealed_at).where(_CHAIN.c.seq == 1))).scalar_one_or_none()


async def chain_end(session: AsyncSession) -> int:
    connection = await session.connection()
    return int((await connection.execute(select(func.coalesce(func.max(_CHAIN.c.seq), 0)))).scalar_one())


async def unsealed_rows(
    session: AsyncSession, *, above_id: int | None, since: datetime, after_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` unsealed rows in id order (ids above ``after_id``, for paging): every row when the
    chain is empty (``above_id`` None), else rows above ``above_id`` or created since ``since``."""
    connection = await session.connection()
    query = select(*_COVERED).where(~_SEALED).order_by(_ROWS.c.id).limit(limit)
    if above_id is not None:
        query = query.where(or_(_ROWS.c.id > above_id, _ROWS.c.created_at >= since))
    if after_id is not None:
        query = query.where(_ROWS.c.id > after_id)
    return [dict(row) for row in (await connection.execute(query)).mappings()]


async def append_entries(session: AsyncSession, entries: Sequence[ChainEntry]) -> None:
    """Insert ``entries``; a concurrent sealer (SQLite, no advisory lock) makes this fail on the primary key."""
    if not entries:
        return
    connection = await session.connection()
    await connection.execute(
        insert(_CHAIN),
        [
            {
                "seq": e.seq,
                "attestation_id": e.attestation_id,
                "format": e.format,
                "prev_hash": e.prev_hash,
                "row_hash": e.row_hash,
                "sealed_at": e.sealed_at,
            }
            for e in entries
        ],
    )


async def entries_after(
    session: AsyncSession, *, after_seq: int, limit: int, until_seq: int | None = None
) -> list[tuple[ChainEntry, dict[str, Any] | None]]:
    """Entries with ``seq`` above ``after_seq`` (up to ``until_seq``), each with its row's current content or None."""
    connection = await session.connection()
    query = (
        select(*_CHAIN.c, *(c.label(f"row_{c.name}") for c in _COVERED))
        .select_from(_CHAIN.outerjoin(_ROWS, _ROWS.c.id == _CHAIN.c.attestation_id))
        .where(_CHAIN.c.seq > after_seq)
        .order_by(_CHAIN.c.seq)
        .limit(limit)
    )
    if until_seq is not None:
        query = query.where(_CHAIN.c.seq <= until_seq)
    out: list[tuple[ChainEntry, dict[str, Any] | None]] = []
    for row in (await connection.execute(query)).mappings():
        content = {c.name: row[f"row_{c.name}"] for c in _COVERED}
        out.append((_entry(row), content if content["id"] is not None else None))
    return out


async def unsealed_older_than(session: AsyncSession, *, cutoff: datetime, limit: int) -> list[dict[str, Any]]:
    """Rows not in the chain created before ``cutoff``, in id order (a full anti-join: for ``verify``)."""
    connection = await session.connection()
    query = select(*_COVERED).where(~_SEALED, _ROWS.c.created_at < cutoff).order_by(_ROWS.c.id).limit(limit)
    return [dict(row) for row in (await connection.execute(query)).mappings()]


async def count_pending(session: AsyncSession, *, above_id: int | None, since: datetime) -> int:
    """How many rows wait for the sealer (what :func:`unsealed_rows` would go through), for the gauge."""
    connection = await session.connection()
    query = select(func.count()).select_from(_ROWS).where(~_SEALED)
    if above_id is not None:
        query = query.where(or_(_ROWS.c.id > above_id, _ROWS.c.created_at >= since))
    return int((await connection.execute(query)).scalar_one())


def _checkpoint(row: Any) -> CheckpointRecord:
    return CheckpointRecord(**{name: row[name] for name in CheckpointRecord.__slots__})


async def checkpoints(session: AsyncSession, *, from_seq: int = 0) -> list[CheckpointRecord]:
    """Every checkpoint at ``from_seq`` or later, in seq order."""
    connection = await session.connection()
    query = select(_CHECKPOINTS).where(_CHECKPOINTS.c.seq >= from_seq).order_by(_CHECKPOINTS.c.seq)
    return [_checkpoint(row) for row in (await connection.execute(query)).mappings()]


async def latest_checkpoint(session: AsyncSession) -> CheckpointRecord | None:
    connection = await session.connection()
    query = select(_CHECKPOINTS).order_by(_CHECKPOINTS.c.seq.desc()).limit(1)
    row = (await connection.execute(query)).mappings().first()
    return None if row is None else _checkpoint(row)


async def add_checkpoint(session: AsyncSession, checkpoint: CheckpointRecord) -> bool:
    """Insert ``checkpoint``; False when one exists for that seq already (another replica was first)."""
    connection = await session.connection()
    dialect_insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    values = {name: getattr(checkpoint, name) for name in CheckpointRecord.__slots__}
    statement = dialect_insert(_CHECKPOINTS).values(values).on_conflict_do_nothing(index_elements=["seq"])
    result = await connection.execute(statement.returning(_CHECKPOINTS.c.seq))
    return result.scalar_one_or_none() is not None
