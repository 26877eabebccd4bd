"""``issuer_ca_expiry_timestamp_seconds{issuer,kind,state,subject}``: when each CA of the registry expires.

One series per issuing CA of the registry (``kind="issuing"``, in every ``state``: prepared,
active, retired) and per active root (``kind="root"``), valued at its NotAfter as Unix time, so
an alert can say ``issuer_ca_expiry_timestamp_seconds{kind="issuing",state="active"} - time() <
30 * 86400``. ``issuer`` is the first 16 hex digits of the certificate's SHA-256 fingerprint (what
``issuer ca status`` shows and ``ca activate``/``ca retire`` take). Read from the replica's registry
snapshot at every scrape, so it follows ``ca rotate``/``activate``/``retire`` within one
``registry_refresh``; no database query of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = ["CaExpiry", "CaExpiryCollector"]

NAME = "issuer_ca_expiry_timestamp_seconds"


@dataclass(frozen=True, slots=True)
class CaExpiry:
    """One CA as the gauge shows it."""

    fingerprint_sha256: str
    kind: str  # issuing | root
    state: str
    subject: str
    not_after: datetime


class CaExpiryCollector:
    """The gauge as a collector over ``entries()`` (the registry snapshot; empty before it is loaded)."""

    def __init__(self, entries: Callable[[], Iterable[CaExpiry]]) -> None:
        self._entries = entries

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            NAME,
            "When each CA of the registry expires (NotAfter, Unix time): issuing CAs and active roots.",
            labels=["issuer", "kind", "state", "subject"],
        )
        for entry in self._entries():
            labels = [entry.fingerprint_sha256[:16], entry.kind, entry.state, entry.subject]
            family.add_metric(labels, entry.not_after.timestamp())
        return [family]

    async def refresh(self) -> None:
        """Nothing to do: the registry snapshot is kept current by the registry's own refresh."""
