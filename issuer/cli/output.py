"""How commands print results: JSON for ``--json``, aligned columns otherwise."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = ["print_json", "print_table", "seconds"]


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns sized to their content, the last one free."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers[:-1])]

    def line(values: Sequence[str]) -> str:
        return " ".join(v.ljust(w) for v, w in zip(values, widths, strict=False)) + " " + values[-1]

    print(line(headers))
    for row in cells:
        print(line(row))


def seconds(text: str | None) -> str:
    """An ISO 8601 time from a result, to the second (``-`` for none)."""
    if not text:
        return "-"
    return datetime.fromisoformat(text).isoformat(timespec="seconds")
