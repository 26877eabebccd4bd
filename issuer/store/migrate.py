"""Run the Alembic migrations from code (``issuer migrate``, the embedded default, the tests)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import migrations
from issuer.store.engine import make_engine

__all__ = ["alembic_config", "current_revision", "downgrade", "head", "revisions", "upgrade"]


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for ``database_url`` that works from a checkout and when installed."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head", *, quiet: bool = True) -> None:
    """Upgrade the schema; blocking (it runs its own event loop), so call it off the loop.

    ``quiet``: Alembic's INFO lines are shown only when asked for (``issuer migrate``).
    """
    logger = logging.getLogger("alembic")
    before = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        command.upgrade(alembic_config(database_url), revision)
    finally:
        logger.setLevel(before)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def revisions(database_url: str = "sqlite://") -> list[str]:
    """Every revision id, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(database_url))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def head() -> str:
    """The newest revision this release knows."""
    return revisions()[-1]


async def current_revision(database_url: str) -> str | None:
    """The schema revision the database is at; None when it was never migrated.

    Raises SQLAlchemy's errors when the database cannot be reached.
    """
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            try:
                return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
            except DBAPIError as exc:
                if _missing_table(exc):
                    return None
                raise
    finally:
        await engine.dispose()


def _missing_table(exc: DBAPIError) -> bool:
    message = str(exc.orig).lower()
    return "does not exist" in message or "no such table" in message
