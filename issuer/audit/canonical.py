"""What a chain entry's hash covers: a versioned, canonical JSON of a fixed list of audit columns.

``row_hash = SHA-256(prev_hash || canonical_entry(...))`` where the canonical entry is::

    {"format": 1, "row": {"certificate_serial": …, "code": …, …, "id": 42, …}, "sealed_at": "…Z", "seq": 7}

as JSON with sorted keys, no spaces, UTF-8. The row's ``id`` is covered (swapping two rows'
contents or ids changes both hashes), and so are the entry's ``seq`` and ``sealed_at`` (the
chain cannot be renumbered or re-timed without recomputing every later hash, which the signed
checkpoints catch).

**Extending it.** Every column of ``attestations`` must be listed in :data:`AUDIT_COLUMNS`
(``tests/unit/test_audit_canonical.py`` fails otherwise). A new column is appended with the
next ``since`` number; entries keep the format they were sealed with, so rows sealed before
the column existed verify as they were sealed, and rows sealed after cover it::

    AuditColumn("actor", since=2), AuditColumn("action", since=2), AuditColumn("arguments", since=2)

Never remove, rename or reorder a column here: old entries would stop verifying.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "AUDIT_COLUMNS",
    "CURRENT_FORMAT",
    "GENESIS_HASH",
    "AuditColumn",
    "canonical_entry",
    "canonical_json",
    "columns_of",
    "entry_hash",
    "iso_utc",
]


@dataclass(frozen=True, slots=True)
class AuditColumn:
    """A column of ``attestations`` the chain covers, from format ``since`` on."""

    name: str
    since: int = 1


AUDIT_COLUMNS: Final[tuple[AuditColumn, ...]] = (
    AuditColumn("id"),
    AuditColumn("method"),
    AuditColumn("outcome"),
    AuditColumn("code"),
    AuditColumn("reason"),
    AuditColumn("principal"),
    AuditColumn("role"),
    AuditColumn("certificate_serial"),
    AuditColumn("remote_addr"),
    AuditColumn("request_id"),
    AuditColumn("created_at"),
    # Operator actions (migration 0006): who acted, what, with which arguments (secrets left out).
    AuditColumn("actor", since=2),
    AuditColumn("action", since=2),
    AuditColumn("arguments", since=2),
)
CURRENT_FORMAT: Final = max(c.since for c in AUDIT_COLUMNS)
# The prev_hash of the first entry.
GENESIS_HASH: Final = "0" * 64


@functools.cache
def columns_of(format_version: int) -> tuple[str, ...]:
    """The column names an entry of ``format_version`` covers; ValueError for a format this build does not know."""
    if not 1 <= format_version <= CURRENT_FORMAT:
        raise ValueError(f"audit chain format {format_version} is unknown to this version (knows 1..{CURRENT_FORMAT})")
    return tuple(c.name for c in AUDIT_COLUMNS if c.since <= format_version)


def iso_utc(moment: datetime) -> str:
    """``2026-12-07T10:00:00.123456Z``: one spelling of an instant, whatever the database returned."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime in the audit trail")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _plain(value: Any) -> Any:
    # The sealer canonicalises every audit row twice (seal, then the checkpoint's walk): the common
    # exact types are told by their type alone, before the ABC check a Mapping test costs.
    kind = type(value)
    if kind is str or kind is int or value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("NaN or infinity in an audit row")
        return value
    if kind is dict or isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    raise TypeError(f"an audit column holds a {type(value).__name__}, which the chain cannot encode")


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same bytes for the same values on every machine."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def canonical_entry(row: Mapping[str, Any], *, format_version: int, seq: int, sealed_at: datetime) -> bytes:
    """The bytes an entry's hash covers: ``row``'s columns of ``format_version``, ``seq`` and ``sealed_at``.

    A column missing from ``row`` is a bug of the caller (KeyError), never silently null.
    """
    covered = {name: row[name] for name in columns_of(format_version)}
    return canonical_json({"format": format_version, "row": covered, "sealed_at": sealed_at, "seq": seq})


def entry_hash(prev_hash: str, canonical: bytes) -> str:
    """Hex SHA-256 of the previous entry's hash (32 bytes) followed by ``canonical``."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()
