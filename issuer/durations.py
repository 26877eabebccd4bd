"""Human durations in configuration and on the command line: ``90s``, ``10m``, ``24h``, ``7d``, ``1y``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_PART = re.compile(r"(\d{1,15})([smhdwy])")
# Far beyond any certificate or token lifetime; bounds the arithmetic an untrusted "ttl" can cause.
MAX_SECONDS = 100 * 365 * 86400


def parse_duration(text: str | int) -> timedelta:
    """Parse ``"1h30m"``, ``"24h"``, ``"10m"`` or a number of seconds.

    Raises ``ValueError`` with a message fit for a person.
    """
    if isinstance(text, bool):
        raise ValueError("expected a duration like '24h', not a boolean")
    if isinstance(text, int):
        if text <= 0:
            raise ValueError("a duration must be positive")
        if text > MAX_SECONDS:
            raise ValueError("a duration must be at most 100 years")
        return timedelta(seconds=text)
    s = text.strip().lower()
    if s.isdigit():
        if len(s) > 15:
            raise ValueError("a duration must be at most 100 years")
        return parse_duration(int(s))
    pos = 0
    total = 0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(s) or not s:
        raise ValueError(f"{text!r} is not a duration; use forms like '90s', '10m', '24h', '7d'")
    if total <= 0:
        raise ValueError("a duration must be positive")
    if total > MAX_SECONDS:
        raise ValueError("a duration must be at most 100 years")
    return timedelta(seconds=total)


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling of ``delta`` in the units above (``86400s`` → ``1d``)."""
    seconds = int(delta.total_seconds())
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
