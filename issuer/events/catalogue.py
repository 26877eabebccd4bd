"""The event catalogue: which audit row becomes which EventBridge event, and what the event says. Pure.

:data:`EVENT_RULES` is a table, read top to bottom; the first rule whose columns all match
decides (``detail_type`` None: the row publishes nothing). A rule may name columns the
``attestations`` table does not have yet (``action``): they simply do not match. Extend the
table to publish more; keep the detail types stable, consumers route on them.

Every event has ``source`` ``aws-machine-issuer`` and a ``detail.event_id`` that is the same
each time the same fact is published (a UUID from the trust domain and the attestation id, or
the outbox's dedupe key): EventBridge delivery and this relay are at least once, so consumers
deduplicate on it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from issuer.audit.canonical import iso_utc

__all__ = [
    "ANY",
    "DETAIL_TYPES",
    "EVENT_RULES",
    "SOURCE",
    "Event",
    "EventRule",
    "event_id_for",
    "event_of_outbox",
    "event_of_row",
    "put_events_entry",
]

SOURCE: Final = "aws-machine-issuer"
DETAIL_TYPES: Final = (
    "Certificate Issued",
    "Certificate Renewed",
    "Certificate Revoked",
    "Attestation Refused",
    "Identity Denied",
    "CA Rotated",
    "Certificate Expiring Unrenewed",
)
# The namespace of event ids (uuid5): fixed forever, so an id never changes between releases.
_NAMESPACE: Final = uuid.UUID("5b1f7f34-5e0c-4a59-9d0c-7c1d1e0a6b21")


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any()  # matches any value that is not null


@dataclass(frozen=True, slots=True)
class EventRule:
    """``when`` maps a column to the value it must hold (or :data:`ANY`)."""

    detail_type: str | None
    when: Mapping[str, object] = field(default_factory=dict)

    def matches(self, row: Mapping[str, Any]) -> bool:
        for column, wanted in self.when.items():
            value = row.get(column)
            if value is None or (wanted is not ANY and value != wanted):
                return False
        return True


EVENT_RULES: Final[tuple[EventRule, ...]] = (
    # Operator actions: method 'admin' with actor/action/arguments (the operators' rows).
    EventRule("CA Rotated", {"action": "ca.activate", "outcome": "success"}),
    EventRule(None, {"method": "admin"}),
    # Revocation rows: one per certificate revoked; a binding reset publishes nothing.
    EventRule("Certificate Revoked", {"method": "revoke", "code": "certificate_revoked"}),
    EventRule(None, {"method": "revoke"}),
    # Attempts to get a certificate.
    EventRule("Identity Denied", {"outcome": "failure", "code": "identity_denied"}),
    EventRule("Attestation Refused", {"outcome": "failure"}),
    EventRule("Certificate Renewed", {"method": "renew", "outcome": "success"}),
    EventRule("Certificate Issued", {"outcome": "success", "certificate_serial": ANY}),
)
# Row columns copied into the detail (when present and not null), besides ids and times.
_ROW_FIELDS: Final = (
    "method",
    "outcome",
    "code",
    "reason",
    "principal",
    "role",
    "certificate_serial",
    "remote_addr",
    "request_id",
    "actor",
    "action",
    "arguments",
)


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    detail_type: str
    time: datetime
    detail: Mapping[str, Any]


def event_id_for(trust_domain: str, kind: str, key: str | int) -> str:
    """The event id of one fact, the same on every replica and every retry."""
    return str(uuid.uuid5(_NAMESPACE, f"{trust_domain}/{kind}/{key}"))


def event_of_row(
    row: Mapping[str, Any], *, seq: int, trust_domain: str, rules: tuple[EventRule, ...] = EVENT_RULES
) -> Event | None:
    """The event an audit row publishes (sealed at ``seq``), or None."""
    rule = next((r for r in rules if r.matches(row)), None)
    if rule is None or rule.detail_type is None:
        return None
    event_id = event_id_for(trust_domain, "attestation", int(row["id"]))
    detail: dict[str, Any] = {
        "event_id": event_id,
        "issuer": trust_domain,
        "attestation_id": int(row["id"]),
        "seq": seq,
        "time": iso_utc(row["created_at"]),
    }
    detail.update({name: row[name] for name in _ROW_FIELDS if row.get(name) is not None})
    return Event(event_id=event_id, detail_type=rule.detail_type, time=row["created_at"], detail=detail)


def event_of_outbox(
    *, dedupe_key: str, detail_type: str, detail: Mapping[str, Any], created_at: datetime, trust_domain: str
) -> Event:
    """The event of an ``event_outbox`` row."""
    event_id = event_id_for(trust_domain, "outbox", dedupe_key)
    full = {"event_id": event_id, "issuer": trust_domain, "time": iso_utc(created_at), **detail}
    return Event(event_id=event_id, detail_type=detail_type, time=created_at, detail=full)


def put_events_entry(event: Event, *, bus_arn: str) -> dict[str, Any]:
    """The ``PutEvents`` entry for ``event`` on the bus ``bus_arn``."""
    return {
        "Source": SOURCE,
        "DetailType": event.detail_type,
        "Detail": json.dumps(event.detail, sort_keys=True, default=str),
        "EventBusName": bus_arn,
        "Time": event.time,
    }
