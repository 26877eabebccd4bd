"""Infrastructure failures as the client should see them: 503 with ``Retry-After``, never a 500.

A database that stopped, a pool that is exhausted or a connection that broke is
not the client's fault and not a bug of ours: the request may be retried. Anything
else that is not an :class:`IssuerError` stays a bug (500, nothing leaked).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import exc as sa_exc

from ca.errors import CAError
from issuer.errors import IssuerError, UpstreamUnavailable

__all__ = ["DATABASE_RETRY_AFTER", "as_service_error", "is_database_outage"]

DATABASE_RETRY_AFTER = 2


def is_database_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached or used right now."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return _is_connection_error(exc.orig)
    return _is_connection_error(exc)


# SQLSTATEs that say "the server is not available now": connection exceptions (class 08),
# administrator shutdown / crash / cannot connect now (57P01-57P03), too many connections (53300).
_OUTAGE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def _is_connection_error(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, OSError | ConnectionError | asyncio.TimeoutError):
        return True
    for candidate in (exc, exc.__cause__):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str) and state.startswith(_OUTAGE_STATES):
            return True
    # asyncpg's connection errors, without importing asyncpg (SQLite deployments lack it).
    module = type(exc).__module__
    names = {cls.__name__ for cls in type(exc).__mro__}
    return module.startswith("asyncpg") and bool(
        names & {"PostgresConnectionError", "ConnectionDoesNotExistError", "InterfaceError", "CannotConnectNowError"}
    )


def as_service_error(exc: BaseException) -> BaseException:
    """``exc`` itself for deliberate errors; a 503 ``database_unavailable`` for database outages."""
    if isinstance(exc, IssuerError | CAError):
        return exc
    if is_database_outage(exc):
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return UpstreamUnavailable(
            "The service's database is unavailable; try again shortly.",
            code="database_unavailable",
            reason=f"{type(exc).__name__}: {first_line[:300]}",
            retry_after=DATABASE_RETRY_AFTER,
        )
    return exc
