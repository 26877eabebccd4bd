"""The one pattern matcher role bindings use: ARNs, and x509pop's certificate names.

A pattern is a value, matched exactly, or a value with ``*`` wildcards: each ``*``
matches any run of characters, ``/``, ``:`` and ``.`` included (``…:role/ecs-*`` matches
``…:role/ecs-web`` and ``…:role/ecs/web``; ``*.corp.example`` matches ``a.b.corp.example``).
IAM names cannot contain ``*``, so a ``*`` in a pattern is always a wildcard. Matching is
case-sensitive, as ARNs are (x509pop lower-cases DNS names first).
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["arn_matches", "wildcard_matches"]


def wildcard_matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` (exact, or ``*`` matching any run of characters)."""
    if "*" not in pattern:
        return pattern == value
    return _glob(pattern).fullmatch(value) is not None


def arn_matches(pattern: str, arn: str) -> bool:
    """Whether ``arn`` matches ``pattern`` (exact, or ``*`` matching any run of characters)."""
    return wildcard_matches(pattern, arn)


@lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)
