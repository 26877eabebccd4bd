"""Spreading connections over workers that share one listening socket: :class:`AcceptBalance`.

Workers accepting from one socket (see :mod:`issuer.http.server_workers`) take connections
in the order the kernel wakes them, and on a busy machine the first worker to get a CPU
takes most of a burst: 16 keep-alive connections opened at once landed 16 to 0 or 15 to 1
on two workers, and a keep-alive connection stays where it lands. So each worker publishes
how many connections it has open (those still being set up included), in a table in memory
shared across the fork, and a worker that has more than another *live* worker waits
:data:`WAIT` before it accepts, leaving the connection to that worker; if nobody took it
meanwhile, it accepts it after all. A worker is live while its event loop stamps its row at
least every :data:`~issuer.http.server_config.HEARTBEAT_INTERVAL`; one that is stopped,
stuck, dead or still starting is out of the comparison within :data:`STALE`, so the wait
costs a new connection at most :data:`WAIT`, and only for those few seconds.

The table is one row of two 64-bit integers per worker slot (open connections or -1 when
vacant, and the stamp in monotonic milliseconds), written by its worker only, except that the
supervisor vacates the row of a worker it reaped. A reader may see a row mid-update: the
figures steer a heuristic, nothing depends on their being exact.
"""

from __future__ import annotations

import mmap

from issuer.http.server_config import HEARTBEAT_INTERVAL

__all__ = ["STALE", "WAIT", "AcceptBalance", "Seat"]

WAIT = 0.01  # how long a busier worker leaves a new connection to the others
STALE = 2.5 * HEARTBEAT_INTERVAL  # a row not stamped for this long is out of the comparison
_VACANT = -1
_ROW = 2  # (open connections, stamp in ms)


class AcceptBalance:
    """The supervisor's side: the shared table for ``slots`` workers; create it before forking."""

    def __init__(self, slots: int) -> None:
        self._memory = mmap.mmap(-1, 8 * _ROW * slots)  # anonymous and shared: the forked workers see it
        self._table = memoryview(self._memory).cast("q")
        self._slots = slots
        for slot in range(slots):
            self.vacate(slot)

    def vacate(self, slot: int) -> None:
        """Take ``slot`` out of the comparison (its worker is gone; the next one reports when it serves)."""
        self._table[_ROW * slot] = _VACANT

    def seat(self, slot: int) -> Seat:
        """The view of the worker in ``slot``."""
        return Seat(self._table, slot=slot, slots=self._slots)


class Seat:
    """One worker's row, and its reading of the others'."""

    __slots__ = ("_slot", "_slots", "_table")

    def __init__(self, table: memoryview, *, slot: int, slots: int) -> None:
        self._table = table
        self._slot = slot
        self._slots = slots

    def report(self, connections: int, *, now: float) -> None:
        """Publish this worker's open connections, stamped ``now`` (``time.monotonic()``)."""
        self._table[_ROW * self._slot + 1] = int(now * 1000)
        self._table[_ROW * self._slot] = connections

    def vacate(self) -> None:
        """Leave the comparison (this worker stops accepting)."""
        self._table[_ROW * self._slot] = _VACANT

    def should_wait(self, connections: int, *, now: float) -> bool:
        """True if another live worker has fewer open connections than ``connections``."""
        oldest = int((now - STALE) * 1000)
        for slot in range(self._slots):
            if slot == self._slot:
                continue
            other = self._table[_ROW * slot]
            if _VACANT < other < connections and self._table[_ROW * slot + 1] >= oldest:
                return True
        return False
