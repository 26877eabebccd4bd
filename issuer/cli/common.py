"""What every ``issuer`` subcommand shares: the clock, sessions, the schema check, output, and one-line errors."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.errors import IssuerError
from issuer.settings import Settings

__all__ = [
    "CliError",
    "Sessions",
    "database_problem",
    "ensure_schema",
    "now",
    "print_json",
    "print_table",
    "redact",
    "run",
    "with_sessions",
]

T = TypeVar("T")
Sessions = async_sessionmaker[AsyncSession]


class CliError(IssuerError):
    """A failure of a command, said in one line; ``exit_status`` is what the command exits with."""

    default_code = "cli_error"

    def __init__(self, detail: str, *, code: str | None = None, exit_status: int = 1) -> None:
        super().__init__(detail, code=code)
        self.exit_status = exit_status


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
        from issuer.ca_setup import ensure_state_dir

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
    """One line for a database failure (unreachable, refused, wrong credentials), or None if it is not one."""
    from issuer.service.faults import is_database_outage

    if not is_database_outage(exc) and not _is_auth_or_catalog(exc):
        return None
    target = where(settings.database_url) if settings else "the database"
    reason = _first_line(getattr(exc, "orig", None) or exc)
    return (
        f"cannot use the database at {target}: {reason}; "
        "check ISSUER_DATABASE_URL (or [issuer] database_url) and that the server is running"
    )


def _is_auth_or_catalog(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(getattr(exc, "orig", None) or exc).__mro__}
    return bool(names & {"InvalidPasswordError", "InvalidCatalogNameError", "InvalidAuthorizationSpecificationError"})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text.splitlines()[0]}" if text else name


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns sized to their content, the last one free."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers[:-1])]

    def line(values: Sequence[str]) -> str:
        return " ".join(v.ljust(w) for v, w in zip(values, widths, strict=False)) + " " + values[-1]

    print(line(headers))
    for row in cells:
        print(line(row))


def fail(message: str, *, code: str = "cli_error", exit_status: int = 1) -> CliError:
    return CliError(message, code=code, exit_status=exit_status)


def stderr(message: str) -> None:
    print(message, file=sys.stderr)
