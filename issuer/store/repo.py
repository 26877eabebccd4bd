"""Repository functions: each takes a session and never commits (the service does)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import (
    Attestation,
    CaIssuer,
    Certificate,
    Identity,
    InstanceBinding,
    JoinToken,
    ReplayGuard,
)


async def upsert_identity(
    session: AsyncSession,
    *,
    method: str,
    principal: str,
    account_id: str | None,
    region: str | None,
    attributes: dict[str, Any],
    now: datetime,
) -> Identity:
    """The identity row for (method, principal), created or refreshed.

    One ``INSERT … ON CONFLICT DO UPDATE``: many machines share a principal (every
    task of an ECS service has the same role ARN), and their first issuances race.
    """
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = {"account_id": account_id, "region": region, "attributes": attributes, "last_seen": now}
    statement = (
        insert(Identity)
        .values(method=method, principal=principal, first_seen=now, **values)
        .on_conflict_do_update(index_elements=[Identity.method, Identity.principal], set_=values)
        .returning(Identity)
    )
    return (await session.execute(statement, execution_options={"populate_existing": True})).scalar_one()


async def add_attestation(
    session: AsyncSession,
    *,
    method: str,
    outcome: str,
    request_id: str,
    now: datetime,
    code: str | None = None,
    reason: str | None = None,
    principal: str | None = None,
    role: str | None = None,
    certificate_serial: str | None = None,
    remote_addr: str | None = None,
) -> None:
    session.add(
        Attestation(
            method=method,
            outcome=outcome,
            code=code,
            reason=reason,
            principal=principal,
            role=role,
            certificate_serial=certificate_serial,
            remote_addr=remote_addr,
            request_id=request_id,
            created_at=now,
        )
    )
    await session.flush()


async def ensure_issuer(
    session: AsyncSession,
    *,
    fingerprint_sha256: str,
    subject: str,
    serial: str,
    certificate_pem: str,
    key_ref: str,
    not_before: datetime,
    not_after: datetime,
    now: datetime,
) -> CaIssuer:
    """The ``ca_issuers`` row for this certificate, registered as active when new."""
    row = await session.scalar(select(CaIssuer).where(CaIssuer.fingerprint_sha256 == fingerprint_sha256))
    if row is None:
        row = CaIssuer(
            fingerprint_sha256=fingerprint_sha256,
            subject=subject,
            serial=serial,
            certificate_pem=certificate_pem,
            key_ref=key_ref,
            state="active",
            not_before=not_before,
            not_after=not_after,
            created_at=now,
        )
        session.add(row)
        await session.flush()
    return row


async def add_certificate(session: AsyncSession, row: Certificate) -> Certificate:
    session.add(row)
    await session.flush()
    return row


async def get_certificate(session: AsyncSession, serial: str) -> Certificate | None:
    return await session.scalar(select(Certificate).where(Certificate.serial == serial.lower()))


async def list_certificates(
    session: AsyncSession, *, limit: int = 50, status: str | None = None, principal: str | None = None
) -> Sequence[tuple[Certificate, Identity]]:
    query = select(Certificate, Identity).join(Identity, Certificate.identity_id == Identity.id)
    if status:
        query = query.where(Certificate.status == status)
    if principal:
        query = query.where(Identity.principal == principal)
    rows = await session.execute(query.order_by(Certificate.id.desc()).limit(limit))
    return [(c, i) for c, i in rows.tuples()]


async def get_identity(session: AsyncSession, identity_id: int) -> Identity | None:
    return await session.get(Identity, identity_id)


# Join tokens -------------------------------------------------------------------------


async def add_join_token(
    session: AsyncSession, *, token_hash: str, name: str, role: str, now: datetime, expires_at: datetime
) -> JoinToken:
    row = JoinToken(token_hash=token_hash, name=name, role=role, created_at=now, expires_at=expires_at)
    session.add(row)
    await session.flush()
    return row


async def consume_join_token(
    session: AsyncSession, *, token_hash: str, now: datetime, request_id: str
) -> JoinToken | None:
    """Mark the token used if it is unused and unexpired; the row, or None.

    One conditional UPDATE: under concurrent use the database lets exactly one
    transaction see the row unused; the others find ``used_at`` set (Postgres
    re-checks the WHERE clause after the winner commits).
    """
    result = await session.execute(
        update(JoinToken)
        .where(JoinToken.token_hash == token_hash, JoinToken.used_at.is_(None), JoinToken.expires_at > now)
        .values(used_at=now, used_by_request_id=request_id)
        .returning(JoinToken)
        .execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none()


async def find_join_token(session: AsyncSession, *, token_hash: str) -> JoinToken | None:
    return await session.scalar(select(JoinToken).where(JoinToken.token_hash == token_hash))


async def list_join_tokens(session: AsyncSession, *, include_used: bool = False) -> Sequence[JoinToken]:
    query = select(JoinToken)
    if not include_used:
        query = query.where(JoinToken.used_at.is_(None))
    return (await session.scalars(query.order_by(JoinToken.id.desc()))).all()


# Replay guards and EC2 bindings -----------------------------------------------------


async def add_replay_guard(
    session: AsyncSession, *, kind: str, digest: str, expires_at: datetime, now: datetime
) -> None:
    """Record a single-use proof; the unique ``digest`` raises IntegrityError on a second use."""
    session.add(ReplayGuard(kind=kind, digest=digest, expires_at=expires_at, created_at=now))
    await session.flush()


async def get_instance_binding(
    session: AsyncSession, *, account_id: str, instance_id: str, lock: bool = False
) -> InstanceBinding | None:
    query = select(InstanceBinding).where(
        InstanceBinding.account_id == account_id, InstanceBinding.instance_id == instance_id
    )
    if lock:
        query = query.with_for_update()
    return await session.scalar(query)


async def list_instance_bindings(session: AsyncSession, *, limit: int = 100) -> Sequence[InstanceBinding]:
    return (await session.scalars(select(InstanceBinding).order_by(InstanceBinding.id.desc()).limit(limit))).all()


async def delete_instance_binding(session: AsyncSession, *, instance_id: str) -> int:
    rows = (await session.scalars(select(InstanceBinding).where(InstanceBinding.instance_id == instance_id))).all()
    for row in rows:
        await session.delete(row)
    await session.flush()
    return len(rows)
