"""When a certificate is due for renewal, in SQL, on Postgres and SQLite alike.

The service tells each machine its renewal point in the issue response (``renew_after`` = issue time
+ ``renew_fraction`` of the lifetime) and does not store it: ``created_at`` is the moment of issue,
so the point is computed from the row. Missed rotations are measured from it — per certificate, so
a 12-second certificate and a 30-day one are each late by their own clock — by the metric
``issuer_certificates_expiring_unrenewed`` and by ``issuer certs stale``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["past_renewal_point", "unrenewed_by_role"]

# created_at is the moment of issue, from which the service computed renew_after.
_POSTGRES = (
    "certificates.created_at + (certificates.not_after - certificates.created_at) "
    "* CAST(:due_fraction AS double precision) <= :due_cutoff"
)
# SQLite keeps naive UTC text; julianday() makes it arithmetic.
_SQLITE = (
    "julianday(certificates.created_at) + (julianday(certificates.not_after) - julianday(certificates.created_at)) "
    "* :due_fraction <= julianday(:due_cutoff)"
)
_COUNT = (
    "SELECT role, count(*) FROM certificates WHERE status = 'active' AND {alive} AND {due} GROUP BY role ORDER BY role"
)


def _bind(dialect: str, moment: datetime) -> object:
    if dialect == "sqlite":
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return moment


def past_renewal_point(dialect: str, *, renew_fraction: float, cutoff: datetime) -> TextClause:
    """A WHERE clause on ``certificates``: its renewal point is at or before ``cutoff``."""
    clause = text(_SQLITE if dialect == "sqlite" else _POSTGRES)
    return clause.bindparams(due_fraction=renew_fraction, due_cutoff=_bind(dialect, cutoff))


async def unrenewed_by_role(session: AsyncSession, *, now: datetime, renew_fraction: float) -> dict[str, int]:
    """Per role, the active certificates past their renewal point at ``now`` but not expired."""
    connection = await session.connection()
    dialect = connection.dialect.name
    if dialect == "sqlite":
        statement = _COUNT.format(alive="julianday(certificates.not_after) > julianday(:due_now)", due=_SQLITE)
    else:
        statement = _COUNT.format(alive="certificates.not_after > :due_now", due=_POSTGRES)
    values = {"due_now": _bind(dialect, now), "due_cutoff": _bind(dialect, now), "due_fraction": renew_fraction}
    rows = await session.execute(text(statement), values)
    return {str(role): int(count) for role, count in rows}
