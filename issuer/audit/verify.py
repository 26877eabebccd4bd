"""Walking the chain: what ``issuer audit verify`` concludes from the rows, the entries and the checkpoints. Pure.

:class:`ChainWalker` takes the chain in ``seq`` order, a batch at a time, each entry with
the current content of its row (or None when the row is gone), and recomputes everything:

- ``chain_broken``: a gap in ``seq``, or an entry whose ``prev_hash`` is not the previous
  entry's hash (entries removed, reordered or rewritten by hand);
- ``deleted``: the entry's row is no longer in ``attestations``;
- ``edited``: the row's current content does not hash to the entry;
- ``reordered``: … because it now holds the content sealed for another row (two rows'
  contents or ids swapped) — found among the entries of the same batch;
- ``inserted``: an entry the sealer would have refused (:func:`issuer.audit.chain.admission`),
  or whose ``sealed_at`` runs backwards: written into ``audit_chain`` by hand;
- ``checkpoint``: at a checkpoint's ``seq`` the chain's hash differs from the signed head
  (the chain was rewritten after it was signed), or a checkpoint lies beyond the chain's end.

The signatures, rows missing from the chain and anchors are checked by the caller
(:mod:`issuer.audit.verifier`), which also turns the first finding into the exit status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from issuer.audit.canonical import canonical_entry, entry_hash, iso_utc
from issuer.audit.chain import ChainEntry, ChainTail, admission

__all__ = ["ChainWalker", "Finding", "FindingKind", "Unchecked"]

FindingKind = Literal[
    "edited",
    "deleted",
    "inserted",
    "reordered",
    "chain_broken",
    "checkpoint",
    "unsealed",
    "uncheckpointed",
    "anchor",
]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong, named by the attestations ``id`` it is about (None when it is about no single row)."""

    kind: FindingKind
    attestation_id: int | None
    seq: int | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.attestation_id, "seq": self.seq, "detail": self.detail}

    def line(self) -> str:
        where = f"row {self.attestation_id}" if self.attestation_id is not None else "the audit trail"
        at = f" (seq {self.seq})" if self.seq is not None else ""
        return f"{where}{at}: {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Unchecked:
    """The first entry after the last checkpoint that matched: where checkpoint coverage ends."""

    seq: int
    attestation_id: int
    sealed_at: datetime


class ChainWalker:
    """Recompute the chain from ``start`` (the tail before the first entry walked) on.

    ``checkpoints`` maps a ``seq`` to the head hash signed for it. Feed batches with
    :meth:`walk`; findings accumulate in :attr:`findings` (at most ``max_findings``).
    """

    def __init__(
        self,
        *,
        start: ChainTail,
        checkpoints: Mapping[int, str],
        late_window: timedelta,
        max_findings: int = 20,
        adopted_at: datetime | None = None,
    ) -> None:
        self.tail = start
        # The chain's first seal adopted the rows already there (issuer.audit.chain): the prefix
        # of entries sealed at ``adopted_at`` (entry 1's sealed_at) is not held to the admission rule.
        self._adopted_at = adopted_at
        self._adopting = adopted_at is not None and (start.seq == 0 or start.sealed_at == adopted_at)
        self._checkpoints = dict(checkpoints)
        self._late = late_window
        self._max = max_findings
        self.findings: list[Finding] = []
        self.walked = 0
        # The last checkpoint whose head matched, and the first entry after it (where a rewrite may start).
        self.good_checkpoint: int | None = start.seq if start.seq in self._checkpoints else None
        self.first_unchecked: Unchecked | None = None

    @property
    def full(self) -> bool:
        return len(self.findings) >= self._max

    def _add(self, finding: Finding) -> None:
        if not self.full:
            self.findings.append(finding)

    def walk(self, batch: Sequence[tuple[ChainEntry, Mapping[str, Any] | None]]) -> None:
        """Check each entry of ``batch`` (consecutive in ``seq``) against its row's current content."""
        for index, (entry, row) in enumerate(batch):
            self._step(entry, row, batch, index)

    def _step(
        self,
        entry: ChainEntry,
        row: Mapping[str, Any] | None,
        batch: Sequence[tuple[ChainEntry, Mapping[str, Any] | None]],
        index: int,
    ) -> None:
        self.walked += 1
        expected = self.tail.seq + 1
        if entry.seq != expected:
            self._add(
                Finding(
                    "chain_broken",
                    entry.attestation_id,
                    entry.seq,
                    f"the chain jumps from seq {self.tail.seq} to {entry.seq}: entries were removed from audit_chain",
                )
            )
        elif entry.prev_hash != self.tail.row_hash:
            self._add(
                Finding(
                    "chain_broken",
                    entry.attestation_id,
                    entry.seq,
                    "its prev_hash is not the previous entry's hash: audit_chain was reordered or rewritten",
                )
            )
        if row is None:
            self._add(
                Finding(
                    "deleted",
                    entry.attestation_id,
                    entry.seq,
                    f"the row sealed at {iso_utc(entry.sealed_at)} is no longer in attestations",
                )
            )
        else:
            self._check_content(entry, row, batch, index)
            self._check_admission(entry, row)
        created_at = row["created_at"] if row is not None else None
        if created_at is not None:
            self.tail = self.tail.after(entry, created_at)
        else:
            self.tail = ChainTail(
                seq=entry.seq,
                row_hash=entry.row_hash,
                sealed_at=entry.sealed_at,
                max_id=max(entry.attestation_id, self.tail.max_id or entry.attestation_id),
                max_id_created_at=self.tail.max_id_created_at,
            )
        self._check_checkpoint(entry)

    def _check_content(
        self,
        entry: ChainEntry,
        row: Mapping[str, Any],
        batch: Sequence[tuple[ChainEntry, Mapping[str, Any] | None]],
        index: int,
    ) -> None:
        try:
            canonical = canonical_entry(row, format_version=entry.format, seq=entry.seq, sealed_at=entry.sealed_at)
        except ValueError as exc:
            self._add(Finding("edited", entry.attestation_id, entry.seq, f"cannot be encoded: {exc}"))
            return
        if entry_hash(entry.prev_hash, canonical) == entry.row_hash:
            return
        other = _sealed_for(row, batch, index)
        if other is not None:
            self._add(
                Finding(
                    "reordered",
                    entry.attestation_id,
                    entry.seq,
                    f"it holds the content sealed for row {other.attestation_id} (seq {other.seq}): "
                    "rows' contents or ids were swapped",
                )
            )
            return
        self._add(
            Finding(
                "edited",
                entry.attestation_id,
                entry.seq,
                f"its content is not what was sealed at {iso_utc(entry.sealed_at)}: it was changed since",
            )
        )

    def _check_admission(self, entry: ChainEntry, row: Mapping[str, Any]) -> None:
        if entry.seq == 1:
            self._adopted_at, self._adopting = entry.sealed_at, True
        if self._adopting and entry.sealed_at == self._adopted_at:
            return
        self._adopting = False
        previous = self.tail.sealed_at
        if previous is not None and entry.sealed_at < previous - self._late:
            self._add(
                Finding(
                    "inserted",
                    entry.attestation_id,
                    entry.seq,
                    f"sealed at {iso_utc(entry.sealed_at)}, before the entry ahead of it ({iso_utc(previous)}): "
                    "written into audit_chain by hand",
                )
            )
            return
        why = admission(entry.attestation_id, row["created_at"], self.tail, now=entry.sealed_at, late_window=self._late)
        if why is not None:
            self._add(Finding("inserted", entry.attestation_id, entry.seq, f"the sealer would have refused it: {why}"))

    def _check_checkpoint(self, entry: ChainEntry) -> None:
        head = self._checkpoints.get(entry.seq)
        if self.first_unchecked is None:
            self.first_unchecked = Unchecked(entry.seq, entry.attestation_id, entry.sealed_at)
        if head is None:
            return
        if head == entry.row_hash:
            self.good_checkpoint = entry.seq
            self.first_unchecked = None
            return
        first = self.first_unchecked
        since = "the start" if self.good_checkpoint is None else f"checkpoint {self.good_checkpoint}"
        self._add(
            Finding(
                "checkpoint",
                first.attestation_id,
                first.seq,
                f"the chain's hash at seq {entry.seq} is not the head signed in checkpoint {entry.seq}: rows or "
                f"entries sealed between {since} and seq {entry.seq} were changed and the chain recomputed "
                f"(from row {first.attestation_id} on)",
            )
        )

    def finish(self, *, chain_end: int) -> None:
        """After the last batch: checkpoints beyond the chain's end mean its tail was cut off."""
        beyond = sorted(seq for seq in self._checkpoints if seq > chain_end)
        if beyond:
            self._add(
                Finding(
                    "checkpoint",
                    None,
                    beyond[0],
                    f"checkpoint {beyond[0]} is beyond the chain's end (seq {chain_end}): entries were deleted "
                    "from the chain's tail",
                )
            )


def _sealed_for(
    row: Mapping[str, Any], batch: Sequence[tuple[ChainEntry, Mapping[str, Any] | None]], index: int
) -> ChainEntry | None:
    """The entry of ``batch`` (not the one at ``index``) whose sealed content ``row`` now holds, under its id."""
    for other_index, (other, _row) in enumerate(batch):
        if other_index == index:
            continue
        try:
            canonical = canonical_entry(
                {**row, "id": other.attestation_id},
                format_version=other.format,
                seq=other.seq,
                sealed_at=other.sealed_at,
            )
        except ValueError:
            continue
        if entry_hash(other.prev_hash, canonical) == other.row_hash:
            return other
    return None
