"""A document kept in module memory between invocations of one Lambda environment.

Fresh for ``ttl`` seconds after the source last confirmed it (200, or 304 to ``If-None-Match``);
after that refetched, and while the source fails — unreachable, refusing, or answering with
something that does not parse (a deeply nested or oversized JSON document included) — served
stale up to ``max_stale`` seconds after that confirmation. Retries after a failure back off
exponentially (5 s, 10 s, 20 s, ... but at least once per TTL), so an outage does not add a
timeout to every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

from .errors import SourceError
from .fetch import fetch
from .settings import AwsEnvironment, Fetching

__all__ = ["Held", "Log", "SourceCache", "log_line"]

Log = Callable[[str], None]
T = TypeVar("T")

FIRST_RETRY: Final = 5.0


def log_line(log: Log, level: str, event: str, **fields: Any) -> None:
    """One JSON log line; fields that are None are left out."""
    record = {"level": level, "event": event, **{k: v for k, v in fields.items() if v is not None}}
    log(json.dumps(record, separators=(",", ":"), default=str))


@dataclass(frozen=True)
class Held(Generic[T]):
    """What a cache holds at one moment: ``value`` is None when nothing usable is held."""

    value: T | None
    state: str  # "fresh", "stale" or "unavailable"
    age: float | None  # seconds since the source last confirmed the value
    confirmed_at: float | None  # when it did (epoch seconds)
    error: str  # why the last refresh failed, "" when it did not


@dataclass(frozen=True)
class Events:
    """The log events of one kind of source."""

    fetched: str
    not_modified: str
    failed: str
    invalid_code: str  # the SourceError code of a document that does not parse


class SourceCache(Generic[T]):
    """One source's document, parsed by ``parse`` (which raises :class:`SourceError` for a bad one)."""

    def __init__(self, parse: Callable[[bytes], T], describe: Callable[[T], Mapping[str, Any]], events: Events) -> None:
        self._parse = parse
        self._describe = describe
        self._events = events
        # Lambda runs one invocation per environment at a time; the lock is for other hosts.
        self._lock = threading.Lock()
        self._reset("")

    def _reset(self, url: str) -> None:
        self._url = url
        self._value: T | None = None
        self._etag = ""
        self._confirmed_at: float | None = None
        self._failed_at: float | None = None
        self._failures = 0
        self._error = ""

    def get(self, fetching: Fetching, *, aws: AwsEnvironment, now: datetime, log: Log) -> Held[T]:
        """The value to use at ``now``, fetching when due. Never raises for source failures."""
        with self._lock:
            if self._url != fetching.source.url:
                self._reset(fetching.source.url)  # another source: forget everything
            clock = now.timestamp()
            due = self._confirmed_at is None or clock - self._confirmed_at >= fetching.ttl
            backoff = min(fetching.ttl, FIRST_RETRY * 2 ** max(self._failures - 1, 0))
            backing_off = self._failed_at is not None and clock - self._failed_at < backoff
            if due and not backing_off:
                self._refresh(fetching, aws, now, log)
            if self._value is None or self._confirmed_at is None:
                return Held(None, "unavailable", None, None, self._error or "nothing fetched yet")
            age = clock - self._confirmed_at
            if age < fetching.ttl or age == 0:
                return Held(self._value, "fresh", age, self._confirmed_at, self._error)
            if age <= fetching.max_stale:
                return Held(self._value, "stale", age, self._confirmed_at, self._error)
            return Held(None, "unavailable", age, self._confirmed_at, self._error)

    def _refresh(self, fetching: Fetching, aws: AwsEnvironment, now: datetime, log: Log) -> None:
        clock = now.timestamp()
        source = fetching.source.redacted()
        try:
            fetched = fetch(fetching, aws=aws, etag=self._etag if self._value is not None else "", now=now)
            if fetched.status == 200:
                current = self._parse_safely(fetched.body)
            elif self._value is not None:
                current = self._value
            else:
                raise SourceError("304 Not Modified without a cached document")
        except SourceError as exc:
            self._failed_at, self._failures, self._error = clock, self._failures + 1, str(exc)
            age = None if self._confirmed_at is None else round(clock - self._confirmed_at, 3)
            fields = {"code": exc.code, "error": str(exc), "source": source, "age": age}
            log_line(log, "error", self._events.failed, **fields, max_stale=fetching.max_stale)
            return
        if fetched.status == 200:
            self._value, self._etag = current, fetched.etag
        self._confirmed_at, self._failed_at, self._failures, self._error = clock, None, 0, ""
        event = self._events.fetched if fetched.status == 200 else self._events.not_modified
        log_line(log, "info", event, source=source, **self._describe(current), etag=self._etag)

    def _parse_safely(self, body: bytes) -> T:
        # Hostile input must be a bad source (stale fallback, backoff), never an error on every request.
        try:
            return self._parse(body)
        except SourceError:
            raise
        except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as exc:
            raise SourceError(
                f"the document does not parse: {type(exc).__name__}: {str(exc)[:200]}", code=self._events.invalid_code
            ) from None
