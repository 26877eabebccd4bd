"""The one ARN matcher role bindings use.

A pattern is an ARN, matched exactly, or an ARN with ``*`` wildcards: each ``*``
matches any run of characters, ``/`` and ``:`` included (``…:role/ecs-*`` matches
``…:role/ecs-web`` and ``…:role/ecs/web``). IAM names cannot contain ``*``, so a
``*`` in a pattern is always a wildcard. Matching is case-sensitive, as ARNs are.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["arn_matches"]


def arn_matches(pattern: str, arn: str) -> bool:
    """Whether ``arn`` matches ``pattern`` (exact, or ``*`` matching any run of characters)."""
    if "*" not in pattern:
        return pattern == arn
    return _glob(pattern).fullmatch(arn) is not None


@lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)
