"""Concurrent requests' hot statements, run as one statement per batch (Postgres).

On two cores one loopback round trip to Postgres costs the server about as much CPU as signing a
certificate, and Postgres pays for each statement and each commit again. While one batch of a
statement is in flight, the same statement from other requests waits; when it returns, all that
waited go together as one statement (up to :data:`MAX_COPIES`): one round trip, one commit, one
pooled connection for the lot. Nothing waits for a batch to fill: a statement that finds no batch
of its kind in flight is sent at once, so an idle server answers as fast as without batching.

Only statements that run outside any transaction (``hot.fetch(..., autocommit=True)``) and say how
their copies combine (``HotStatement(batch=...)``) are batched: the peek reads and the
claim-and-record writes of issuance. The copies of a write share one snapshot and commit or fail
together, so two copies must never write the same row: each write names an ``exclusive`` key (the
identity it records) and a request whose key is already in the forming batch waits for the next.
When a batch of several fails, each copy is run again on its own so that one request's failure
(a unique violation, a value the database refuses) is that request's alone; a lost connection is
not retried (whether it committed is unknown), and every copy in the batch gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from issuer.store import hot

__all__ = ["LINGER", "MAX_COPIES", "Batches"]

log = logging.getLogger("issuer.store")

# At most this many requests' copies per statement: each size is a statement Postgres prepares
# once per connection (asyncpg caches 100 per connection), and 16 connections in flight on two
# workers are eight each.
MAX_COPIES = 8
# Seconds a lane keeps its pooled connection after its last batch. Under load the next request comes
# within a millisecond, and giving the connection back to take it again (two greenlet switches, a
# pool checkout and checkin, a new sender task) cost about 90 µs of CPU each time; an idle lane gives
# it back this soon after, and :meth:`Batches.aclose` at once.
LINGER = 0.02


@dataclass(slots=True)
class _Waiting:
    params: Mapping[str, Any]
    exclusive: object | None
    answer: asyncio.Future[list[dict[str, Any]]]


@dataclass(slots=True)
class _Lane:
    """One statement's requests waiting, and the task sending them (one batch in flight at a time)."""

    waiting: list[_Waiting] = field(default_factory=list)
    sender: asyncio.Task[None] | None = None
    idle: asyncio.Future[None] | None = None  # while the sender lingers with its connection


class Batches:
    """The batcher of one engine's sessions (``hot.BATCHER`` in their ``info``).

    Each statement's batches go out one at a time on a connection taken from the engine's pool
    while that statement has requests waiting, and given back when none has come for ``linger``
    seconds: one pool checkout for a run of batches, and no session (a session costs about as much
    of the server's CPU as the round trip).
    """

    def __init__(self, engine: AsyncEngine, *, max_copies: int = MAX_COPIES, linger: float = LINGER) -> None:
        self._engine = engine
        self.max_copies = max_copies
        self.linger = linger
        # Per event loop: tests run many loops in one process, and a future belongs to its loop.
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[hot.HotStatement, _Lane]] = (
            weakref.WeakKeyDictionary()
        )

    async def fetch(
        self, statement: hot.HotStatement, params: Mapping[str, Any], exclusive: object | None
    ) -> list[dict[str, Any]]:
        """``statement``'s rows for ``params``, run with the same statement of other requests in flight."""
        loop = asyncio.get_running_loop()
        lanes = self._lanes.get(loop)
        if lanes is None:
            lanes = self._lanes[loop] = {}
        lane = lanes.get(statement)
        if lane is None:
            lane = lanes[statement] = _Lane()
        waiting = _Waiting(params, exclusive, loop.create_future())
        lane.waiting.append(waiting)
        if lane.idle is not None:
            if not lane.idle.done():
                lane.idle.set_result(None)  # the sender is lingering with its connection: wake it
        elif lane.sender is None or lane.sender.done():
            lane.sender = loop.create_task(self._send(statement, lane))
        return await waiting.answer

    async def aclose(self) -> None:
        """Give back at once the connections this event loop's lingering lanes hold, and linger no more
        (at shutdown, before the engine is disposed)."""
        self.linger = 0.0
        lanes = self._lanes.get(asyncio.get_running_loop(), {})
        senders = [lane.sender for lane in lanes.values() if lane.sender is not None and not lane.sender.done()]
        for lane in lanes.values():
            if lane.idle is not None and not lane.idle.done():
                lane.idle.set_result(None)
        await asyncio.gather(*senders, return_exceptions=True)

    async def _send(self, statement: hot.HotStatement, lane: _Lane) -> None:
        pooled: PoolProxiedConnection | None = None
        try:
            while True:
                while lane.waiting:
                    batch = self._take(lane)
                    if not batch:
                        continue
                    try:
                        if pooled is None:
                            pooled = await self._engine.raw_connection()
                        await self._run(pooled, statement, batch)
                    except BaseException as error:
                        for waiting in batch:
                            _settle(waiting, error=error)
                        if not isinstance(error, Exception):
                            raise  # cancelled: the server is stopping
                    if pooled is not None and not pooled.is_valid:
                        pooled = None  # lost and invalidated: the next batch takes another
                if pooled is None or not await self._lingered(lane):
                    break
        finally:
            if lane.sender is asyncio.current_task():
                lane.sender = None  # a request from now on starts a sender of its own
            if pooled is not None:
                await greenlet_spawn(pooled.close)

    async def _lingered(self, lane: _Lane) -> bool:
        """Whether another request came within :attr:`linger` of the last batch (then send it on the
        connection still held)."""
        idle = lane.idle = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.linger):
                await idle
        except TimeoutError:
            pass
        finally:
            lane.idle = None
        return bool(lane.waiting)

    def _take(self, lane: _Lane) -> list[_Waiting]:
        """The next batch: the oldest waiting requests, no two with the same exclusive key."""
        batch: list[_Waiting] = []
        keys: set[object] = set()
        left: list[_Waiting] = []
        for waiting in lane.waiting:
            if waiting.answer.done():  # cancelled while waiting: nothing to send
                continue
            key = waiting.exclusive
            if len(batch) >= self.max_copies or (key is not None and key in keys):
                left.append(waiting)
                continue
            batch.append(waiting)
            if key is not None:
                keys.add(key)
        lane.waiting = left
        return batch

    async def _run(self, pooled: PoolProxiedConnection, statement: hot.HotStatement, batch: list[_Waiting]) -> None:
        dialect = self._engine.dialect
        try:
            answers = await hot.fetch_copies(pooled, dialect, statement, [waiting.params for waiting in batch])
        except Exception as error:
            if len(batch) == 1 or not _worth_alone(error):
                raise
            log.info("a batch of %d failed (%s); running each on its own", len(batch), type(error).__name__)
            for waiting in batch:
                try:
                    (rows,) = await hot.fetch_copies(pooled, dialect, statement, [waiting.params])
                except Exception as alone:
                    _settle(waiting, error=alone)
                else:
                    _settle(waiting, rows=rows)
            return
        for waiting, rows in zip(batch, answers, strict=True):
            _settle(waiting, rows=rows)


def _worth_alone(error: BaseException) -> bool:
    """Whether a failed batch's copies should each be tried on their own: the database refused the
    statement (not a lost connection, a pool timeout or a cancellation)."""
    if not isinstance(error, sa_exc.DBAPIError) or error.connection_invalidated:
        return False
    return not isinstance(error, sa_exc.OperationalError)


def _settle(waiting: _Waiting, *, rows: list[dict[str, Any]] | None = None, error: BaseException | None = None) -> None:
    if waiting.answer.done():
        return
    if isinstance(error, asyncio.CancelledError):
        waiting.answer.cancel()
    elif error is not None:
        waiting.answer.set_exception(error)
    else:
        waiting.answer.set_result(rows if rows is not None else [])
