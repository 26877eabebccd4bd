"""``PutEvents`` done carefully: batches of at most 10, only the failed entries retried, backoff with jitter.

EventBridge answers 200 even when some entries failed: ``FailedEntryCount`` says how many,
and each failed entry in ``Entries`` (in request order) carries an ``ErrorCode``. Those, and
whole calls that fail (throttled, 5xx, unreachable, over ``call_timeout``), are retried with
"full jitter" exponential backoff up to ``attempts`` times; whatever still failed is returned
to the relay, which keeps its cursor before it and tries again on a later tick. Nothing is
lost by giving up: only the cursor moves, and only past what EventBridge accepted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from issuer.events.catalogue import Event, put_events_entry

__all__ = ["MAX_BATCH", "EventBridgePublisher", "EventsClient", "PublishResult", "backoff_delay", "events_client"]

log = logging.getLogger("issuer.events")

MAX_BATCH: Final = 10  # PutEvents takes at most 10 entries


class EventsClient(Protocol):
    """The one EventBridge call (a boto3 ``events`` client has it)."""

    def put_events(self, *, Entries: list[dict[str, Any]]) -> Mapping[str, Any]: ...


def events_client(*, region: str, connect_timeout: float = 2.0, read_timeout: float = 5.0) -> EventsClient:
    """A boto3 ``events`` client: bounded timeouts, no botocore retries (the publisher retries), the
    default credential chain, and botocore's endpoint settings (``AWS_ENDPOINT_URL_EVENTS``)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
    )
    client: EventsClient = boto3.session.Session().client("events", region_name=region, config=config)
    return client


def backoff_delay(attempt: int, *, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Full jitter: a random delay up to ``min(cap, base * 2**attempt)`` seconds."""
    return float(rand() * min(cap, base * 2**attempt))


@dataclass(frozen=True, slots=True)
class PublishResult:
    accepted: frozenset[str]  # event ids EventBridge took
    failed: Mapping[str, str]  # event id -> the last error code
    unreachable: bool  # the last call did not get an answer at all


class EventBridgePublisher:
    """Publishes :class:`Event` s to the bus ``bus_arn`` through ``client``.

    ``call_timeout`` bounds each ``PutEvents`` (botocore's own timeouts end the worker thread);
    ``attempts`` tries per batch; ``sleep``/``rand`` are injectable for tests.
    """

    def __init__(
        self,
        client: EventsClient,
        *,
        bus_arn: str,
        call_timeout: float = 8.0,
        attempts: int = 3,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self.bus_arn = bus_arn
        self._timeout = call_timeout
        self._attempts = attempts
        self._base = base_delay
        self._cap = max_delay
        self._rand = rand
        self._sleep = sleep

    async def publish(self, events: Sequence[Event]) -> PublishResult:
        """Publish ``events`` in order, in batches of at most 10; stops at the first batch that cannot be sent."""
        accepted: set[str] = set()
        failed: dict[str, str] = {}
        unreachable = False
        for start in range(0, len(events), MAX_BATCH):
            batch = list(events[start : start + MAX_BATCH])
            ok, errors, unreachable = await self._batch(batch)
            accepted |= ok
            failed.update(errors)
            if errors:
                # Later batches would only reorder what consumers see, and likely fail the same way.
                for event in events[start + MAX_BATCH :]:
                    failed.setdefault(event.event_id, "not_attempted")
                break
        return PublishResult(accepted=frozenset(accepted), failed=failed, unreachable=unreachable)

    async def _batch(self, batch: list[Event]) -> tuple[set[str], dict[str, str], bool]:
        accepted: set[str] = set()
        errors: dict[str, str] = {}
        pending = batch
        unreachable = False
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(backoff_delay(attempt - 1, base=self._base, cap=self._cap, rand=self._rand))
            entries = [put_events_entry(e, bus_arn=self.bus_arn) for e in pending]
            try:
                async with asyncio.timeout(self._timeout):
                    reply = await asyncio.to_thread(self._client.put_events, Entries=entries)
            except (ClientError, BotoCoreError, TimeoutError, OSError) as exc:
                code = _error_code(exc)
                unreachable = not isinstance(exc, ClientError)
                errors = {e.event_id: code for e in pending}
                log.warning("events: PutEvents of %d event(s) failed (attempt %d): %s", len(pending), attempt + 1, code)
                continue
            unreachable = False
            results = list(reply.get("Entries") or [])
            if len(results) != len(pending):
                errors = {e.event_id: "malformed_reply" for e in pending}
                continue
            still: list[Event] = []
            errors = {}
            for event, result in zip(pending, results, strict=True):
                if result.get("ErrorCode") or not result.get("EventId"):
                    still.append(event)
                    errors[event.event_id] = str(result.get("ErrorCode") or "no_event_id")
                else:
                    accepted.add(event.event_id)
            if still:
                log.warning(
                    "events: EventBridge refused %d of %d entries (FailedEntryCount %s): %s",
                    len(still),
                    len(pending),
                    reply.get("FailedEntryCount"),
                    ", ".join(sorted(set(errors.values()))),
                )
            pending = still
            if not pending:
                break
        return accepted, errors, unreachable


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__
