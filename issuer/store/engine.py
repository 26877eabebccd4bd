"""Engines and session factories, the one place that knows database URLs; and whether the database answers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from issuer.store import hot
from issuer.store.batch import Batches


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 0, pool_timeout: float = 5.0) -> AsyncEngine:
    """An async engine for ``url`` (``postgresql+asyncpg://`` or ``sqlite+aiosqlite://``).

    Postgres: ``pool_size`` connections kept open (with ``max_overflow`` more on bursts, closed
    when idle); a request that cannot get one within ``pool_timeout`` seconds fails (503). No
    pre-ping on checkout (three round trips each time): a connection that died is invalidated by
    the first statement that fails on it — with the whole pool when SQLAlchemy ran the statement,
    alone when it was a hot-path statement (``issuer.store.hot``, ``issuer.store.batch``) — and
    that request gets 503 with Retry-After; connections are recycled after 5 minutes.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout, pool_recycle=300
    )


class Session(AsyncSession):
    """An :class:`AsyncSession` whose ``async with`` ends at once when there is nothing to close.

    On the hot path a session often never holds a connection (its statements went in batches,
    :mod:`issuer.store.batch`); SQLAlchemy's exit would still close it in a task of its own,
    shielded, through a greenlet: about 80 µs of CPU a request, for nothing. With a transaction,
    a loaded object or a pending one it closes exactly as SQLAlchemy's does.
    """

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        sync = self.sync_session
        if sync.in_transaction() or sync.identity_map or sync.new:
            await super().__aexit__(type_, value, traceback)


def make_session_factory(engine: AsyncEngine, *, batch: bool = True) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine``; on Postgres with ``batch``, their batchable hot statements run together
    with other requests' (:mod:`issuer.store.batch`)."""
    # expire_on_commit=False: rows stay readable after the commit that precedes the response.
    sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False, class_=Session)
    if batch and engine.dialect.name == "postgresql":
        sessions.configure(info={hot.BATCHER: Batches(engine)})
    return sessions


async def close_sessions(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Give back the pooled connections the sessions' batcher holds (before ``engine.dispose()``)."""
    batcher = sessions.kw.get("info", {}).get(hot.BATCHER)
    if isinstance(batcher, Batches):
        await batcher.aclose()


# Reads a table of the schema, so a database that answers but was never migrated is not "ready".
_PING = text("SELECT 1 FROM ca_issuers LIMIT 1")


async def ping(engine: AsyncEngine) -> None:
    """One round trip to the database through ``engine``'s pool; raises whatever the driver raises."""
    async with engine.connect() as connection:
        await connection.execute(_PING)
