"""Migrations: the stairway (upgrade → downgrade → upgrade, one revision at a time) on Postgres and SQLite,
and the migrated schema matches the models (no drift)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url

from issuer.store.migrate import downgrade, revisions, upgrade
from issuer.store.models import Base
from tests.conftest import PG_URL, _pg_execute


@pytest.fixture(params=["postgres", "sqlite"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'stairway.db'}"
        return
    request.getfixturevalue("pg_template")  # skips (or fails under CI) without Postgres
    name = f"issuer_stair_{secrets.token_hex(4)}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_stairway(empty_db: str) -> None:
    revs = revisions()
    assert revs, "no migrations found"
    previous = "base"
    for rev in revs:
        upgrade(empty_db, rev)
        downgrade(empty_db, previous)
        upgrade(empty_db, rev)
        previous = rev


def test_migrated_schema_matches_models(empty_db: str) -> None:
    upgrade(empty_db)

    async def diff() -> list[object]:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(empty_db)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
                )
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []
