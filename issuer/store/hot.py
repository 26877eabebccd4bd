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

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

from sqlalchemy import bindparam, literal_column, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

__all__ = ["BATCHER", "ONE_ROW", "HotStatement", "copies_of_ctes", "fetch", "fetch_copies", "fetch_one"]

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

    def union(self, copies: int) -> _Copies:
        """``copies`` of this read in one statement: ``SELECT k, c.* FROM (copy k) c UNION ALL ...``."""
        count = len(self.order)
        found = [int(n) for n in _PLACEHOLDER.findall(self.sql)]
        # Every $n is a parameter of this statement (none inside a literal), or renumbering would break it.
        assert sorted(set(found)) == list(range(1, count + 1)), self.sql

        def copy(k: int) -> str:
            return _PLACEHOLDER.sub(lambda m: f"${int(m[1]) + k * count}", self.sql)

        # Only this statement's own compiled SQL and integers are interpolated; values stay parameters.
        sql = " UNION ALL ".join(f"SELECT {k} AS {BATCH_INDEX}, c{k}.* FROM ({copy(k)}) AS c{k}" for k in range(copies))  # noqa: S608
        return _Copies(sql, self, copies, union=True)

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        binds, values = self.binds, {**self.constants, **params}
        return [binds[name](values[name]) if name in binds else values[name] for name in self.order]

    def row(self, record: Any) -> dict[str, Any]:
        if not self.results:  # text(): no typed columns
            return dict(record.items())
        return self.row_of(record.values())

    def row_of(self, values: Iterable[Any]) -> dict[str, Any]:
        """A row from its column values, in the statement's column order, each through its type's processor."""
        return {
            key: (process(value) if process is not None else value)
            for (key, process), value in zip(self.results, values, strict=True)
        }


_PLACEHOLDER = re.compile(r"\$(\d+)")
# The column that says which copy a row of a batched statement answers.
BATCH_INDEX = "batch_index"


class _Copies:
    """Several requests' copies of one statement run as one: their arguments in, each copy's rows out."""

    __slots__ = ("compiled", "copies", "sql", "union")

    def __init__(self, sql: str, compiled: _Compiled, copies: int, *, union: bool) -> None:
        self.sql, self.compiled, self.copies, self.union = sql, compiled, copies, union

    def arguments(self, params: Sequence[Mapping[str, Any]]) -> list[Any]:
        if self.union:
            return [argument for one in params for argument in self.compiled.arguments(one)]
        # copies_of_ctes: copy k's parameters are named with the suffix __k.
        return self.compiled.arguments(
            {f"{name}__{k}": value for k, one in enumerate(params) for name, value in one.items()}
        )

    def rows(self, records: Sequence[Any]) -> list[list[dict[str, Any]]]:
        answers: list[list[dict[str, Any]]] = [[] for _ in range(self.copies)]
        for record in records:
            if self.union:
                index, *values = record.values()
                row = self.compiled.row_of(values)
            else:
                row = self.compiled.row(record)
                index = row.pop(BATCH_INDEX)
            answers[index].append(row)
        return answers


Batching = Literal["union"] | Callable[[int], Executable] | None


class HotStatement:
    """A Core statement for the hot path; build once at import, run with a dict of values.

    ``batch``: how copies of it for several requests run as one statement (see
    :mod:`issuer.store.batch`): ``"union"`` for a read (``UNION ALL`` of the copies), or a function
    of the number of copies returning the statement (:func:`copies_of_ctes` for a write made of
    CTE steps). None: never batched.
    """

    __slots__ = ("_compiled", "_copies", "batch", "clause", "elsewhere")

    def __init__(self, clause: Executable, *, elsewhere: Executable | None = None, batch: Batching = None) -> None:
        self.clause = clause
        # What runs on other dialects (SQLite), where it differs (no Postgres JSON functions).
        self.elsewhere = clause if elsewhere is None else elsewhere
        self.batch = batch
        self._compiled: dict[int, _Compiled] = {}
        self._copies: dict[tuple[int, int], _Copies] = {}

    def compiled_for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(id(dialect))
        if found is None:
            found = self._compiled[id(dialect)] = _Compiled(self.clause, dialect)
        return found

    def copies_for(self, dialect: Dialect, copies: int) -> _Copies:
        """``copies`` of this statement as one, compiled for ``dialect`` (built on first use)."""
        found = self._copies.get((id(dialect), copies))
        if found is None:
            if self.batch == "union":
                found = self.compiled_for(dialect).union(copies)
            else:
                assert callable(self.batch), "statement is not batchable"
                compiled = _Compiled(self.batch(copies), dialect)
                found = _Copies(compiled.sql, compiled, copies, union=False)
            self._copies[(id(dialect), copies)] = found
        return found


def copies_of_ctes(
    sql: str, *, ctes: Sequence[str], types: Mapping[str, TypeEngine[Any]]
) -> Callable[[int], Executable]:
    """For ``HotStatement(batch=...)``: copies of a ``WITH step AS (...), ... SELECT ...`` statement.

    Each copy's steps (``ctes``, the step names) and ``:parameters`` get the suffix ``__k``; the
    steps all go in one ``WITH`` (a data-modifying step must be at the top level), and the copies'
    final ``SELECT`` s are joined by ``UNION ALL`` with the copy's index as ``batch_index``.
    ``types``: the parameters' types, as given to ``text().bindparams``. The steps of one statement
    share one snapshot, so copies must not write the same row (the batcher's ``exclusive`` keys).
    """
    assert sql.startswith("WITH "), sql
    cut = sql.rindex("\nSELECT ")
    steps, final = sql[len("WITH ") : cut], sql[cut + 1 :]
    names = re.compile(r"\b(" + "|".join(map(re.escape, ctes)) + r")\b")
    params = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

    def copy(part: str, k: int) -> str:
        return params.sub(rf":\1__{k}", names.sub(rf"\1__{k}", part))

    def build(copies: int) -> Executable:
        body = ",\n".join(copy(steps, k) for k in range(copies))
        finals = " UNION ALL ".join(
            f"SELECT {k} AS {BATCH_INDEX}, f{k}.* FROM ({copy(final, k)}) AS f{k}"  # noqa: S608 - constant SQL
            for k in range(copies)
        )
        typed = [bindparam(f"{name}__{k}", type_=type_) for k in range(copies) for name, type_ in types.items()]
        return text(f"WITH {body}\n{finals}").bindparams(*typed)

    return build


class Batcher(Protocol):
    """What :func:`fetch` hands a batchable statement to (:class:`issuer.store.batch.Batches`)."""

    async def fetch(
        self, statement: HotStatement, params: Mapping[str, Any], exclusive: object | None
    ) -> list[dict[str, Any]]: ...


# session.info key of the sessions' batcher (see issuer.store.engine.make_session_factory).
BATCHER = "issuer.store.batch"


async def fetch(
    session: AsyncSession,
    statement: HotStatement,
    params: Mapping[str, Any],
    *,
    autocommit: bool = False,
    exclusive: object | None = None,
) -> list[dict[str, Any]]:
    """Run ``statement`` in ``session``'s transaction (begun if it was not); its rows as dicts.

    ``autocommit``: on Postgres, when the session has not begun a transaction on the database,
    run the statement on its own (a read, or a write that must stand whatever follows) without
    one: a round trip instead of three. On other dialects it runs in the session's transaction as
    usual, and the caller commits as it would anyway. A batchable statement run this way, from
    sessions that batch, goes with the same statement of other requests in flight as one
    statement (:mod:`issuer.store.batch`); ``exclusive``: a key no other copy in its batch has
    (the row it writes).
    """
    if autocommit and statement.batch is not None:
        batcher: Batcher | None = session.info.get(BATCHER)
        if batcher is not None and not session.in_transaction():
            return await batcher.fetch(statement, params, exclusive)
    bound = await _bind(session)
    if bound is None:
        connection = await session.connection()
        result = await connection.execute(statement.elsewhere, dict(params))
        return [dict(row) for row in result.mappings().all()] if result.returns_rows else []
    compiled = statement.compiled_for(bound.connection.dialect)
    arguments = compiled.arguments(params)
    records = await bound.fetch(compiled.sql, arguments, autocommit=autocommit)
    return [compiled.row(record) for record in records]


async def fetch_copies(
    pooled: PoolProxiedConnection, dialect: Dialect, statement: HotStatement, params: Sequence[Mapping[str, Any]]
) -> list[list[dict[str, Any]]]:
    """Postgres: copies of ``statement``, one per element of ``params``, as one statement outside any
    transaction, on a connection taken from the pool without a session (:mod:`issuer.store.batch`:
    a session costs about as much CPU again as the round trip); each copy's rows. A lost
    connection is invalidated in the pool."""
    copies = statement.copies_for(dialect, len(params))
    arguments = copies.arguments(params)
    try:
        records = await pooled.driver_connection.fetch(copies.sql, *arguments)  # type: ignore[union-attr]
    except Exception as error:

        async def invalidate(lost: Exception) -> None:
            pooled.invalidate(lost)

        raise await _translated(dialect, pooled.dbapi_connection, invalidate, copies.sql, arguments, error) from error
    return copies.rows(records)


async def _bind(session: AsyncSession) -> _Bound | None:
    """The driver connection of ``session``'s transaction (taken from the pool if need be); None on SQLite."""
    bound = _bound(session)
    if bound is None:
        connection = await session.connection()
        if connection.dialect.name != "postgresql":
            return None
        raw = await connection.get_raw_connection()
        bound = _Bound(session.get_transaction(), connection, raw.dbapi_connection, raw.driver_connection)
        session.info[_BOUND] = bound
    return bound


async def fetch_one(
    session: AsyncSession,
    statement: HotStatement,
    params: Mapping[str, Any],
    *,
    autocommit: bool = False,
    exclusive: object | None = None,
) -> dict[str, Any] | None:
    """The first row :func:`fetch` returns, or None."""
    rows = await fetch(session, statement, params, autocommit=autocommit, exclusive=exclusive)
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

    async def fetch(self, sql: str, arguments: list[Any], *, autocommit: bool) -> list[Any]:
        adapted = self.adapted
        try:
            if adapted._transaction is None and not autocommit:  # begin as SQLAlchemy would at its first statement
                async with adapted._execute_mutex:
                    if adapted._transaction is None:
                        await adapted._start_transaction()
            return await self.driver.fetch(sql, *arguments)  # type: ignore[no-any-return]
        except Exception as error:
            connection = self.connection
            raise await _translated(
                connection.dialect, adapted, connection.invalidate, sql, arguments, error
            ) from error


async def _translated(
    dialect: Dialect,
    adapted: Any,
    invalidate: Callable[[Exception], Awaitable[None]],
    sql: str,
    arguments: list[Any],
    error: Exception,
) -> Exception:
    """``error`` as SQLAlchemy would have raised it, the connection invalidated if it was lost."""
    if isinstance(error, sa_exc.SQLAlchemyError):
        return error
    try:
        adapted._handle_exception(error)
        translated: Exception = error
    except Exception as dbapi_error:
        translated = dbapi_error
    is_dbapi = isinstance(translated, dialect.loaded_dbapi.Error)
    lost = is_dbapi and dialect.is_disconnect(translated, adapted, None)  # type: ignore[arg-type]
    if lost:
        await invalidate(translated)
    if not is_dbapi:
        return translated  # OSError, cancellation: as the driver raised them
    return sa_exc.DBAPIError.instance(
        sql,
        arguments,
        translated,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )
