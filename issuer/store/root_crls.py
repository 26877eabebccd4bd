"""Each root's CRL: its numbers and the current one every replica serves.

Each function takes a session and never commits (the service owns the transaction).
``ca_roots.crl_number`` only ever grows — :func:`take_root_crl_number` for a CRL signed here,
:func:`claim_root_crl_number` for one imported with its own number — and the CRL carrying a number
is stored in the same transaction under a unique (root_id, crl_number).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store.models import CaRoot, CaRootCrl

__all__ = [
    "RootCrlRecord",
    "claim_root_crl_number",
    "latest_root_crl",
    "root_crl_der",
    "store_root_crl",
    "take_root_crl_number",
]

Source = Literal["signed", "imported"]


@dataclass(frozen=True, slots=True)
class RootCrlRecord:
    """A stored root CRL, without its DER."""

    root_id: int
    crl_number: int
    this_update: datetime
    next_update: datetime
    entries_sha256: str
    revoked_count: int
    source: str


async def latest_root_crl(session: AsyncSession, *, root_id: int) -> RootCrlRecord | None:
    """The stored CRL of ``root_id`` with the highest number (without its DER), or None."""
    row = (
        await session.execute(
            select(
                CaRootCrl.root_id,
                CaRootCrl.crl_number,
                CaRootCrl.this_update,
                CaRootCrl.next_update,
                CaRootCrl.entries_sha256,
                CaRootCrl.revoked_count,
                CaRootCrl.source,
            )
            .where(CaRootCrl.root_id == root_id)
            .order_by(CaRootCrl.crl_number.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    root, number, this_update, next_update, digest, count, source = row
    return RootCrlRecord(int(root), int(number), this_update, next_update, digest, int(count), source)


async def root_crl_der(session: AsyncSession, *, root_id: int, crl_number: int) -> bytes | None:
    """The DER of the stored CRL ``crl_number`` of ``root_id``, or None when it has been replaced."""
    value = await session.scalar(
        select(CaRootCrl.der).where(CaRootCrl.root_id == root_id, CaRootCrl.crl_number == crl_number)
    )
    return None if value is None else bytes(value)


async def take_root_crl_number(session: AsyncSession, *, root_id: int) -> int:
    """Increment ``ca_roots.crl_number`` of ``root_id`` and return the new value, holding the root's row
    lock until the transaction ends (a second signer waits, then sees the first one's CRL).

    Raises ``LookupError`` for an unknown root.
    """
    result = await session.execute(
        update(CaRoot)
        .where(CaRoot.id == root_id)
        .values(crl_number=CaRoot.crl_number + 1)
        .returning(CaRoot.crl_number)
        .execution_options(synchronize_session=False)
    )
    number = result.scalar_one_or_none()
    if number is None:
        raise LookupError(f"no root with id {root_id}")
    return int(number)


async def claim_root_crl_number(session: AsyncSession, *, root_id: int, crl_number: int) -> bool:
    """Raise ``ca_roots.crl_number`` of ``root_id`` to ``crl_number`` if it is lower; whether it was
    (False: that number, or a higher one, was used already)."""
    result = await session.execute(
        update(CaRoot)
        .where(CaRoot.id == root_id, CaRoot.crl_number < crl_number)
        .values(crl_number=crl_number)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def store_root_crl(
    session: AsyncSession, crl: RootCrlRecord, *, der: bytes, source: Source, now: datetime
) -> None:
    """Store ``crl`` as the root's current CRL and delete the ones it replaces.

    Raises ``IntegrityError`` when that (root, number) is stored already.
    """
    await session.execute(
        insert(CaRootCrl).values(
            root_id=crl.root_id,
            crl_number=crl.crl_number,
            this_update=crl.this_update,
            next_update=crl.next_update,
            entries_sha256=crl.entries_sha256,
            revoked_count=crl.revoked_count,
            source=source,
            der=der,
            created_at=now,
        )
    )
    await session.execute(
        delete(CaRootCrl)
        .where(CaRootCrl.root_id == crl.root_id, CaRootCrl.crl_number < crl.crl_number)
        .execution_options(synchronize_session=False)
    )
