"""The sealer: every replica appends committed audit rows to the chain and signs checkpoints.

Each tick (every second) one replica at a time — ``pg_try_advisory_xact_lock`` on Postgres,
an in-process lock and the chain's primary key on SQLite — reads the unsealed rows in id order
and appends those :func:`issuer.audit.chain.seal` admits, in one transaction. Rows that commit
late (a lower id after a higher one was sealed) are simply sealed on a later tick with a higher
``seq``: nothing any writer does waits for the sealer, and it does not matter who wrote a row.

Then, when due (``checkpoint_rows`` entries or ``checkpoint_interval`` since the last one), it
signs a checkpoint — but only after recomputing the chain from the last checkpoint to the new
head: the service never signs a chain that does not follow from what it signed before. If the
newest checkpoint in the database is ever older than one this process has seen, checkpoints
were deleted: it logs an error and signs nothing more (``issuer_audit_uncheckpointed_rows``
then grows, and ``issuer audit verify`` fails), rather than sign over the gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.audit import chain_store as store
from issuer.audit.chain import DEFAULT_LATE_WINDOW, seal
from issuer.audit.chain_store import CheckpointRecord
from issuer.audit.checkpoints import CheckpointKeys, sign_checkpoint
from issuer.audit.verify import ChainWalker
from issuer.faults import is_database_outage
from issuer.store import issuers as registry

__all__ = ["CHECKPOINT_LOCK", "Sealer"]

log = logging.getLogger("issuer.audit")

CHECKPOINT_LOCK: Final = 0x6175646974636B70
_REPORTED_LIMIT: Final = 10_000  # refused row ids remembered, so each is logged once
# Entries fetched and re-hashed per step of a checkpoint's walk: the walk runs on the serving event
# loop, and each step holds every request beside it until it is done; a tenth of the former 1000
# is a tenth of the stall, once per checkpoint.
_WALK_BATCH: Final = 100


class Sealer:
    """Seals and checkpoints the audit chain of ``sessions``' database; one per process.

    ``keys`` finds the checkpoint key (None: seal only). ``clock`` is the service's clock: it
    stamps ``sealed_at`` and checkpoint times.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime],
        keys: CheckpointKeys | None,
        every: float = 1.0,
        batch: int = 100,  # rows hashed per turn of the event loop: a bigger batch stalls the requests beside it
        max_per_tick: int = 5000,
        late_window: timedelta = DEFAULT_LATE_WINDOW,
        checkpoint_rows: int = 1000,
        checkpoint_interval: timedelta = timedelta(seconds=60),
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._keys = keys
        self._every = every
        self._batch = batch
        self._max_per_tick = max_per_tick
        self._late = late_window
        self._checkpoint_rows = checkpoint_rows
        self._checkpoint_interval = checkpoint_interval
        self._lock = asyncio.Lock()
        self._refused: set[int] = set()
        self._seen: CheckpointRecord | None = None
        self.halted: str | None = None  # why checkpoints stopped (tampering seen), for the log and tests
        self._last_key_error = 0.0

    async def seal_once(self) -> int:
        """Append what may be sealed now; how many entries were appended (0 if another replica holds the lock)."""
        async with self._lock:
            try:
                async with self._sessions() as session, session.begin():
                    if not await store.try_lock(session, store.SEAL_LOCK):
                        return 0
                    return await self._seal(session)
            except IntegrityError:
                # Another process on the same SQLite file sealed the same seq first; the next tick goes on.
                log.debug("audit: another sealer appended first; retrying next tick")
                return 0

    async def _seal(self, session: AsyncSession) -> int:
        tail = await store.chain_tail(session)
        now = self._clock()
        adopting = tail.seq == 0  # the first seal takes the whole history, in one go (see issuer.audit.chain)
        total = 0
        after: int | None = None
        while adopting or total < self._max_per_tick:
            rows = await store.unsealed_rows(
                session,
                above_id=None if adopting else tail.max_id,
                since=now - self._late,
                after_id=after,
                limit=self._batch,
            )
            if not rows:
                break
            sealed = seal(rows, tail, now=now, late_window=self._late, adopt=adopting)
            await store.append_entries(session, sealed.entries)
            self._report(sealed.refused)
            tail = sealed.tail
            total += len(sealed.entries)
            after = int(rows[-1]["id"])
            if len(rows) < self._batch:
                break
        return total

    def _report(self, refused: tuple[tuple[int, str], ...]) -> None:
        for row_id, why in refused:
            if row_id in self._refused:
                continue
            if len(self._refused) < _REPORTED_LIMIT:
                self._refused.add(row_id)
            log.error("audit: row %d is not sealed (run `issuer audit verify`): %s", row_id, why)

    async def checkpoint_once(self, *, force: bool = False) -> CheckpointRecord | None:
        """Sign a checkpoint if one is due (``force``: whenever the head moved); the new checkpoint or None.

        Raises :class:`~issuer.errors.ConfigError` when no key can sign checkpoints, and what the
        key backend raises (KMS unavailable).
        """
        if self._keys is None or self.halted is not None:
            return None
        async with self._sessions() as session, session.begin():
            if not await store.try_lock(session, CHECKPOINT_LOCK):
                return None
            latest = await store.latest_checkpoint(session)
            if self._went_backwards(latest):
                return None
            end = await store.chain_end(session)
            base = latest.seq if latest is not None else 0
            now = self._clock()
            if end <= base:
                return None
            due = (
                force
                or latest is None
                or end - base >= self._checkpoint_rows
                or now - latest.at >= self._checkpoint_interval
            )
            if not due:
                return None
            upto = min(end, base + self._checkpoint_rows)
            head = await self._follows(session, latest, upto)
            if head is None:
                return None
            issuer = next((i for i in await registry.list_issuers(session) if i.state == "active"), None)
            if issuer is None:
                return None
            signer = await self._keys.signer_for(issuer)
            record = await sign_checkpoint(signer, seq=upto, head_hash=head, at=now)
            await store.add_checkpoint(session, record)
        self._seen = record
        return record

    def _went_backwards(self, latest: CheckpointRecord | None) -> bool:
        seen = self._seen
        if seen is not None and (latest is None or latest.seq < seen.seq):
            self.halted = (
                f"the newest audit checkpoint in the database is {latest.seq if latest else 'none'}, but this "
                f"process saw checkpoint {seen.seq}: checkpoints were deleted"
            )
            log.error("audit: %s; no more checkpoints will be signed (run `issuer audit verify`)", self.halted)
            return True
        if latest is not None and (seen is None or latest.seq > seen.seq):
            self._seen = latest
        return False

    async def _follows(self, session: AsyncSession, latest: CheckpointRecord | None, upto: int) -> str | None:
        """The chain's hash at ``upto`` if the chain still follows from ``latest``; None (logged) if not."""
        base = latest.seq if latest is not None else 0
        start = await store.tail_before(session, base + 1)
        checkpoints = {latest.seq: latest.head_hash} if latest is not None else {}
        problem: str | None = None
        if latest is not None and start.row_hash != latest.head_hash:
            problem = f"the chain's hash at seq {base} is not the one signed in checkpoint {base}"
        walker = ChainWalker(
            start=start,
            checkpoints=checkpoints,
            late_window=self._late,
            max_findings=1,
            adopted_at=await store.first_sealed_at(session),
        )
        after = base
        while problem is None and after < upto:
            batch = await store.entries_after(session, after_seq=after, limit=_WALK_BATCH, until_seq=upto)
            if not batch:
                break
            walker.walk(batch)
            after = batch[-1][0].seq
            if walker.findings:
                problem = walker.findings[0].line()
        if problem is None and walker.tail.seq != upto:
            problem = f"the chain ends at seq {walker.tail.seq}, before {upto}"
        if problem is not None:
            log.error("audit: not signing a checkpoint: %s (run `issuer audit verify`)", problem)
            return None
        return walker.tail.row_hash

    async def run(self) -> None:
        """Seal every ``every`` seconds and checkpoint when due, until cancelled; failures are logged, never raised."""
        failures = 0
        while True:
            try:
                async with asyncio.timeout(60):
                    await self.seal_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._log_failure("sealing", exc)
            try:
                async with asyncio.timeout(60):
                    await self.checkpoint_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                now = time.monotonic()
                if now - self._last_key_error > 60:  # a missing key would otherwise log every second
                    self._last_key_error = now
                    self._log_failure("checkpointing", exc)
            await asyncio.sleep(self._every * min(2**failures, 30))

    async def flush(self, *, within: float = 5.0) -> None:
        """On shutdown: seal what is pending and checkpoint the head, within ``within`` seconds; never raises."""
        try:
            async with asyncio.timeout(within):
                await self.seal_once()
                await self.checkpoint_once(force=True)
        except Exception as exc:
            self._log_failure("the final seal", exc)

    @staticmethod
    def _log_failure(what: str, exc: BaseException) -> None:
        level = logging.WARNING if is_database_outage(exc) else logging.ERROR
        first = str(exc).splitlines()[0] if str(exc) else ""
        log.log(level, "audit: %s failed: %s: %s", what, type(exc).__name__, first)
