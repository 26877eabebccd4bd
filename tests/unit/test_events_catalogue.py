"""The event catalogue (which row is which event) and PutEvents handling (batches, partial failures, backoff).

The publisher's client is the injected ``EventsClient`` seam; the real EventBridge path runs
against moto in tests/integration/test_events.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from issuer.events.catalogue import DETAIL_TYPES, SOURCE, EventRule, event_id_for, event_of_row, put_events_entry
from issuer.events.publisher import EventBridgePublisher, backoff_delay

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BUS = "arn:aws:events:us-east-1:123456789012:event-bus/audit"


def row(**values: Any) -> dict[str, Any]:
    base = {
        "id": 7,
        "method": "token",
        "outcome": "success",
        "code": None,
        "reason": None,
        "principal": "m-1",
        "role": "onprem",
        "certificate_serial": "ab",
        "remote_addr": None,
        "request_id": "r",
        "created_at": T0,
    }
    return {**base, **values}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "Certificate Issued"),
        ({"method": "aws-ec2"}, "Certificate Issued"),
        ({"method": "renew", "reason": "renewed 12"}, "Certificate Renewed"),
        ({"method": "revoke", "code": "certificate_revoked"}, "Certificate Revoked"),
        ({"method": "revoke", "code": "binding_reset", "certificate_serial": None}, None),
        ({"outcome": "failure", "code": "token_invalid", "certificate_serial": None}, "Attestation Refused"),
        ({"method": "renew", "outcome": "failure", "code": "certificate_revoked"}, "Attestation Refused"),
        ({"outcome": "failure", "code": "identity_denied", "certificate_serial": None}, "Identity Denied"),
        # Operator-action rows (method 'admin' with actor/action/arguments columns):
        (
            {"method": "admin", "action": "ca.activate", "actor": "local:ops@h", "certificate_serial": None},
            "CA Rotated",
        ),
        ({"method": "admin", "action": "ca.activate", "outcome": "failure", "code": "x"}, None),
        ({"method": "admin", "action": "token.create", "certificate_serial": None}, None),
    ],
)
def test_rows_map_to_detail_types(values: dict[str, Any], expected: str | None) -> None:
    event = event_of_row(row(**values), seq=3, trust_domain="test.example")
    assert (event.detail_type if event else None) == expected
    if expected is not None:
        assert expected in DETAIL_TYPES


def test_the_table_is_extensible() -> None:
    rules = (EventRule("Operator Acted", {"method": "admin"}),)
    event = event_of_row(row(method="admin"), seq=1, trust_domain="d", rules=rules)
    assert event is not None and event.detail_type == "Operator Acted"


def test_event_ids_are_deterministic_and_per_deployment() -> None:
    a = event_of_row(row(), seq=3, trust_domain="prod.example")
    b = event_of_row(row(), seq=9, trust_domain="prod.example")
    c = event_of_row(row(), seq=3, trust_domain="staging.example")
    assert a and b and c
    assert a.event_id == b.event_id == event_id_for("prod.example", "attestation", 7) != c.event_id
    entry = put_events_entry(a, bus_arn=BUS)
    detail = json.loads(entry["Detail"])
    assert entry["Source"] == SOURCE and entry["EventBusName"] == BUS and entry["DetailType"] == "Certificate Issued"
    assert detail["event_id"] == a.event_id and detail["attestation_id"] == 7 and detail["seq"] == 3
    assert detail["time"] == "2026-12-01T12:00:00.000000Z" and "code" not in detail  # nulls left out


class FakeEvents:
    """An EventsClient that refuses chosen entries (by detail event id) a number of times, or fails whole calls."""

    def __init__(self, *, refuse: Mapping[str, int] | None = None, down: int = 0) -> None:
        self.refuse = dict(refuse or {})
        self.down = down
        self.calls: list[list[str]] = []

    def put_events(self, *, Entries: list[dict[str, Any]]) -> Mapping[str, Any]:
        ids = [json.loads(e["Detail"])["event_id"] for e in Entries]
        self.calls.append(ids)
        if self.down:
            self.down -= 1
            raise EndpointConnectionError(endpoint_url="http://events")
        results: list[dict[str, str]] = []
        for event_id in ids:
            if self.refuse.get(event_id, 0) > 0:
                self.refuse[event_id] -= 1
                results.append({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"})
            else:
                results.append({"EventId": f"eb-{event_id}"})
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}


def events(n: int) -> list[Any]:
    out = [event_of_row(row(id=i), seq=i, trust_domain="d") for i in range(1, n + 1)]
    assert all(out)
    return out


def publisher(client: FakeEvents, delays: list[float], attempts: int = 3) -> EventBridgePublisher:
    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    return EventBridgePublisher(client, bus_arn=BUS, attempts=attempts, rand=lambda: 1.0, sleep=sleep)


async def test_batches_of_at_most_ten() -> None:
    client, delays = FakeEvents(), []
    result = await publisher(client, delays).publish(events(23))
    assert [len(c) for c in client.calls] == [10, 10, 3]
    assert len(result.accepted) == 23 and not result.failed and delays == []


async def test_only_failed_entries_are_retried_with_backoff() -> None:
    batch = events(10)
    flaky = {batch[2].event_id: 1, batch[7].event_id: 2}
    client, delays = FakeEvents(refuse=flaky), []
    result = await publisher(client, delays).publish(batch)
    assert [len(c) for c in client.calls] == [10, 2, 1]
    assert client.calls[1] == [batch[2].event_id, batch[7].event_id]
    assert len(result.accepted) == 10 and not result.failed
    assert delays == [0.2, 0.4]  # full jitter with rand() = 1: base * 2**attempt


async def test_entries_still_failing_are_returned_and_later_batches_wait() -> None:
    batch = events(15)
    client, delays = FakeEvents(refuse={batch[4].event_id: 99}), []
    result = await publisher(client, delays).publish(batch)
    assert result.failed[batch[4].event_id] == "InternalFailure"
    assert all(result.failed[e.event_id] == "not_attempted" for e in batch[10:])
    assert batch[3].event_id in result.accepted and batch[5].event_id in result.accepted
    assert len(client.calls) == 3  # the first batch, then its one failed entry twice; never the second batch


async def test_an_unreachable_endpoint_is_retried_then_reported() -> None:
    client, delays = FakeEvents(down=5), []
    result = await publisher(client, delays).publish(events(3))
    assert result.unreachable and not result.accepted and len(result.failed) == 3 and len(client.calls) == 3
    client, delays = FakeEvents(down=1), []
    result = await publisher(client, delays).publish(events(3))
    assert len(result.accepted) == 3 and not result.unreachable


def test_backoff_is_capped_full_jitter() -> None:
    assert backoff_delay(0, base=1.0, cap=60.0, rand=lambda: 0.5) == 0.5
    assert backoff_delay(10, base=1.0, cap=60.0, rand=lambda: 1.0) == 60.0
    assert backoff_delay(3, base=1.0, cap=60.0, rand=lambda: 0.0) == 0.0
