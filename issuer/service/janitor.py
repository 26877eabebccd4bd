"""Background tidying each replica does: expired replay guards go, refused STS proofs are reported.

A replay guard only matters while the proof it guards could still be accepted
(15 minutes for a signed STS request), and anyone can make the service write one
by sending well-formed garbage, so expired guards are deleted in small batches
every few minutes rather than left to grow.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.faults import is_database_outage
from issuer.service.issuance.model import Clock
from issuer.store import replay_guards

__all__ = ["Janitor"]

log = logging.getLogger("issuer.janitor")


class Janitor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Clock,
        refusals: Counter[tuple[str, str]],
        every: float = 300.0,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._refusals = refusals
        self._every = every
        self._reported: dict[str, int] = {}

    async def tidy(self) -> int:
        """Delete expired replay guards (batch after batch); how many went."""
        total = 0
        while True:
            async with self._sessions() as session, session.begin():
                deleted = await replay_guards.delete_expired_replay_guards(session, now=self._clock())
            total += deleted
            if deleted == 0:
                return total
            await asyncio.sleep(0)  # let requests in between batches

    def report(self) -> None:
        """Log how many STS proofs were refused since the last report, by code."""
        current = {code: n for (method, code), n in self._refusals.items() if method == "aws-iam"}
        new = {code: n - self._reported.get(code, 0) for code, n in current.items() if n > self._reported.get(code, 0)}
        self._reported = current
        if new:
            summary = ", ".join(f"{code}={n}" for code, n in sorted(new.items()))
            log.info("refused STS proofs since the last report: %d (%s)", sum(new.values()), summary)

    async def run(self) -> None:
        """Tidy and report every ``every`` seconds until cancelled; errors are logged, never raised."""
        while True:
            await asyncio.sleep(self._every)
            try:
                deleted = await self.tidy()
                if deleted:
                    log.info("deleted %d expired replay guards", deleted)
                self.report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                level = logging.WARNING if is_database_outage(exc) else logging.ERROR
                log.log(
                    level, "tidying failed: %s: %s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""
                )
