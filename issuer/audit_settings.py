"""The ``[audit]`` and ``[events]`` sections of ``issuer.toml``.

```toml
[audit]
checkpoint_kms_key = "arn:aws:kms:eu-west-1:123456789012:key/…"  # required when the active CA is AWS Private CA
checkpoint_rows = 1000          # sign a checkpoint at least every this many audit rows
checkpoint_interval = "60s"     # … and at least this often while rows arrive

[events]
bus_arn = "arn:aws:events:eu-west-1:123456789012:event-bus/security"   # absent: no events
expiring_scan = "5m"            # how often to look for certificates past renew-after, not renewed
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from issuer.durations import parse_duration
from issuer.errors import ConfigError

__all__ = ["AuditSettings", "EventSettings", "parse_audit", "parse_events"]

_BUS_ARN: Final = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):events:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+):(?P<account>\d{12}):"
    r"event-bus/(?P<name>[A-Za-z0-9._/-]{1,256})"
)


@dataclass(frozen=True, slots=True)
class AuditSettings:
    checkpoint_kms_key: str | None = None
    checkpoint_rows: int = 1000
    checkpoint_interval: timedelta = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class EventSettings:
    bus_arn: str | None = None
    expiring_scan: timedelta = timedelta(minutes=5)

    @property
    def region(self) -> str:
        match = _BUS_ARN.fullmatch(self.bus_arn or "")
        if match is None:
            raise ConfigError("[events] bus_arn is not set")
        return match.group("region")


def _duration(table: Mapping[str, Any], key: str, default: str, where: str) -> timedelta:
    try:
        value = parse_duration(table.get(key, default))
    except ValueError as exc:
        raise ConfigError(f"{where} {key}: {exc}") from None
    if value <= timedelta(0):
        raise ConfigError(f"{where} {key} must be positive")
    return value


def parse_audit(table: Mapping[str, Any], source: str) -> AuditSettings:
    where = f"{source}: [audit]"
    bad = sorted(set(table) - {"checkpoint_kms_key", "checkpoint_rows", "checkpoint_interval"})
    if bad:
        raise ConfigError(f"{where} has unknown field {bad[0]!r}")
    key = table.get("checkpoint_kms_key")
    if key is not None:
        from issuer.aws.kms import is_key_arn

        if not isinstance(key, str) or not is_key_arn(key):
            raise ConfigError(
                f"{where} checkpoint_kms_key must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), "
                "not an alias: an alias could be pointed at another key"
            )
    rows = table.get("checkpoint_rows", 1000)
    if not isinstance(rows, int) or isinstance(rows, bool) or not 1 <= rows <= 1_000_000:
        raise ConfigError(f"{where} checkpoint_rows must be an integer from 1 to 1000000")
    return AuditSettings(
        checkpoint_kms_key=key,
        checkpoint_rows=rows,
        checkpoint_interval=_duration(table, "checkpoint_interval", "60s", where),
    )


def parse_events(table: Mapping[str, Any], source: str) -> EventSettings:
    where = f"{source}: [events]"
    bad = sorted(set(table) - {"bus_arn", "expiring_scan"})
    if bad:
        raise ConfigError(f"{where} has unknown field {bad[0]!r}")
    bus = table.get("bus_arn")
    if bus is not None and (not isinstance(bus, str) or not _BUS_ARN.fullmatch(bus)):
        raise ConfigError(f"{where} bus_arn must be an event bus ARN (arn:aws:events:REGION:ACCOUNT:event-bus/NAME)")
    return EventSettings(bus_arn=bus, expiring_scan=_duration(table, "expiring_scan", "5m", where))
