"""The audit trail: every row of ``attestations`` is written by this module, on Postgres and SQLite alike.

Two ways in, one spelling of the row:

- :func:`record` writes one row on its own statement (a refused attempt, a revocation);
- :func:`insert_after` is the same row as the last step of a data-modifying CTE, so that an
  issuance writes its identity, its certificate and its success row in one round trip on
  Postgres (:func:`issuer.store.certificates.record_issuance`);
- :func:`record_operator` writes an operator's action (method ``admin``: actor, action, arguments).

The columns and the values an :class:`AuditEntry` gives them are listed once, here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import Attestation
from issuer.store.records import AuditEntry, OperatorRow

__all__ = ["insert_after", "parameters", "record", "record_operator"]

_ATTESTATIONS = Attestation.metadata.tables[Attestation.__tablename__]
_COLUMNS = (
    "method",
    "outcome",
    "code",
    "reason",
    "principal",
    "role",
    "certificate_serial",
    "remote_addr",
    "request_id",
)
# Built once, run with a dict of values (a refusal's row is on the hot path of a flood of bad requests).
_INSERT = insert(_ATTESTATIONS)


def _values(entry: AuditEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in _COLUMNS}


async def record(session: AsyncSession, entry: AuditEntry, *, now: datetime) -> None:
    """Write ``entry`` as one row, stamped ``now``, in the session's transaction."""
    connection = await session.connection()
    await connection.execute(_INSERT, {**_values(entry), "created_at": now})


def insert_after(source: str, *, prefix: str) -> str:
    """SQL for a CTE step that writes one audit row per row of the CTE named ``source``.

    Its bind parameters are :func:`parameters` (``prefix`` + column) and ``:created_at``.
    """
    columns = ", ".join(_COLUMNS)
    values = ", ".join(f":{prefix}{name}" for name in _COLUMNS)
    # Only this package's constant names are interpolated; every value is a bind parameter.
    return f"INSERT INTO attestations ({columns}, created_at) SELECT {values}, :created_at FROM {source}"  # noqa: S608


def parameters(entry: AuditEntry, *, prefix: str) -> dict[str, Any]:
    """The bind parameters of :func:`insert_after` for ``entry``."""
    return {f"{prefix}{name}": value for name, value in _values(entry).items()}


async def record_operator(session: AsyncSession, row: OperatorRow, *, now: datetime) -> None:
    """Write one operator action as a row of method ``admin``, stamped ``now``."""
    connection = await session.connection()
    await connection.execute(
        _INSERT,
        {
            "method": "admin",
            "outcome": row.outcome,
            "code": row.code,
            "reason": row.reason,
            "principal": row.principal,
            "role": None,
            "certificate_serial": None,
            "remote_addr": row.remote_addr,
            "request_id": row.request_id,
            "created_at": now,
            "actor": row.actor,
            "action": row.action,
            "arguments": dict(row.arguments),
        },
    )
