"""How a command reaches the database: the session factory, the schema check, and one line for an outage.

Also the clock (``now``) and event loop (``run``) every command uses around its session work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.cli.errors import CliError
from issuer.settings import Settings

__all__ = ["Sessions", "database_problem", "ensure_schema", "now", "redact", "run", "with_sessions"]

T = TypeVar("T")
Sessions = async_sessionmaker[AsyncSession]


def now() -> datetime:
    return datetime.now(UTC)


def run(work: Awaitable[T]) -> T:
    return asyncio.run(work)  # type: ignore[arg-type]


async def with_sessions(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    from issuer.store.engine import make_engine, make_session_factory

    engine = make_engine(settings.database_url, pool_size=2)
    try:
        return await work(make_session_factory(engine))
    finally:
        await engine.dispose()


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def where(url: str) -> str:
    """``host:port/database`` of a database URL, for error messages."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return f"SQLite file {parsed.database}"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def ensure_schema(settings: Settings) -> None:
    """SQLite (the embedded default) migrates itself; Postgres must already be at this release's schema.

    Raises :class:`CliError` saying to run ``issuer migrate`` when it is not.
    """
    from issuer.store.migrate import current_revision, head, upgrade

    if settings.is_sqlite:
        from issuer.service.ca.setup import ensure_state_dir

        ensure_state_dir(settings)
        upgrade(settings.database_url)
        return
    current = run(current_revision(settings.database_url))
    wanted = head()
    if current != wanted:
        state = "has no issuer schema" if current is None else f"is at schema revision {current}"
        raise CliError(
            f"the database at {where(settings.database_url)} {state}; "
            f"this release needs {wanted}: run `issuer migrate`",
            code="schema_not_migrated",
        )


def database_problem(exc: BaseException, settings: Settings | None) -> str | None:
    """One line for a database failure (unreachable, refused, no such database, wrong user or
    password), naming host, port, database and user, or None if ``exc`` is not one."""
    from issuer.faults import is_database_outage

    refusal = _refusal(exc)
    if refusal is None and not is_database_outage(exc):
        return None
    target = _target(settings.database_url) if settings else "the database"
    reason = _first_line(refusal or _innermost(exc))
    if refusal is not None and str(getattr(refusal, "sqlstate", "")) == _NO_DATABASE:
        check = "check the database name in ISSUER_DATABASE_URL (or [issuer] database_url), or create it"
    elif refusal is not None:
        check = "check the user and password in ISSUER_DATABASE_URL (or [issuer] database_url)"
    else:
        check = "check ISSUER_DATABASE_URL (or [issuer] database_url) and that the server is running"
    return f"cannot use {target}: {reason}; {check}"


def _target(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return f"the SQLite database {parsed.database}"
    return (
        f"database {parsed.database or ''!r} on {parsed.host or 'localhost'}:{parsed.port or 5432} "
        f"as user {parsed.username or '(none)'!r}"
    )


# SQLSTATEs of a server that answered but refused: no such database, no such role or not allowed
# (pg_hba), wrong password.
_NO_DATABASE = "3D000"
_REFUSED_STATES = frozenset({_NO_DATABASE, "28000", "28P01"})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's ``orig`` (an adapter error) and the driver's own error below it."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = getattr(current, "orig", None) or current.__cause__
    return seen


def _refusal(exc: BaseException) -> BaseException | None:
    for candidate in reversed(_chain(exc)):  # the driver's own error names itself best
        if str(getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)) in _REFUSED_STATES:
            return candidate
    return None


def _innermost(exc: BaseException) -> BaseException:
    return _chain(exc)[-1]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text.splitlines()[0]}" if text else name
