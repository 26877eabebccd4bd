"""``Certificate Expiring Unrenewed``: a periodic scan puts each such certificate in the outbox, once.

A live certificate (active: neither renewed nor revoked) past the renewal point the service
gave its machine, and not yet expired, is a rotation that has not happened. The scan runs on
every replica; the outbox's unique ``dedupe_key`` (``expiring:<serial>``) makes it one event
per certificate however many replicas see it, and the relay publishes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.audit.canonical import iso_utc
from issuer.faults import is_database_outage
from issuer.store import event_outbox as store

__all__ = ["DETAIL_TYPE", "PREFIX", "ExpiringScan"]

log = logging.getLogger("issuer.events")

DETAIL_TYPE: Final = "Certificate Expiring Unrenewed"
PREFIX: Final = "expiring:"


class ExpiringScan:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime],
        renew_fraction: float,
        every: float = 60.0,
        limit: int = 500,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._fraction = renew_fraction
        self._every = every
        self._limit = limit

    async def scan_once(self) -> int:
        """Queue an event for each newly found certificate; how many were queued."""
        now = self._clock()
        added = 0
        async with self._sessions() as session, session.begin():
            rows = await store.expiring_unrenewed(
                session, now=now, renew_fraction=self._fraction, prefix=PREFIX, limit=self._limit
            )
            for row in rows:
                issued, not_after = row["created_at"], row["not_after"]
                detail = {
                    "certificate_serial": row["serial"],
                    "principal": row["principal"],
                    "method": row["method"],
                    "role": row["role"],
                    "issued_at": iso_utc(issued),
                    "renew_after": iso_utc(issued + (not_after - issued) * self._fraction),
                    "not_after": iso_utc(not_after),
                }
                key = PREFIX + row["serial"]
                added += await store.add_outbox(
                    session, dedupe_key=key, detail_type=DETAIL_TYPE, detail=detail, now=now
                )
        return added

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(60):
                    added = await self.scan_once()
                if added:
                    log.info("events: %d certificate(s) past their renewal point, not renewed", added)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                level = logging.WARNING if is_database_outage(exc) else logging.ERROR
                first = str(exc).splitlines()[0] if str(exc) else ""
                log.log(level, "events: the expiring scan failed: %s: %s", type(exc).__name__, first)
            await asyncio.sleep(self._every)
