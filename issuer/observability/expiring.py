"""``issuer_certificates_expiring_unrenewed``: missed rotations as a gauge, computed from the database.

A certificate is *due* once the renewal point the service gave its machine has passed
(``renew_after``: issue time plus ``renew_fraction`` of its lifetime). An active
certificate (not superseded by a renewal, not revoked) that is due and not yet expired
is a rotation that has not happened yet: a few for a moment are normal (agents renew
with jitter), a steady or growing number means machines that stopped renewing. The
same set, with a fixed horizon instead of each certificate's own window, is what
``issuer certs stale`` lists.

The count is one query (every process answers it alike, so it needs no multi-process
aggregation), run at most once per ``ttl`` seconds, under a timeout, and only when
someone scrapes. A failed query keeps the last value (and is not retried before
``ttl``), so a database outage never fails or slows ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["ExpiringCertificates", "count_unrenewed"]

log = logging.getLogger("issuer.metrics")

NAME = "issuer_certificates_expiring_unrenewed"

# created_at is the moment of issue, from which the service computed renew_after.
_POSTGRES = text(
    "SELECT count(*) FROM certificates WHERE status = 'active' AND not_after > :now "
    "AND created_at + (not_after - created_at) * CAST(:fraction AS double precision) <= :now"
)
# SQLite keeps naive UTC text; julianday() makes it arithmetic.
_SQLITE = text(
    "SELECT count(*) FROM certificates WHERE status = 'active' AND julianday(not_after) > julianday(:now) "
    "AND julianday(created_at) + (julianday(not_after) - julianday(created_at)) * :fraction <= julianday(:now)"
)


async def count_unrenewed(session: AsyncSession, *, now: datetime, renew_fraction: float) -> int:
    """How many active certificates are past their renewal point at ``now`` but not expired."""
    connection = await session.connection()
    if connection.dialect.name == "sqlite":
        naive = now.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        result = await session.execute(_SQLITE, {"now": naive, "fraction": renew_fraction})
    else:
        result = await session.execute(_POSTGRES, {"now": now, "fraction": renew_fraction})
    return int(result.scalar_one())


class ExpiringCertificates:
    """The gauge as a collector; :meth:`refresh` before a scrape updates it when it is older than ``ttl``.

    ``clock`` is the service's clock (aware UTC ``now``); ``monotonic`` times the cache.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime],
        renew_fraction: float,
        ttl: float = 30.0,
        timeout: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._fraction = renew_fraction
        self._ttl = ttl
        self._timeout = timeout
        self._monotonic = monotonic
        self._value: int | None = None
        self._asked_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Count again if the last count is older than ``ttl``; never raises (failures are logged)."""
        if self._fresh():
            return
        async with self._lock:  # concurrent scrapes share one query
            if self._fresh():
                return
            self._asked_at = self._monotonic()
            try:
                async with asyncio.timeout(self._timeout), self._sessions() as session:
                    self._value = await count_unrenewed(session, now=self._clock(), renew_fraction=self._fraction)
            except Exception as exc:
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                log.warning("metrics: could not count unrenewed certificates: %s: %s", type(exc).__name__, first)

    def collect(self) -> Iterable[Metric]:
        if self._value is None:
            return []
        return [
            GaugeMetricFamily(
                NAME,
                "Active certificates past their renewal point and not yet expired: rotations not (yet) done.",
                value=self._value,
            )
        ]

    def _fresh(self) -> bool:
        return self._asked_at is not None and self._monotonic() - self._asked_at < self._ttl
