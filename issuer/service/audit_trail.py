"""The audit trail's background work in a serving process: sealing, checkpoints, events, gauges.

``create_app`` builds one :class:`AuditTrail` and runs :meth:`AuditTrail.tasks` beside its
other background tasks; on shutdown :meth:`AuditTrail.close` seals what is pending and signs
a last checkpoint (bounded), so a replica that stops leaves no row unsealed behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.audit.checkpoints import CheckpointKeys
from issuer.audit.gauges import AuditGauges
from issuer.audit.sealer import Sealer
from issuer.events.expiring import ExpiringScan
from issuer.events.publisher import EventBridgePublisher, EventsClient, events_client
from issuer.events.relay import CURSOR_NAME, EventRelay
from issuer.settings import Settings

__all__ = ["AuditTrail"]


class AuditTrail:
    """Everything of the audit trail one process runs. ``events`` overrides the EventBridge client."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime],
        passphrase: Callable[[], bytes],
        events: EventsClient | None = None,
        seal_every: float | None = 1.0,
    ) -> None:
        # None: no sealing loop (a test that seals by hand, at points it chooses); shutdown still flushes.
        self._seal_loop = seal_every is not None
        keys = CheckpointKeys(ca_dir=settings.ca_dir, passphrase=passphrase, kms_key=settings.audit.checkpoint_kms_key)
        self.sealer = Sealer(
            sessions,
            clock=clock,
            keys=keys,
            every=seal_every if seal_every is not None else 1.0,
            checkpoint_rows=settings.audit.checkpoint_rows,
            checkpoint_interval=settings.audit.checkpoint_interval,
        )
        bus = settings.events.bus_arn
        self.gauges = AuditGauges(sessions, clock=clock, events=CURSOR_NAME if bus else None)
        self.relay: EventRelay | None = None
        self.expiring: ExpiringScan | None = None
        if bus:
            client = events or events_client(region=settings.events.region)
            self.relay = EventRelay(
                sessions,
                publisher=EventBridgePublisher(client, bus_arn=bus),
                clock=clock,
                trust_domain=settings.trust_domain,
            )
            self.expiring = ExpiringScan(
                sessions,
                clock=clock,
                renew_fraction=settings.renew_fraction,
                every=settings.events.expiring_scan.total_seconds(),
            )

    async def prepare(self) -> None:
        """At start-up: the event relay's cursor (events are published from the first start with [events] on)."""
        if self.relay is not None:
            await self.relay.prepare()

    def tasks(self) -> list[Coroutine[Any, Any, None]]:
        """The loops to run until shutdown."""
        loops = [self.sealer.run()] if self._seal_loop else []
        if self.relay is not None:
            loops.append(self.relay.run())
        if self.expiring is not None:
            loops.append(self.expiring.run())
        return loops

    async def close(self) -> None:
        """After the loops were cancelled: seal and checkpoint what is pending (never raises)."""
        await self.sealer.flush()
