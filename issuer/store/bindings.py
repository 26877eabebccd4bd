"""EC2 instance bindings (trust on first use), unique per (account, instance)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store import hot
from issuer.store.denials import IN_FORCE_JSON, InForce, denials_from_json
from issuer.store.models import InstanceBinding
from issuer.store.records import BindingRecord, record_of

__all__ = [
    "CREATE_STEP",
    "UPDATE_STEP",
    "create_binding",
    "delete_binding",
    "list_bindings",
    "lock_binding",
    "peek_binding",
    "update_binding",
]


_BINDINGS = InstanceBinding.metadata.tables[InstanceBinding.__tablename__]
# Built once; run with values (the EC2 issuance hot path).
_LOCK = hot.HotStatement(
    select(*(_BINDINGS.c[f.name] for f in fields(BindingRecord)))
    .where(_BINDINGS.c.account_id == bindparam("p_account"), _BINDINGS.c.instance_id == bindparam("p_instance"))
    .with_for_update()
)
_CREATE = hot.HotStatement(
    insert(_BINDINGS).values(
        {
            name: bindparam(name)
            for name in (
                "account_id",
                "instance_id",
                "region",
                "role",
                "nonce_hash",
                "pending_time",
                "created_at",
                "updated_at",
            )
        }
    )
)
_UPDATE = hot.HotStatement(
    update(_BINDINGS)
    .where(_BINDINGS.c.account_id == bindparam("p_account"), _BINDINGS.c.instance_id == bindparam("p_instance"))
    .values(
        role=bindparam("p_role"),
        nonce_hash=bindparam("p_nonce_hash"),
        pending_time=bindparam("p_pending_time"),
        updated_at=bindparam("p_now"),
    )
)


# EC2 issuance on Postgres reads the binding (with the deny list) first, decides, signs, then
# writes the binding in the statement that records the certificate (a claim step of
# issuer.store.certificates.record_claimed): created if still absent, or updated if still exactly
# as read. Either matches nothing when another attestation changed it meanwhile.
_PEEK = hot.HotStatement(
    select(*(_BINDINGS.c[f.name] for f in fields(BindingRecord)), IN_FORCE_JSON).select_from(
        hot.ONE_ROW.outerjoin(
            _BINDINGS,
            and_(_BINDINGS.c.account_id == bindparam("p_account"), _BINDINGS.c.instance_id == bindparam("p_instance")),
        )
    ),
    batch="union",
)
CREATE_STEP = (
    "INSERT INTO instance_bindings "
    "(account_id, instance_id, region, role, nonce_hash, pending_time, created_at, updated_at) "
    "VALUES (:c_account, :c_instance, :c_region, :c_role, :c_nonce_hash, :c_pending_time, :created_at, :created_at) "
    "ON CONFLICT (account_id, instance_id) DO NOTHING RETURNING id"
)
UPDATE_STEP = (
    "UPDATE instance_bindings SET role = :c_role, nonce_hash = :c_nonce_hash, pending_time = :c_pending_time, "
    "updated_at = :created_at "
    "WHERE account_id = :c_account AND instance_id = :c_instance "
    "AND nonce_hash = :c_seen_nonce_hash AND pending_time = :c_seen_pending_time RETURNING id"
)


async def peek_binding(
    session: AsyncSession, *, account_id: str, instance_id: str, now: datetime
) -> tuple[BindingRecord | None, list[InForce]]:
    """The instance's binding (None: not bound) and the denials in force at ``now``; no lock, no transaction."""
    params = {"p_account": account_id, "p_instance": instance_id, "p_now": now}
    row = await hot.fetch_one(session, _PEEK, params, autocommit=True)
    assert row is not None  # one row always (the outer join keeps it)
    denials = denials_from_json(row.pop("denials"))
    return (BindingRecord(**row) if row["account_id"] is not None else None), denials


async def lock_binding(session: AsyncSession, *, account_id: str, instance_id: str) -> BindingRecord | None:
    """The instance's binding, row-locked until the transaction ends (Postgres), or None."""
    row = await hot.fetch_one(session, _LOCK, {"p_account": account_id, "p_instance": instance_id})
    return None if row is None else BindingRecord(**row)


async def create_binding(
    session: AsyncSession,
    *,
    account_id: str,
    instance_id: str,
    region: str,
    role: str,
    nonce_hash: str,
    pending_time: datetime,
    now: datetime,
) -> None:
    """Bind an instance; raises ``IntegrityError`` when another attestation bound it first."""
    await hot.fetch(
        session,
        _CREATE,
        {
            "account_id": account_id,
            "instance_id": instance_id,
            "region": region,
            "role": role,
            "nonce_hash": nonce_hash,
            "pending_time": pending_time,
            "created_at": now,
            "updated_at": now,
        },
    )


async def update_binding(
    session: AsyncSession,
    *,
    account_id: str,
    instance_id: str,
    role: str,
    nonce_hash: str,
    pending_time: datetime,
    now: datetime,
) -> None:
    await hot.fetch(
        session,
        _UPDATE,
        {
            "p_account": account_id,
            "p_instance": instance_id,
            "p_role": role,
            "p_nonce_hash": nonce_hash,
            "p_pending_time": pending_time,
            "p_now": now,
        },
    )


async def list_bindings(session: AsyncSession, *, limit: int = 100) -> Sequence[BindingRecord]:
    rows = (await session.scalars(select(InstanceBinding).order_by(InstanceBinding.id.desc()).limit(limit))).all()
    return [record_of(BindingRecord, r) for r in rows]


async def delete_binding(session: AsyncSession, *, instance_id: str) -> int:
    """Forget every binding of ``instance_id``; how many were removed."""
    result = await session.execute(
        delete(InstanceBinding)
        .where(InstanceBinding.instance_id == instance_id)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
