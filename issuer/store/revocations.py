"""Revocation's rows: which certificates an identity holds, marking them revoked, and each issuer's CRL.

Each function takes a session and never commits (the service owns the transaction).
``ca_issuers.crl_number`` is only ever incremented (:func:`take_crl_number`), and the
CRL carrying the number is stored in the same transaction under a unique
(issuer_id, crl_number), so replicas cannot go backwards or store one number twice.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import CaCrl, CaIssuer, Certificate, Identity, InstanceBinding
from issuer.store.records import BindingRecord, CertificateRecord, IdentityRecord, record_of

__all__ = [
    "CrlRecord",
    "RevokedRow",
    "bindings_of",
    "crl_der",
    "find_identities",
    "first_issuer_created",
    "last_change",
    "latest_crl",
    "list_revoked",
    "lock_certificates",
    "mark_revoked",
    "store_crl",
    "take_crl_number",
]

# Certificates that still work cryptographically and so must be revoked with their identity:
# the current one, and those a renewal replaced but that have not expired.
LIVE_STATUSES = ("active", "superseded")


@dataclass(frozen=True, slots=True)
class RevokedRow:
    """A revoked certificate as the revocation lists show it."""

    serial: str
    issuer_id: int
    issuer_fingerprint: str
    revoked_at: datetime
    reason: str
    not_after: datetime


@dataclass(frozen=True, slots=True)
class CrlRecord:
    """A stored CRL, without its DER."""

    issuer_id: int
    crl_number: int
    this_update: datetime
    next_update: datetime
    entries_sha256: str
    revoked_count: int


async def find_identities(session: AsyncSession, *, principal: str, method: str | None = None) -> list[IdentityRecord]:
    """The identities named ``principal`` (of ``method`` when given); a principal may exist under several methods."""
    query = select(Identity).where(Identity.principal == principal)
    if method is not None:
        query = query.where(Identity.method == method)
    rows = (await session.scalars(query.order_by(Identity.id))).all()
    return [record_of(IdentityRecord, r) for r in rows]


async def lock_certificates(
    session: AsyncSession,
    *,
    identity_ids: Collection[int] = (),
    serial: str | None = None,
    statuses: Collection[str] = LIVE_STATUSES,
    now: datetime | None = None,
) -> list[CertificateRecord]:
    """Certificates of ``identity_ids`` (or the one with ``serial``) in ``statuses``, unexpired at ``now`` when
    given, oldest first, row-locked until the transaction ends (Postgres ``FOR UPDATE``)."""
    query = select(Certificate).where(Certificate.status.in_(tuple(statuses)))
    if serial is not None:
        query = query.where(Certificate.serial == serial)
    else:
        query = query.where(Certificate.identity_id.in_(tuple(identity_ids)))
    if now is not None:
        query = query.where(Certificate.not_after > now)
    rows = (await session.scalars(query.order_by(Certificate.id).with_for_update())).all()
    return [record_of(CertificateRecord, r) for r in rows]


async def mark_revoked(
    session: AsyncSession, *, certificate_ids: Collection[int], revoked_at: datetime, reason: str
) -> set[int]:
    """Revoke the certificates ``certificate_ids`` that are not revoked yet; the ids that changed."""
    if not certificate_ids:
        return set()
    result = await session.execute(
        update(Certificate)
        .where(Certificate.id.in_(tuple(certificate_ids)), Certificate.status != "revoked")
        .values(status="revoked", revoked_at=revoked_at, revocation_reason=reason)
        .returning(Certificate.id)
        .execution_options(synchronize_session=False)
    )
    return {int(i) for i in result.scalars()}


async def bindings_of(session: AsyncSession, *, instance_id: str) -> list[BindingRecord]:
    """The trust-on-first-use bindings of ``instance_id`` (one per account that saw it)."""
    rows = (await session.scalars(select(InstanceBinding).where(InstanceBinding.instance_id == instance_id))).all()
    return [record_of(BindingRecord, r) for r in rows]


async def list_revoked(session: AsyncSession, *, now: datetime, issuer_id: int | None = None) -> list[RevokedRow]:
    """Revoked certificates that have not expired at ``now`` (of one issuer when given), by serial."""
    query = (
        select(
            Certificate.serial,
            Certificate.issuer_id,
            CaIssuer.fingerprint_sha256,
            Certificate.revoked_at,
            Certificate.revocation_reason,
            Certificate.not_after,
        )
        .join(CaIssuer, CaIssuer.id == Certificate.issuer_id)
        .where(Certificate.status == "revoked", Certificate.not_after > now)
    )
    if issuer_id is not None:
        query = query.where(Certificate.issuer_id == issuer_id)
    rows = (await session.execute(query)).all()
    out = [
        RevokedRow(
            serial=serial,
            issuer_id=int(issuer),
            issuer_fingerprint=fingerprint,
            # A row revoked by hand in SQL may lack these; the lists still name it.
            revoked_at=revoked_at or not_after,
            reason=reason or "unspecified",
            not_after=not_after,
        )
        for serial, issuer, fingerprint, revoked_at, reason, not_after in rows
    ]
    # Numeric order of the serials: the same on Postgres and SQLite, whatever their collations.
    return sorted(out, key=lambda r: int(r.serial, 16))


async def last_change(session: AsyncSession, *, now: datetime) -> datetime | None:
    """When the set of revoked, unexpired certificates last changed as of ``now``: the latest revocation
    still listed, or the latest expiry that took one off. None when nothing was ever revoked."""
    revoked = Certificate.status == "revoked"
    latest_revocation = await session.scalar(
        select(func.max(Certificate.revoked_at)).where(revoked, Certificate.not_after > now)
    )
    latest_expiry = await session.scalar(
        select(func.max(Certificate.not_after)).where(revoked, Certificate.not_after <= now)
    )
    stamps = [s for s in (latest_revocation, latest_expiry) if s is not None]
    return max(stamps) if stamps else None


async def first_issuer_created(session: AsyncSession) -> datetime | None:
    """When the first issuing CA was registered (the revocation list is empty since then), or None."""
    value: datetime | None = await session.scalar(select(func.min(CaIssuer.created_at)))
    return value


# CRLs ---------------------------------------------------------------------------------


async def latest_crl(session: AsyncSession, *, issuer_id: int) -> CrlRecord | None:
    """The stored CRL of ``issuer_id`` with the highest number (without its DER), or None."""
    row = (
        await session.execute(
            select(
                CaCrl.issuer_id,
                CaCrl.crl_number,
                CaCrl.this_update,
                CaCrl.next_update,
                CaCrl.entries_sha256,
                CaCrl.revoked_count,
            )
            .where(CaCrl.issuer_id == issuer_id)
            .order_by(CaCrl.crl_number.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    issuer, number, this_update, next_update, digest, count = row
    return CrlRecord(int(issuer), int(number), this_update, next_update, digest, int(count))


async def crl_der(session: AsyncSession, *, issuer_id: int, crl_number: int) -> bytes | None:
    """The DER of the stored CRL ``crl_number`` of ``issuer_id``, or None when it has been replaced."""
    value = await session.scalar(select(CaCrl.der).where(CaCrl.issuer_id == issuer_id, CaCrl.crl_number == crl_number))
    return None if value is None else bytes(value)


async def take_crl_number(session: AsyncSession, *, issuer_id: int) -> int:
    """Increment ``ca_issuers.crl_number`` of ``issuer_id`` and return the new value.

    The UPDATE holds the issuer's row lock until the transaction ends, so a second replica
    building the same issuer's CRL waits here and then sees the first one's CRL.
    Raises ``LookupError`` for an unknown issuer.
    """
    result = await session.execute(
        update(CaIssuer)
        .where(CaIssuer.id == issuer_id)
        .values(crl_number=CaIssuer.crl_number + 1)
        .returning(CaIssuer.crl_number)
        .execution_options(synchronize_session=False)
    )
    number = result.scalar_one_or_none()
    if number is None:
        raise LookupError(f"no issuing CA with id {issuer_id}")
    return int(number)


async def store_crl(session: AsyncSession, crl: CrlRecord, *, der: bytes, now: datetime) -> None:
    """Store ``crl`` as the issuer's current CRL and delete the ones it replaces.

    Raises ``IntegrityError`` when that (issuer, number) is stored already.
    """
    await session.execute(
        insert(CaCrl).values(
            issuer_id=crl.issuer_id,
            crl_number=crl.crl_number,
            this_update=crl.this_update,
            next_update=crl.next_update,
            entries_sha256=crl.entries_sha256,
            revoked_count=crl.revoked_count,
            der=der,
            created_at=now,
        )
    )
    # Only the current CRL is served; older ones are replaced by it, not history worth keeping.
    await session.execute(
        delete(CaCrl)
        .where(CaCrl.issuer_id == crl.issuer_id, CaCrl.crl_number < crl.crl_number)
        .execution_options(synchronize_session=False)
    )
