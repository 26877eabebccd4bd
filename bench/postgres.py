"""Throwaway Postgres databases next to the one ``ISSUER_TEST_DATABASE_URL`` names.

Each run creates its own databases (the issuer's and cfssl's certdb) and drops
them afterwards, so a benchmark never reads rows from an earlier one.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from bench import BenchError

__all__ = [
    "DEFAULT_URL",
    "base_url",
    "execute",
    "fetch",
    "libpq_url",
    "sessions_opened",
    "throwaway_database",
    "where",
]

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def base_url(env: Mapping[str, str]) -> str:
    """The SQLAlchemy URL of the Postgres to create databases in (``ISSUER_TEST_DATABASE_URL`` or the default)."""
    return env.get("ISSUER_TEST_DATABASE_URL") or DEFAULT_URL


def libpq_url(url: str, *, database: str | None = None) -> str:
    """``postgresql://…`` (what asyncpg and Go's lib/pq take) for a SQLAlchemy URL, optionally another database."""
    parsed = make_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def where(url: str) -> str:
    """``host:port/database``, for messages (never the password)."""
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(libpq_url(url), timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise BenchError(
            f"cannot reach Postgres at {where(url)}: {type(exc).__name__}: {exc}; "
            "set ISSUER_TEST_DATABASE_URL or start Postgres",
            code="postgres_unreachable",
        ) from None


async def execute(url: str, *statements: str) -> None:
    """Run ``statements`` one by one, outside a transaction (``CREATE DATABASE`` needs that)."""
    conn = await _connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query."""
    conn = await _connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def sessions_opened(url: str) -> int:
    """How many sessions (connections) were ever opened to ``url``'s database (``pg_stat_database``, Postgres 14+)."""
    database = make_url(url).database
    try:
        rows = await fetch(url, "SELECT sessions FROM pg_stat_database WHERE datname = $1", database)
    except asyncpg.UndefinedColumnError:  # before Postgres 14
        return 0
    return int(rows[0]["sessions"]) if rows else 0


@asynccontextmanager
async def throwaway_database(url: str, *, prefix: str, keep: bool = False) -> AsyncIterator[str]:
    """A new empty database beside ``url``'s, as a SQLAlchemy URL; dropped on exit unless ``keep``.

    Raises :class:`BenchError` ``postgres_unreachable`` when the server cannot be reached.
    """
    name = f"{prefix}_{secrets.token_hex(4)}"
    await execute(url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            await execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
