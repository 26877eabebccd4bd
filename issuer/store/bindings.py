"""EC2 instance bindings (trust on first use), unique per (account, instance)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import InstanceBinding
from issuer.store.records import BindingRecord, record_of

__all__ = ["create_binding", "delete_binding", "list_bindings", "lock_binding", "update_binding"]


async def lock_binding(session: AsyncSession, *, account_id: str, instance_id: str) -> BindingRecord | None:
    """The instance's binding, row-locked until the transaction ends (Postgres), or None."""
    row = await session.scalar(
        select(InstanceBinding)
        .where(InstanceBinding.account_id == account_id, InstanceBinding.instance_id == instance_id)
        .with_for_update()
    )
    return None if row is None else record_of(BindingRecord, row)


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
    await session.execute(
        insert(InstanceBinding).values(
            account_id=account_id,
            instance_id=instance_id,
            region=region,
            role=role,
            nonce_hash=nonce_hash,
            pending_time=pending_time,
            created_at=now,
            updated_at=now,
        )
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
    await session.execute(
        update(InstanceBinding)
        .where(InstanceBinding.account_id == account_id, InstanceBinding.instance_id == instance_id)
        .values(role=role, nonce_hash=nonce_hash, pending_time=pending_time, updated_at=now)
        .execution_options(synchronize_session=False)
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
