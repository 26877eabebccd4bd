"""Sealing: which unsealed audit rows may join the chain now, and the entries they become. Pure.

The sealer (:mod:`issuer.audit.sealer`) reads the chain's tail and the unsealed rows and
calls :func:`seal`; the verifier (:mod:`issuer.audit.verify`) replays :func:`admission` for
every entry, so a chain entry that the sealer would have refused is caught even if someone
wrote it into ``audit_chain`` by hand.

**The admission rule.** Row ids come from the database in insert order and ``created_at`` is
the writer's clock at that moment, so, apart from transactions in flight and clock skew
between replicas (both far below ``late_window``), a higher id never carries a much earlier
time, and a row never commits long after rows with higher ids were sealed. A row is admitted
when

- its id is above every sealed id and its ``created_at`` is not more than ``late_window``
  before the ``created_at`` of the highest sealed id (an append, as every normal write is), or
- its id is below a sealed id (its transaction committed late) and its ``created_at`` is
  within ``late_window`` of the sealing;

and never when it claims a time more than ``late_window`` in the future. A row written "into
the past" — an old ``created_at``, or an id below sealed ones long after the fact — is left
out of the chain, where ``issuer audit verify`` names it.

**Adoption.** The first seal of a database (an empty chain: the release that brought the chain
was just migrated in) takes every row already there, in id order, without the rule — history is
what it is — in one transaction, all with the same ``sealed_at``; that prefix of the chain is how
the verifier recognises it. It is vouched for from then on, not before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from issuer.audit.canonical import CURRENT_FORMAT, GENESIS_HASH, canonical_entry, entry_hash, iso_utc

__all__ = ["DEFAULT_LATE_WINDOW", "ChainEntry", "ChainTail", "SealBatch", "admission", "make_entry", "seal"]

# Longer than any transaction holds an audit row uncommitted, and than clock skew between replicas.
DEFAULT_LATE_WINDOW: Final = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One row of ``audit_chain``."""

    seq: int
    attestation_id: int
    format: int
    prev_hash: str
    row_hash: str
    sealed_at: datetime


@dataclass(frozen=True, slots=True)
class ChainTail:
    """What sealing the next row depends on: the last entry, and the highest sealed id with its time."""

    seq: int = 0
    row_hash: str = GENESIS_HASH
    sealed_at: datetime | None = None
    max_id: int | None = None
    max_id_created_at: datetime | None = None  # None also when that row is gone from attestations

    def after(self, entry: ChainEntry, created_at: datetime) -> ChainTail:
        """The tail once ``entry`` (for a row created at ``created_at``) has been appended."""
        higher = self.max_id is None or entry.attestation_id > self.max_id
        return replace(
            self,
            seq=entry.seq,
            row_hash=entry.row_hash,
            sealed_at=entry.sealed_at,
            max_id=entry.attestation_id if higher else self.max_id,
            max_id_created_at=created_at if higher else self.max_id_created_at,
        )


def admission(
    row_id: int, created_at: datetime, tail: ChainTail, *, now: datetime, late_window: timedelta
) -> str | None:
    """None when the row may be sealed at ``now`` after ``tail``; otherwise why not, in one sentence."""
    if created_at > now + late_window:
        return f"its created_at {iso_utc(created_at)} is more than {late_window} after the sealing ({iso_utc(now)})"
    if tail.max_id is None:
        return None
    if row_id > tail.max_id:
        floor = tail.max_id_created_at
        if floor is not None and created_at < floor - late_window:
            return (
                f"its created_at {iso_utc(created_at)} is more than {late_window} before that of row {tail.max_id} "
                f"({iso_utc(floor)}), which has a lower id: written later with an earlier time"
            )
        return None
    if created_at < now - late_window:
        return (
            f"its id is below row {tail.max_id}, sealed already, and it was created at {iso_utc(created_at)}, "
            f"more than {late_window} before {iso_utc(now)}: written into the past"
        )
    return None


def make_entry(row: Mapping[str, Any], tail: ChainTail, *, sealed_at: datetime) -> ChainEntry:
    """The entry that appends ``row`` (its columns of the current format) after ``tail``."""
    seq = tail.seq + 1
    canonical = canonical_entry(row, format_version=CURRENT_FORMAT, seq=seq, sealed_at=sealed_at)
    return ChainEntry(
        seq=seq,
        attestation_id=int(row["id"]),
        format=CURRENT_FORMAT,
        prev_hash=tail.row_hash,
        row_hash=entry_hash(tail.row_hash, canonical),
        sealed_at=sealed_at,
    )


@dataclass(frozen=True, slots=True)
class SealBatch:
    entries: tuple[ChainEntry, ...]
    refused: tuple[tuple[int, str], ...]  # (attestation id, why)
    tail: ChainTail


def seal(
    rows: Sequence[Mapping[str, Any]],
    tail: ChainTail,
    *,
    now: datetime,
    late_window: timedelta = DEFAULT_LATE_WINDOW,
    adopt: bool = False,
) -> SealBatch:
    """Append the admissible ``rows`` (unsealed, in id order) after ``tail``, sealed at ``now``
    (``adopt``: all of them, see the module docstring)."""
    entries: list[ChainEntry] = []
    refused: list[tuple[int, str]] = []
    for row in rows:
        why = None if adopt else admission(int(row["id"]), row["created_at"], tail, now=now, late_window=late_window)
        if why is not None:
            refused.append((int(row["id"]), why))
            continue
        entry = make_entry(row, tail, sealed_at=now)
        entries.append(entry)
        tail = tail.after(entry, row["created_at"])
    return SealBatch(entries=tuple(entries), refused=tuple(refused), tail=tail)
