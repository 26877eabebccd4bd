"""Per-identity rate limits: a token bucket per verified identity, in memory, per process.

The pipeline consults a :class:`RateLimiter` once per request, as soon as the proof
has named who is asking (the EC2 instance, the IAM principal, the join token's name,
or for a renewal the principal of the certificate being renewed), and the limiter
either lets the request go on or raises :class:`RateLimited` (429 ``rate_limited``
with ``Retry-After``). A refusal goes through the pipeline's failure path like any
other, so it leaves its audit row; inside the issuance transaction (join tokens) it
rolls back, so the token is not spent.

The limit is one setting, ``[issuer] rate_limit = "10/min"`` (:func:`parse_rate_limit`):
each identity may start that many requests at once and then one more every
``per / count``. Buckets live in the process: with ``--workers N`` behind one port, or
several replicas, an identity may get up to N times the limit. That is enough for what
it is for: stopping one broken or looping machine from flooding the audit table, the
signer and AWS, not metering.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from issuer.durations import format_duration, parse_duration
from issuer.errors import IssuerError

__all__ = ["RateLimit", "RateLimited", "RateLimiter", "TokenBucketLimiter", "parse_rate_limit"]

_RATE = re.compile(r"^\s*(\d{1,9})\s*/\s*([0-9a-z]+)\s*$")
_UNITS = {
    "s": "1s",
    "sec": "1s",
    "second": "1s",
    "m": "1m",
    "min": "1m",
    "minute": "1m",
    "h": "1h",
    "hour": "1h",
    "d": "1d",
    "day": "1d",
}
_OFF = frozenset({"off", "none", "unlimited"})


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``count`` requests per ``per``: the bucket holds ``count`` and refills at ``count / per``."""

    count: int
    per: timedelta

    def __post_init__(self) -> None:
        if self.count < 1 or self.per.total_seconds() <= 0:
            raise ValueError("a rate limit needs a positive count and period")

    @property
    def per_second(self) -> float:
        return self.count / self.per.total_seconds()

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.per)}"


def parse_rate_limit(text: object) -> RateLimit | None:
    """``"10/min"``, ``"100/h"``, ``"5/30s"`` as a :class:`RateLimit`; ``"off"`` as None (no limit).

    Raises ``ValueError`` with a message fit for a person.
    """
    if not isinstance(text, str):
        raise ValueError('expected a string such as "10/min" or "off"')
    if text.strip().lower() in _OFF:
        return None
    match = _RATE.match(text.lower())
    if match is None:
        raise ValueError(f'{text!r} is not a rate; use forms like "10/min", "100/h", "5/30s" or "off"')
    count, unit = int(match.group(1)), match.group(2)
    if count < 1:
        raise ValueError('the count must be at least 1 (use "off" for no limit)')
    return RateLimit(count=count, per=parse_duration(_UNITS.get(unit, unit)))


class RateLimited(IssuerError):
    """429: this identity asked too often; ``retry_after`` says when its next request may go through."""

    status_hint = 429
    default_code = "rate_limited"
    title = "Too many requests"


class RateLimiter(Protocol):
    """What the pipeline consults once it knows who is asking."""

    def take(self, method: str, principal: str) -> None:
        """Charge one request to (``method``, ``principal``). Raises :class:`RateLimited` when none is left."""
        ...


class TokenBucketLimiter:
    """:class:`RateLimiter` with one token bucket per (method, principal), in this process's memory.

    ``clock`` is a monotonic clock in seconds (tests pass their own). Buckets that have
    refilled completely are forgotten every ``prune_every`` requests, so memory follows
    the identities active within one period, not every identity ever seen.
    """

    def __init__(
        self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic, prune_every: int = 4096
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._capacity = float(limit.count)
        self._rate = limit.per_second
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (tokens, when)
        self._prune_every = prune_every
        self._since_prune = 0

    def take(self, method: str, principal: str) -> None:
        """See :meth:`RateLimiter.take`; ``retry_after`` is the whole seconds until a token is back (≥ 1)."""
        now = self._clock()
        self._maybe_prune(now)
        key = (method, principal)
        tokens = self._tokens(key, now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return
        self._buckets[key] = (tokens, now)
        wait = (1.0 - tokens) / self._rate
        raise RateLimited(
            "Too many certificate requests for this identity; try again later.",
            reason=f"{method} {principal}: more than {self.limit}",
            retry_after=max(1, math.ceil(wait)),
            principal=principal,
        )

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: tuple[str, str], now: float) -> float:
        held = self._buckets.get(key)
        if held is None:
            return self._capacity
        tokens, when = held
        # max(): a clock that stepped back must not drain a bucket.
        return min(self._capacity, tokens + max(0.0, now - when) * self._rate)

    def _maybe_prune(self, now: float) -> None:
        self._since_prune += 1
        if self._since_prune < self._prune_every:
            return
        self._since_prune = 0
        full = [key for key in self._buckets if self._tokens(key, now) >= self._capacity]
        for key in full:
            del self._buckets[key]
