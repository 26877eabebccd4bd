"""The CA issuer registry's rows: roots and issuing CAs with their life-cycle state.

At most one issuer is ``active`` (a partial unique index), so two operators
activating different issuers on two replicas cannot both win.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import CaIssuer, CaRoot, Certificate
from issuer.store.records import IssuerRecord, RootRecord, record_of

__all__ = [
    "activate_issuer",
    "add_issuer",
    "add_root",
    "get_issuer",
    "leaf_stats",
    "list_issuers",
    "list_roots",
    "registry_version",
    "retire_issuer",
]


async def list_issuers(session: AsyncSession) -> Sequence[IssuerRecord]:
    rows = (await session.scalars(select(CaIssuer).order_by(CaIssuer.id))).all()
    return [record_of(IssuerRecord, r) for r in rows]


async def list_roots(session: AsyncSession) -> Sequence[RootRecord]:
    rows = (await session.scalars(select(CaRoot).order_by(CaRoot.id))).all()
    return [record_of(RootRecord, r) for r in rows]


async def get_issuer(session: AsyncSession, *, fingerprint_prefix: str) -> Sequence[IssuerRecord]:
    """Issuers whose SHA-256 fingerprint starts with ``fingerprint_prefix`` (lower-case hex)."""
    rows = (
        await session.scalars(select(CaIssuer).where(CaIssuer.fingerprint_sha256.startswith(fingerprint_prefix)))
    ).all()
    return [record_of(IssuerRecord, r) for r in rows]


async def registry_version(session: AsyncSession) -> tuple[object, ...]:
    """A cheap fingerprint of the registry: changes whenever a root or issuer row changes."""
    issuers = (await session.execute(select(func.count(CaIssuer.id), func.max(CaIssuer.updated_at)))).one()
    roots = (await session.execute(select(func.count(CaRoot.id), func.max(CaRoot.updated_at)))).one()
    return (*issuers, *roots)


async def add_root(
    session: AsyncSession,
    *,
    fingerprint_sha256: str,
    subject: str,
    certificate_pem: str,
    key_ref: str | None,
    not_before: datetime,
    not_after: datetime,
    now: datetime,
) -> None:
    """Register a root (state ``active``) unless its fingerprint is registered already."""
    exists = await session.scalar(select(CaRoot.id).where(CaRoot.fingerprint_sha256 == fingerprint_sha256))
    if exists is not None:
        return
    await session.execute(
        insert(CaRoot).values(
            fingerprint_sha256=fingerprint_sha256,
            subject=subject,
            certificate_pem=certificate_pem,
            key_ref=key_ref,
            state="active",
            not_before=not_before,
            not_after=not_after,
            created_at=now,
            updated_at=now,
        )
    )


async def add_issuer(
    session: AsyncSession,
    *,
    fingerprint_sha256: str,
    subject: str,
    serial: str,
    certificate_pem: str,
    chain_pem: str,
    key_ref: str,
    state: str,
    not_before: datetime,
    not_after: datetime,
    now: datetime,
) -> int:
    """Register an issuing CA in ``state``; its id. Raises ``IntegrityError`` for a second active one."""
    result = await session.execute(
        insert(CaIssuer)
        .values(
            fingerprint_sha256=fingerprint_sha256,
            subject=subject,
            serial=serial,
            certificate_pem=certificate_pem,
            chain_pem=chain_pem,
            key_ref=key_ref,
            state=state,
            not_before=not_before,
            not_after=not_after,
            created_at=now,
            updated_at=now,
            activated_at=now if state == "active" else None,
        )
        .returning(CaIssuer.id)
    )
    return int(result.scalar_one())


async def activate_issuer(session: AsyncSession, *, issuer_id: int, now: datetime) -> None:
    """Make ``issuer_id`` the active issuer; the one active before goes back to ``prepared``.

    Both updates commit together; the partial unique index refuses two actives.
    """
    await session.execute(
        update(CaIssuer)
        .where(CaIssuer.state == "active", CaIssuer.id != issuer_id)
        .values(state="prepared", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(CaIssuer)
        .where(CaIssuer.id == issuer_id)
        .values(state="active", activated_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def retire_issuer(session: AsyncSession, *, issuer_id: int, now: datetime) -> None:
    await session.execute(
        update(CaIssuer)
        .where(CaIssuer.id == issuer_id)
        .values(state="retired", retired_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def leaf_stats(session: AsyncSession, *, now: datetime) -> dict[int, tuple[int, int, datetime | None]]:
    """Per issuer id: (leaves issued, leaves not yet expired, the latest not_after)."""
    live = func.sum(func.cast(Certificate.not_after > now, Certificate.id.type))
    rows = await session.execute(
        select(Certificate.issuer_id, func.count(Certificate.id), live, func.max(Certificate.not_after)).group_by(
            Certificate.issuer_id
        )
    )
    return {int(i): (int(n), int(alive or 0), last) for i, n, alive, last in rows.tuples()}
