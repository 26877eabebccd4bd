"""The audit trail for operators: writing an operator action's row, and reading the trail back.

Operator actions are rows of ``attestations`` like every attempt of a machine, with method
``admin`` and three columns of their own: ``actor``, ``action`` and ``arguments``. Each
function takes a session and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store import audit
from issuer.store.models import Attestation
from issuer.store.records import OperatorRow, record_of

__all__ = ["AuditFilter", "AuditRecord", "OperatorRow", "add_operator_row", "query_audit"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    method: str
    outcome: str
    code: str | None
    reason: str | None
    principal: str | None
    role: str | None
    certificate_serial: str | None
    remote_addr: str | None
    request_id: str
    created_at: datetime
    actor: str | None
    action: str | None
    arguments: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What to read from the trail; every field set narrows it (``action`` may end in ``*``)."""

    since: datetime | None = None
    until: datetime | None = None
    method: str | None = None
    outcome: str | None = None
    actor: str | None = None
    action: str | None = None
    principal: str | None = None
    request_id: str | None = None
    limit: int = 100


async def add_operator_row(session: AsyncSession, row: OperatorRow, *, now: datetime) -> None:
    """Write one operator action (through :func:`issuer.store.audit.record_operator`, the one writer)."""
    await audit.record_operator(session, row, now=now)


async def query_audit(session: AsyncSession, where: AuditFilter) -> Sequence[AuditRecord]:
    """The newest ``where.limit`` rows that match, newest first."""
    query = select(Attestation)
    if where.since is not None:
        query = query.where(Attestation.created_at >= where.since)
    if where.until is not None:
        query = query.where(Attestation.created_at < where.until)
    for column, value in (
        (Attestation.method, where.method),
        (Attestation.outcome, where.outcome),
        (Attestation.actor, where.actor),
        (Attestation.principal, where.principal),
        (Attestation.request_id, where.request_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.action is not None:
        if where.action.endswith("*"):
            prefix = where.action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(Attestation.action.like(prefix + "%", escape="\\"))
        else:
            query = query.where(Attestation.action == where.action)
    rows = (await session.scalars(query.order_by(Attestation.id.desc()).limit(where.limit))).all()
    return [record_of(AuditRecord, r) for r in rows]
