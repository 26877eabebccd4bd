"""When to renew and when to try again: pure functions of times and random fractions.

- Renewal is due at the issuer's ``renew_after`` (from ``issuer.json``) or, when
  that is unknown, at 2/3 of the lifetime, brought forward by a random jitter of up
  to 10 % of the lifetime so that a fleet issued at the same moment does not renew
  at the same moment.
- A failed attempt is retried after exponential backoff with full jitter
  (``uniform(0, min(cap, base * 2**failures))``, at least 1 s), never sooner than
  the issuer's ``Retry-After`` (up to an hour), and never so late that the
  certificate expires without another try.

Random numbers come in as fractions in [0, 1) so callers decide where they come
from (``random.SystemRandom`` in the daemon, a fixed sequence in tests).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final

__all__ = [
    "JITTER_FRACTION",
    "RENEW_FRACTION",
    "RETRY_AFTER_MAX",
    "Backoff",
    "next_attempt",
    "renewal_due",
    "retry_after_seconds",
]

RENEW_FRACTION: Final = 2 / 3
JITTER_FRACTION: Final = 0.10
# A Retry-After longer than this is read as this: a bad value must not park the machine for days.
RETRY_AFTER_MAX: Final = 3600.0
_MIN_DELAY: Final = 1.0
# Before expiry, the last retry is scheduled this long before not_after (or halfway there when closer);
# closer than _EXPIRY_FLOOR to expiry the backoff runs unclamped (it would only add tries a second apart).
_EXPIRY_MARGIN: Final = timedelta(seconds=60)
_EXPIRY_FLOOR: Final = timedelta(seconds=10)


def renewal_due(
    *, not_before: datetime, not_after: datetime, issuer_renew_after: datetime | None, jitter: float
) -> datetime:
    """The moment renewal is due, for a jitter fraction in [0, 1).

    ``issuer_renew_after`` is used when it lies inside the validity period, else
    ``not_before + 2/3 lifetime``; the result is that minus ``jitter * 10 %`` of the
    lifetime, so it is always before ``not_after``.
    """
    lifetime = not_after - not_before
    if lifetime <= timedelta(0):
        return not_before
    base = not_before + lifetime * RENEW_FRACTION
    if issuer_renew_after is not None and not_before < issuer_renew_after < not_after:
        base = issuer_renew_after
    return base - lifetime * (JITTER_FRACTION * min(max(jitter, 0.0), 1.0))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter")."""

    base: float = 5.0
    cap: float = 300.0

    def ceiling(self, failures: int) -> float:
        """The upper bound of the delay after ``failures`` consecutive failures (0 = first retry)."""
        return min(self.cap, self.base * 2.0 ** min(failures, 64))

    def delay(self, failures: int, *, jitter: float, retry_after: float | None = None) -> float:
        """Seconds to wait: ``jitter * ceiling(failures)``, at least 1 s and at least ``retry_after``
        (itself at most :data:`RETRY_AFTER_MAX`)."""
        delay = max(_MIN_DELAY, min(max(jitter, 0.0), 1.0) * self.ceiling(failures))
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_MAX))
        return delay


def next_attempt(now: datetime, delay: float, *, not_after: datetime | None) -> datetime:
    """``now + delay``, pulled in so that a still valid certificate gets one more try before ``not_after``."""
    wake = now + timedelta(seconds=delay)
    if not_after is None:
        return wake
    remaining = not_after - now
    if remaining <= _EXPIRY_FLOOR:
        return wake
    last_chance = not_after - max(_EXPIRY_FLOOR, min(_EXPIRY_MARGIN, remaining / 2))
    return min(wake, last_chance)


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """Seconds from ``now`` that a ``Retry-After`` header asks for (delta-seconds or an HTTP date);
    None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
    return max(0.0, (when - now).total_seconds())
