"""Shared fixtures: real Postgres databases made through the migrations, a CA, the app.

Postgres comes from ``ISSUER_TEST_DATABASE_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``). Each test that asks for a
database gets a fresh one cloned from a template that ``alembic upgrade head``
built once per run, and dropped afterwards. Without a reachable Postgres those
tests skip with a loud reason, except under ``CI``, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from issuer.store.migrate import upgrade

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("ISSUER_TEST_DATABASE_URL", DEFAULT_PG)


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_execute(*statements: str) -> None:
    conn = await asyncpg.connect(_dsn(PG_URL), timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _pg_reachable() -> str | None:
    try:
        asyncio.run(_pg_execute("SELECT 1"))
        return None
    except Exception as exc:  # any failure means "not reachable" for the skip decision
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """The name of a migrated template database (built once per test run)."""
    problem = _pg_reachable()
    if problem is not None:
        message = f"Postgres at {make_url(PG_URL).render_as_string(hide_password=True)} is not reachable ({problem})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(f"SKIPPING POSTGRES TESTS: {message}")
    name = f"issuer_tmpl_{secrets.token_hex(4)}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    try:
        upgrade(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
        yield name
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated Postgres database for one test; dropped afterwards."""
    name = f"issuer_t_{secrets.token_hex(6)}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on a migrated Postgres and on the embedded SQLite."""
    return str(request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url"))


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def engine_for() -> AsyncIterator[object]:
    """Make engines that are disposed at the end of the test."""
    from issuer.store.engine import make_engine

    made = []

    def factory(url: str):  # type: ignore[no-untyped-def]
        engine = make_engine(url)
        made.append(engine)
        return engine

    yield factory
    for engine in made:
        await engine.dispose()
