"""The issuance hot path's statements, run on the driver's own connection on Postgres.

A statement executed through SQLAlchemy's async engine costs about 110 µs of the server's
CPU more than the same statement on the asyncpg connection underneath it (greenlet
hand-offs, parameter and cursor adaptation, result wrapping); an issuance runs three to
six of them. :class:`HotStatement` keeps one Core statement as the only spelling of its
SQL: on Postgres it is compiled once for the connection's dialect (``$n`` parameters,
the columns' bind and result processors) and run with ``asyncpg`` inside the
transaction SQLAlchemy owns, so commit, rollback, pooling and the session's lifetime
stay SQLAlchemy's; on any other dialect it runs through SQLAlchemy unchanged.

Errors come out as SQLAlchemy's (``IntegrityError``, ``OperationalError``, …, with the
driver's exception as ``orig``), and a connection the driver reports lost is invalidated
in the pool, exactly as when SQLAlchemy runs the statement itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import literal_column, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["ONE_ROW", "HotStatement", "fetch", "fetch_one"]

# ``SELECT ... FROM ONE_ROW LEFT JOIN t ON <key>``: one row whether or not ``t`` has the key, so a
# hot read can return a record that may be missing beside columns that are always there.
ONE_ROW = select(literal_column("1").label("one")).subquery("one")

Row = Mapping[str, Any]
_Processor = Callable[[Any], Any]


class _Compiled:
    """One statement compiled for one Postgres dialect: SQL text, argument order and processors."""

    __slots__ = ("binds", "constants", "order", "results", "sql")

    def __init__(self, clause: Executable, dialect: Dialect) -> None:
        assert isinstance(clause, ClauseElement)
        compiled = clause.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql: str = compiled.string
        self.order: Sequence[str] = tuple(compiled.positiontup or ())
        processors: Mapping[str, Any] = compiled._bind_processors
        self.binds: Mapping[str, _Processor] = {k: v for k, v in processors.items() if v is not None}
        # Literals in the statement (``status == "active"``, ``limit(1)``) are bind parameters with a value.
        self.constants: Mapping[str, Any] = {
            name: bind.effective_value for name, bind in compiled.binds.items() if bind.value is not None
        }
        self.results: Sequence[tuple[str, _Processor | None]] = tuple(
            (entry.keyname, entry.type._cached_result_processor(dialect, None)) for entry in compiled._result_columns
        )

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        binds, values = self.binds, {**self.constants, **params}
        return [binds[name](values[name]) if name in binds else values[name] for name in self.order]

    def row(self, record: Any) -> dict[str, Any]:
        if not self.results:  # text(): no typed columns
            return dict(record.items())
        return {
            key: (process(value) if process is not None else value)
            for (key, process), value in zip(self.results, record.values(), strict=True)
        }


class HotStatement:
    """A Core statement for the hot path; build once at import, run with a dict of values."""

    __slots__ = ("_compiled", "clause", "elsewhere")

    def __init__(self, clause: Executable, *, elsewhere: Executable | None = None) -> None:
        self.clause = clause
        # What runs on other dialects (SQLite), where it differs (no Postgres JSON functions).
        self.elsewhere = clause if elsewhere is None else elsewhere
        self._compiled: dict[int, _Compiled] = {}

    def compiled_for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(id(dialect))
        if found is None:
            found = self._compiled[id(dialect)] = _Compiled(self.clause, dialect)
        return found


async def fetch(
    session: AsyncSession, statement: HotStatement, params: Mapping[str, Any], *, autocommit: bool = False
) -> list[dict[str, Any]]:
    """Run ``statement`` in ``session``'s transaction (begun if it was not); its rows as dicts.

    ``autocommit``: on Postgres, when the session has not begun a transaction on the database,
    run the statement on its own (a read, or a write that must stand whatever follows) without
    one: a round trip instead of three. On other dialects it runs in the session's transaction as
    usual, and the caller commits as it would anyway.
    """
    bound = _bound(session)
    if bound is None:
        connection = await session.connection()
        if connection.dialect.name != "postgresql":
            result = await connection.execute(statement.elsewhere, dict(params))
            return [dict(row) for row in result.mappings().all()] if result.returns_rows else []
        raw = await connection.get_raw_connection()
        bound = _Bound(session.get_transaction(), connection, raw.dbapi_connection, raw.driver_connection)
        session.info[_BOUND] = bound
    return await bound.fetch(statement.compiled_for(bound.connection.dialect), params, autocommit=autocommit)


async def fetch_one(
    session: AsyncSession, statement: HotStatement, params: Mapping[str, Any], *, autocommit: bool = False
) -> dict[str, Any] | None:
    """The first row :func:`fetch` returns, or None."""
    rows = await fetch(session, statement, params, autocommit=autocommit)
    return rows[0] if rows else None


_BOUND = "issuer.store.hot"


def _bound(session: AsyncSession) -> _Bound | None:
    """The driver connection found for this session's current transaction (None: look it up)."""
    bound: _Bound | None = session.info.get(_BOUND)
    # A new transaction may hold another pooled connection: the cache is for one transaction only.
    if bound is None or bound.transaction is None or bound.transaction is not session.get_transaction():
        return None
    return bound


class _Bound:
    """A session transaction's connection: SQLAlchemy's, its asyncpg adapter, and asyncpg's own."""

    __slots__ = ("adapted", "connection", "driver", "transaction")

    def __init__(self, transaction: Any, connection: AsyncConnection, adapted: Any, driver: Any) -> None:
        self.transaction = transaction
        self.connection = connection
        self.adapted = adapted  # SQLAlchemy's asyncpg adapter: it owns the database transaction
        self.driver = driver

    async def fetch(self, compiled: _Compiled, params: Mapping[str, Any], *, autocommit: bool) -> list[dict[str, Any]]:
        adapted = self.adapted
        arguments = compiled.arguments(params)
        try:
            if adapted._transaction is None and not autocommit:  # begin as SQLAlchemy would at its first statement
                async with adapted._execute_mutex:
                    if adapted._transaction is None:
                        await adapted._start_transaction()
            records = await self.driver.fetch(compiled.sql, *arguments)
        except Exception as error:
            raise await _translated(self.connection, adapted, compiled, arguments, error) from error
        return [compiled.row(record) for record in records]


async def _translated(
    connection: AsyncConnection, adapted: Any, compiled: _Compiled, arguments: list[Any], error: Exception
) -> Exception:
    """``error`` as SQLAlchemy would have raised it, the connection invalidated if it was lost."""
    if isinstance(error, sa_exc.SQLAlchemyError):
        return error
    dialect = connection.dialect
    try:
        adapted._handle_exception(error)
        translated: Exception = error
    except Exception as dbapi_error:
        translated = dbapi_error
    is_dbapi = isinstance(translated, dialect.loaded_dbapi.Error)
    lost = is_dbapi and dialect.is_disconnect(translated, adapted, None)  # type: ignore[arg-type]
    if lost:
        await connection.invalidate(translated)
    if not is_dbapi:
        return translated  # OSError, cancellation: as the driver raised them
    return sa_exc.DBAPIError.instance(
        compiled.sql,
        arguments,
        translated,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )
