"""The audit trail's lag as Prometheus gauges, counted from the database when scraped (cached).

    issuer_audit_unsealed_rows          rows waiting for the sealer (normally 0-few; sealed within seconds)
    issuer_audit_uncheckpointed_rows    chain entries after the newest checkpoint (grows when no key can sign,
                                        or the sealer stopped signing because checkpoints were deleted)
    issuer_events_unpublished           chain entries after the relay's cursor plus queued outbox events
                                        (only with [events] bus_arn; grows while EventBridge is unreachable)

Like ``issuer_certificates_expiring_unrenewed``: at most one count per ``ttl`` seconds, under a
timeout, keeping the last values through a database outage; the answering worker computes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.audit import chain_store as audit_chain
from issuer.audit.chain import DEFAULT_LATE_WINDOW
from issuer.store import event_outbox

__all__ = ["AuditGauges"]

log = logging.getLogger("issuer.metrics")

_HELP = {
    "issuer_audit_unsealed_rows": "Audit rows committed but not yet sealed into the hash chain.",
    "issuer_audit_uncheckpointed_rows": "Audit chain entries after the newest signed checkpoint.",
    "issuer_events_unpublished": "Audit chain entries after the EventBridge relay's cursor, plus queued events.",
}


class AuditGauges:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime],
        events: str | None,
        late_window: timedelta = DEFAULT_LATE_WINDOW,
        ttl: float = 15.0,
        timeout: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._events = events  # the relay's cursor name, or None without [events]
        self._late = late_window
        self._ttl = ttl
        self._timeout = timeout
        self._monotonic = monotonic
        self._values: dict[str, int] = {}
        self._asked_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Count again when the last count is older than ``ttl``; never raises."""
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():
                return
            self._asked_at = self._monotonic()
            try:
                async with asyncio.timeout(self._timeout), self._sessions() as session:
                    self._values = await self.count(session)
            except Exception as exc:
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                log.warning("metrics: could not count the audit trail's lag: %s: %s", type(exc).__name__, first)

    async def count(self, session: AsyncSession) -> dict[str, int]:
        tail = await audit_chain.chain_tail(session)
        latest = await audit_chain.latest_checkpoint(session)
        values = {
            "issuer_audit_unsealed_rows": await audit_chain.count_pending(
                session, above_id=tail.max_id, since=self._clock() - self._late
            ),
            "issuer_audit_uncheckpointed_rows": tail.seq - (latest.seq if latest is not None else 0),
        }
        if self._events is not None:
            values["issuer_events_unpublished"] = await event_outbox.count_unpublished(session, name=self._events)
        return values

    def collect(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, _HELP[name], value=value) for name, value in self._values.items()]

    def _fresh(self) -> bool:
        return self._asked_at is not None and self._monotonic() - self._asked_at < self._ttl
