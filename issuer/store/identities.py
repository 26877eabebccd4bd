"""Identities: one row per (method, principal), created at the first issuance and refreshed at every later one.

Many machines share a principal (every task of an ECS service has the same role ARN) and
their first issuances race, so the write is one ``INSERT … ON CONFLICT DO UPDATE``: on its
own (:func:`upsert_identity`) or as the first step of the issuance statement
(:func:`upsert_step`).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import Identity
from issuer.store.records import IdentityRecord, NewIdentity

__all__ = ["IDENTITIES", "get_identity", "parameters", "upsert_identity", "upsert_step"]

IDENTITIES = Identity.metadata.tables[Identity.__tablename__]
_REFRESHED = ("account_id", "region", "attributes", "last_seen")


def _upsert_statement(dialect_insert: Any) -> Any:
    statement = dialect_insert(IDENTITIES)
    refreshed = {name: statement.excluded[name] for name in _REFRESHED}
    return statement.on_conflict_do_update(
        index_elements=[IDENTITIES.c.method, IDENTITIES.c.principal], set_=refreshed
    ).returning(IDENTITIES.c.id)


# Built once, run with a dict of values.
_UPSERT = {"postgresql": _upsert_statement(pg_insert), "sqlite": _upsert_statement(sqlite_insert)}
_GET = select(*(IDENTITIES.c[f.name] for f in fields(IdentityRecord))).where(IDENTITIES.c.id == bindparam("p_id"))


async def upsert_identity(session: AsyncSession, identity: NewIdentity, *, now: datetime) -> int:
    """The id of the identity row for (method, principal), created or refreshed."""
    connection = await session.connection()
    values = {
        "method": identity.method,
        "principal": identity.principal,
        "account_id": identity.account_id,
        "region": identity.region,
        "attributes": dict(identity.attributes),
        "first_seen": now,
        "last_seen": now,
    }
    result = await connection.execute(_UPSERT[connection.dialect.name], values)
    return int(result.scalar_one())


def upsert_step(*, prefix: str, after: str | None = None) -> str:
    """SQL (Postgres) for the CTE step of :func:`upsert_identity`, ``RETURNING id``.

    Its bind parameters are :func:`parameters` and ``:created_at``. With ``after`` (the name of an
    earlier CTE step), the identity is written only if that step returned a row.
    """
    p = prefix
    refreshed = ", ".join(f"{name} = EXCLUDED.{name}" for name in _REFRESHED)
    values = f":{p}method, :{p}principal, :{p}account_id, :{p}region, :{p}attributes, :created_at, :created_at"
    held = f"SELECT {values} FROM (SELECT 1 FROM {after} LIMIT 1) AS held"  # noqa: S608 - constant names only
    source = f"VALUES ({values})" if after is None else held
    # Only this module's constant names are interpolated; every value is a bind parameter.
    return (
        "INSERT INTO identities (method, principal, account_id, region, attributes, first_seen, last_seen) "
        f"{source} ON CONFLICT (method, principal) DO UPDATE SET {refreshed} RETURNING id"
    )


def parameters(identity: NewIdentity, *, prefix: str) -> dict[str, Any]:
    """The bind parameters of :func:`upsert_step` for ``identity``."""
    return {
        f"{prefix}method": identity.method,
        f"{prefix}principal": identity.principal,
        f"{prefix}account_id": identity.account_id,
        f"{prefix}region": identity.region,
        f"{prefix}attributes": dict(identity.attributes),
    }


async def get_identity(session: AsyncSession, identity_id: int) -> IdentityRecord | None:
    connection = await session.connection()
    row = (await connection.execute(_GET, {"p_id": identity_id})).mappings().first()
    return None if row is None else IdentityRecord(**row)
