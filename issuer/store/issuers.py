"""The CA issuer registry's rows: roots and issuing CAs with their life-cycle state.

At most one issuer is ``active`` (a partial unique index), so two operators
activating different issuers on two replicas cannot both win.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import CaIssuer, CaRoot, Certificate
from issuer.store.records import IssuerRecord, RootRecord, record_of

__all__ = [
    "activate_issuer",
    "activate_prepared_issuer",
    "add_issuer",
    "add_root",
    "get_issuer",
    "get_root",
    "latest_change",
    "leaf_counts",
    "list_issuers",
    "list_roots",
    "lock_registry",
    "registry_version",
    "retire_prepared_issuer",
    "retire_root",
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
    """A fingerprint of the registry that changes whenever any root or issuer row changes.

    Every row's (id, state, updated_at): the tables hold a handful of rows, and unlike a count
    or the newest ``updated_at`` this also sees a change stamped earlier than the newest one
    (an operator whose clock is behind).
    """
    issuers = (await session.execute(select(CaIssuer.id, CaIssuer.state, CaIssuer.updated_at))).all()
    roots = (await session.execute(select(CaRoot.id, CaRoot.state, CaRoot.updated_at))).all()
    return (tuple(sorted(tuple(r) for r in issuers)), tuple(sorted(tuple(r) for r in roots)))


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


# --- CA rotation: guarded state changes and per-issuer leaf counts ---------------------------------
#
# The rotation commands read the registry, decide, and then change a row. Between the read and the
# write another operator (or replica) may have changed that row, so every change below re-states the
# state it expects in its WHERE clause and reports whether it happened.


async def lock_registry(session: AsyncSession) -> None:
    """Serialise registry changes: lock the roots' rows until the transaction ends (Postgres ``FOR UPDATE``;
    SQLite serialises writers anyway and SQLAlchemy leaves the clause out there)."""
    await session.execute(select(CaRoot.id).with_for_update())


async def latest_change(session: AsyncSession) -> datetime | None:
    """The newest ``updated_at`` of any root or issuer (what :func:`registry_version` watches), or None."""
    issuers = await session.scalar(select(func.max(CaIssuer.updated_at)))
    roots = await session.scalar(select(func.max(CaRoot.updated_at)))
    stamps = [s for s in (issuers, roots) if s is not None]
    return max(stamps) if stamps else None


async def get_root(session: AsyncSession, *, fingerprint_prefix: str) -> Sequence[RootRecord]:
    """Roots whose SHA-256 fingerprint starts with ``fingerprint_prefix`` (lower-case hex)."""
    rows = (await session.scalars(select(CaRoot).where(CaRoot.fingerprint_sha256.startswith(fingerprint_prefix)))).all()
    return [record_of(RootRecord, r) for r in rows]


async def activate_prepared_issuer(session: AsyncSession, *, issuer_id: int, now: datetime) -> bool:
    """Make ``issuer_id`` active if it is still ``prepared``; the active one goes back to ``prepared``.

    False (and nothing the caller should commit) when the issuer is no longer prepared — retired or
    activated meanwhile. The partial unique index refuses two actives.
    """
    await session.execute(
        update(CaIssuer)
        .where(CaIssuer.state == "active", CaIssuer.id != issuer_id)
        .values(state="prepared", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(
        update(CaIssuer)
        .where(CaIssuer.id == issuer_id, CaIssuer.state == "prepared")
        .values(state="active", activated_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def retire_prepared_issuer(session: AsyncSession, *, issuer_id: int, now: datetime) -> bool:
    """Retire ``issuer_id`` if it is ``prepared`` (never the active one); whether it was."""
    result = await session.execute(
        update(CaIssuer)
        .where(CaIssuer.id == issuer_id, CaIssuer.state == "prepared")
        .values(state="retired", retired_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def retire_root(session: AsyncSession, *, root_id: int, now: datetime) -> bool:
    """Retire the root ``root_id`` if it is ``active``; whether it was."""
    result = await session.execute(
        update(CaRoot)
        .where(CaRoot.id == root_id, CaRoot.state == "active")
        .values(state="retired", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def leaf_counts(session: AsyncSession, *, now: datetime) -> dict[int, tuple[int, int, datetime | None]]:
    """Per issuer id: (leaves issued, leaves still *live*, the latest expiry of a live leaf).

    Live means not expired at ``now`` and not revoked: a revoked leaf no longer needs its issuer in
    the truststore (dropping the issuer only makes API Gateway refuse it sooner). Superseded
    (renewed) leaves count as live — the machine may still be presenting them.
    """
    live = (Certificate.not_after > now) & (Certificate.status != "revoked")
    rows = await session.execute(
        select(
            Certificate.issuer_id,
            func.count(Certificate.id),
            func.sum(case((live, 1), else_=0)),
            func.max(case((live, Certificate.not_after), else_=None)),
        ).group_by(Certificate.issuer_id)
    )
    return {int(i): (int(n), int(alive or 0), last) for i, n, alive, last in rows}
