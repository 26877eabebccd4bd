"""The relay: publish the sealed audit trail (and the outbox) to EventBridge, in order, at least once.

Each tick one replica at a time (``pg_try_advisory_xact_lock``; on SQLite the cursor moves
only from the value read, so a second relay merely publishes twice) reads the chain after its
cursor, turns rows into events (:mod:`issuer.events.catalogue`), publishes them, and moves the
cursor past the longest prefix that EventBridge accepted or that publishes nothing. An outage
leaves the cursor where it is; the relay backs off (exponentially, with jitter, up to a minute)
and starts again from there when EventBridge answers. Outbox rows are marked published one by
one. Events are therefore delivered at least once, never lost, in seal order per cursor.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.audit import chain_store as audit_chain
from issuer.events.catalogue import EVENT_RULES, Event, EventRule, event_of_outbox, event_of_row
from issuer.events.publisher import EventBridgePublisher, backoff_delay
from issuer.faults import is_database_outage
from issuer.store import event_outbox as store

__all__ = ["CURSOR_NAME", "EventRelay"]

log = logging.getLogger("issuer.events")

CURSOR_NAME: Final = "eventbridge"


class EventRelay:
    """Publishes from ``sessions``' database through ``publisher``; one per process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        publisher: EventBridgePublisher,
        clock: Callable[[], datetime],
        trust_domain: str,
        every: float = 1.0,
        batch: int = 100,
        max_backoff: float = 60.0,
        rules: tuple[EventRule, ...] = EVENT_RULES,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._clock = clock
        self._domain = trust_domain
        self._every = every
        self._batch = batch
        self._max_backoff = max_backoff
        self._rules = rules
        self._rand = rand

    async def prepare(self) -> None:
        """Create the cursor at the chain's end if there is none: enabling events publishes from now on,
        not the history. Raises what the database raises."""
        async with self._sessions() as session, session.begin():
            await store.cursor(session, CURSOR_NAME, now=self._clock())

    async def relay_once(self) -> tuple[int, int]:
        """One round: (events published, events that could not be). (0, 0) when another replica relays.

        The advisory lock is held by a transaction of its own that writes nothing, for the whole
        round; reading and moving the cursor are short transactions around the publishing, so no
        database lock is held while EventBridge is asked (SQLite has one writer at a time).
        """
        async with self._sessions() as guard, guard.begin():
            if not await audit_chain.try_lock(guard, store.EVENTS_LOCK):
                return 0, 0
            async with self._sessions() as session:
                chain = await self._chain(session)
                outbox = await self._outbox(session)
        return chain[0] + outbox[0], chain[1] + outbox[1]

    async def _chain(self, session: AsyncSession) -> tuple[int, int]:
        async with session.begin():
            start = await store.cursor(session, CURSOR_NAME, now=self._clock())
        async with session.begin():
            rows = await store.sealed_after(session, after_seq=start, limit=self._batch)
        if not rows:
            return 0, 0
        pairs: list[tuple[int, Event | None]] = [
            (seq, event_of_row(row, seq=seq, trust_domain=self._domain, rules=self._rules)) for seq, row in rows
        ]
        events = [e for _, e in pairs if e is not None]
        result = await self._publisher.publish(events)
        upto = start
        for seq, event in pairs:
            if event is not None and event.event_id not in result.accepted:
                break
            upto = seq
        if upto != start:
            async with session.begin():
                moved = await store.move_cursor(session, CURSOR_NAME, old=start, new=upto, now=self._clock())
            if not moved:
                log.info("events: another relay moved the cursor first (published twice; consumers deduplicate)")
        return len(result.accepted), len(result.failed)

    async def _outbox(self, session: AsyncSession) -> tuple[int, int]:
        async with session.begin():
            rows = await store.unpublished(session, limit=self._batch)
        if not rows:
            return 0, 0
        events = {
            row["id"]: event_of_outbox(
                dedupe_key=row["dedupe_key"],
                detail_type=row["detail_type"],
                detail=row["detail"],
                created_at=row["created_at"],
                trust_domain=self._domain,
            )
            for row in rows
        }
        result = await self._publisher.publish(list(events.values()))
        done = [row_id for row_id, event in events.items() if event.event_id in result.accepted]
        if done:
            async with session.begin():
                await store.mark_published(session, done, now=self._clock())
        return len(done), len(result.failed)

    async def run(self) -> None:
        """Relay until cancelled: every ``every`` seconds, backing off (with jitter) while publishing fails."""
        failures = 0
        while True:
            try:
                async with asyncio.timeout(120):
                    published, failed = await self.relay_once()
                failures = failures + 1 if failed and not published else 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                level = logging.WARNING if is_database_outage(exc) else logging.ERROR
                first = str(exc).splitlines()[0] if str(exc) else ""
                log.log(level, "events: relaying failed: %s: %s", type(exc).__name__, first)
            if failures:
                delay = self._every + backoff_delay(failures, base=self._every, cap=self._max_backoff, rand=self._rand)
            else:
                delay = self._every
            await asyncio.sleep(delay)
