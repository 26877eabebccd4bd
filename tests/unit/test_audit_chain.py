"""The chain's pure parts: the canonical form, the sealer's admission rule both ways, and the walker's verdicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from issuer.audit.canonical import (
    AUDIT_COLUMNS,
    CURRENT_FORMAT,
    GENESIS_HASH,
    canonical_entry,
    canonical_json,
    columns_of,
    entry_hash,
)
from issuer.audit.chain import ChainEntry, ChainTail, admission, seal
from issuer.audit.verify import ChainWalker
from issuer.store.models import Attestation

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATE = timedelta(minutes=10)


def row(row_id: int, *, at: datetime | None = None, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": row_id,
        "method": "token",
        "outcome": "success",
        "code": None,
        "reason": None,
        "principal": f"machine-{row_id}",
        "role": "onprem",
        "certificate_serial": f"{row_id:x}",
        "remote_addr": "127.0.0.1",
        "request_id": f"req-{row_id}",
        "created_at": at or T0 + timedelta(seconds=row_id),
        "actor": None,
        "action": None,
        "arguments": None,
    }
    return {**base, **changes}


def sealed(rows: list[dict[str, Any]], *, now: datetime | None = None) -> list[ChainEntry]:
    batch = seal(rows, ChainTail(), now=now or T0 + timedelta(minutes=1), late_window=LATE)
    assert not batch.refused
    return list(batch.entries)


def walk(entries: list[ChainEntry], rows: dict[int, dict[str, Any]], checkpoints: dict[int, str] | None = None):
    walker = ChainWalker(start=ChainTail(), checkpoints=checkpoints or {}, late_window=LATE)
    walker.walk([(e, rows.get(e.attestation_id)) for e in entries])
    walker.finish(chain_end=entries[-1].seq if entries else 0)
    return walker.findings


def test_every_attestations_column_is_covered() -> None:
    """A column added to attestations must be appended to AUDIT_COLUMNS (see issuer.audit.canonical)."""
    table = Attestation.metadata.tables["attestations"]
    assert {c.name for c in table.columns} == {c.name for c in AUDIT_COLUMNS}
    assert columns_of(CURRENT_FORMAT) == tuple(c.name for c in AUDIT_COLUMNS)
    with pytest.raises(ValueError, match="unknown"):
        columns_of(CURRENT_FORMAT + 1)


def test_canonical_json_is_one_spelling() -> None:
    a = canonical_json({"b": 1, "a": {"y": T0, "x": "é"}})
    b = canonical_json({"a": {"x": "é", "y": T0.astimezone(timezone_plus_two())}, "b": 1})
    assert a == b == '{"a":{"x":"é","y":"2026-12-01T12:00:00.000000Z"},"b":1}'.encode()
    with pytest.raises(ValueError, match="naive"):
        canonical_json({"t": T0.replace(tzinfo=None)})
    with pytest.raises(TypeError):
        canonical_json({"b": b"bytes"})


def timezone_plus_two():  # type: ignore[no-untyped-def]
    from datetime import timezone

    return timezone(timedelta(hours=2))


def test_the_hash_covers_id_seq_and_sealed_at() -> None:
    r = row(1)
    base = canonical_entry(r, format_version=1, seq=1, sealed_at=T0)
    assert canonical_entry({**r, "id": 2}, format_version=1, seq=1, sealed_at=T0) != base
    assert canonical_entry(r, format_version=1, seq=2, sealed_at=T0) != base
    assert canonical_entry(r, format_version=1, seq=1, sealed_at=T0 + timedelta(microseconds=1)) != base
    assert entry_hash(GENESIS_HASH, base) != entry_hash("1" * 64, base)
    with pytest.raises(KeyError):
        canonical_entry({k: v for k, v in r.items() if k != "reason"}, format_version=1, seq=1, sealed_at=T0)


def test_admission_accepts_appends_late_commits_and_adoption() -> None:
    empty = ChainTail()
    assert admission(5, T0 - timedelta(days=400), empty, now=T0, late_window=LATE) is None  # adoption
    tail = ChainTail(seq=3, max_id=10, max_id_created_at=T0, sealed_at=T0)
    assert admission(11, T0 + timedelta(seconds=1), tail, now=T0, late_window=LATE) is None  # append
    assert admission(11, T0 - timedelta(minutes=9), tail, now=T0, late_window=LATE) is None  # skew, in flight
    assert admission(7, T0 - timedelta(seconds=30), tail, now=T0, late_window=LATE) is None  # committed late


def test_admission_refuses_rows_written_into_the_past_or_future() -> None:
    tail = ChainTail(seq=3, max_id=10, max_id_created_at=T0, sealed_at=T0)
    assert "earlier time" in str(admission(11, T0 - timedelta(hours=1), tail, now=T0, late_window=LATE))
    assert "into the past" in str(admission(7, T0 - timedelta(hours=1), tail, now=T0, late_window=LATE))
    assert "after the sealing" in str(admission(11, T0 + timedelta(hours=1), tail, now=T0, late_window=LATE))


def test_seal_skips_refused_rows_and_chains_the_rest() -> None:
    rows = [row(1), row(2), row(3, at=T0 - timedelta(days=1)), row(4)]
    first = seal(rows[:2], ChainTail(), now=T0 + timedelta(minutes=1), late_window=LATE)
    second = seal(rows[2:], first.tail, now=T0 + timedelta(minutes=2), late_window=LATE)
    assert [e.attestation_id for e in second.entries] == [4]
    assert [r for r, _ in second.refused] == [3]
    assert second.entries[0].prev_hash == first.entries[-1].row_hash
    assert second.entries[0].seq == 3


def test_an_untouched_chain_walks_clean() -> None:
    rows = [row(i) for i in range(1, 6)]
    entries = sealed(rows)
    assert walk(entries, {r["id"]: r for r in rows}, {5: entries[-1].row_hash}) == []


def test_walker_names_an_edited_row() -> None:
    rows = {i: row(i) for i in range(1, 6)}
    entries = sealed(list(rows.values()))
    rows[3] = {**rows[3], "reason": "nothing to see"}
    (finding,) = walk(entries, rows)
    assert (finding.kind, finding.attestation_id) == ("edited", 3)


def test_walker_names_a_deleted_row() -> None:
    rows = {i: row(i) for i in range(1, 6)}
    entries = sealed(list(rows.values()))
    del rows[2]
    (finding,) = walk(entries, rows)
    assert (finding.kind, finding.attestation_id) == ("deleted", 2)


def test_walker_names_swapped_rows_as_reordered() -> None:
    rows = {i: row(i) for i in range(1, 6)}
    entries = sealed(list(rows.values()))
    rows[2], rows[3] = {**rows[3], "id": 2}, {**rows[2], "id": 3}
    findings = walk(entries, rows)
    assert [(f.kind, f.attestation_id) for f in findings] == [("reordered", 2), ("reordered", 3)]
    assert "sealed for row 3" in findings[0].detail


def test_walker_names_reordered_and_removed_chain_entries() -> None:
    rows = {i: row(i) for i in range(1, 6)}
    entries = sealed(list(rows.values()))
    swapped = [entries[0], entries[2], entries[1], *entries[3:]]
    findings = walk(swapped, rows)
    assert findings[0].kind == "chain_broken" and findings[0].attestation_id == 3
    gap = walk([e for e in entries if e.seq != 2], rows)
    assert gap[0].kind == "chain_broken" and gap[0].attestation_id == 3


def test_walker_catches_a_recomputed_chain_with_the_signed_head() -> None:
    rows = {i: row(i) for i in range(1, 7)}
    entries = sealed(list(rows.values()))
    signed = {2: entries[1].row_hash, 6: entries[5].row_hash}
    rows[4] = {**rows[4], "outcome": "failure", "code": "token_invalid"}
    # The attacker recomputes every hash from the edit on: the links hold, the signed head does not.
    tail = ChainTail()
    rewritten = []
    for entry in entries:
        new = seal([rows[entry.attestation_id]], tail, now=entry.sealed_at, late_window=LATE).entries[0]
        rewritten.append(new)
        tail = tail.after(new, rows[entry.attestation_id]["created_at"])
    (finding,) = walk(rewritten, rows, signed)
    assert (finding.kind, finding.attestation_id, finding.seq) == ("checkpoint", 3, 3)
    assert "checkpoint 2" in finding.detail


def test_walker_refuses_an_entry_the_sealer_would_not_have_made() -> None:
    rows = {i: row(i) for i in range(1, 4)}
    entries = sealed(list(rows.values()))
    forged_row = row(4, at=T0 - timedelta(days=3))
    forged = seal([forged_row], ChainTail(seq=3, row_hash=entries[-1].row_hash), now=T0 + timedelta(minutes=5)).entries[
        0
    ]
    (finding,) = walk([*entries, forged], {**rows, 4: forged_row})
    assert (finding.kind, finding.attestation_id) == ("inserted", 4)


def test_walker_reports_checkpoints_beyond_the_end() -> None:
    rows = {i: row(i) for i in range(1, 4)}
    entries = sealed(list(rows.values()))
    (finding,) = walk(entries[:2], rows, {3: entries[2].row_hash})
    assert finding.kind == "checkpoint" and "tail" in finding.detail
