"""``issuer_certificates_expiring_unrenewed{role}``: missed rotations as a gauge, computed from the database.

A certificate is *due* once the renewal point the service gave its machine has passed
(``renew_after``: issue time plus ``renew_fraction`` of its lifetime). An active
certificate (not superseded by a renewal, not revoked) that is due and not yet expired
is a rotation that has not happened yet: a few for a moment are normal (agents renew
with jitter), a steady or growing number means machines that stopped renewing. The
same set is what ``issuer certs stale`` lists. Every configured role has its series from
the first count on (0 when none is late), so an alert can tell "none" from "not known".

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
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.store.renewal_due import unrenewed_by_role

__all__ = ["ExpiringCertificates", "count_unrenewed"]

log = logging.getLogger("issuer.metrics")

NAME = "issuer_certificates_expiring_unrenewed"


async def count_unrenewed(session: AsyncSession, *, now: datetime, renew_fraction: float) -> int:
    """How many active certificates are past their renewal point at ``now`` but not expired."""
    return sum((await unrenewed_by_role(session, now=now, renew_fraction=renew_fraction)).values())


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
        roles: Iterable[str] = (),
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
        self._roles = tuple(roles)
        self._value: dict[str, int] | None = None
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
                    counted = await unrenewed_by_role(session, now=self._clock(), renew_fraction=self._fraction)
                self._value = dict.fromkeys(self._roles, 0) | counted
            except Exception as exc:
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                log.warning("metrics: could not count unrenewed certificates: %s: %s", type(exc).__name__, first)

    def collect(self) -> Iterable[Metric]:
        if self._value is None:
            return []
        family = GaugeMetricFamily(
            NAME,
            "Active certificates past their renewal point and not yet expired: rotations not (yet) done.",
            labels=["role"],
        )
        for role, count in sorted(self._value.items()):
            family.add_metric([role], count)
        return [family]

    def _fresh(self) -> bool:
        return self._asked_at is not None and self._monotonic() - self._asked_at < self._ttl
