"""The daemon's real clock and its stop switch (SIGTERM/SIGINT).

The first SIGTERM or SIGINT asks the daemon to stop: a wait returns at once, and
an exchange with the issuer already under way is finished (at most ``--timeout``)
so that a certificate the issuer has just recorded is installed rather than lost.
A second signal stops at once (:class:`Interrupted`). Either way the files are
consistent: every install is a single rename (see :mod:`clients.agent.files`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from types import FrameType

__all__ = ["Interrupted", "StopSwitch", "SystemClock"]


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


# A BaseException like KeyboardInterrupt: no `except Exception` on the way up may swallow it.
class Interrupted(BaseException):
    """A second stop signal arrived while the daemon was busy."""


class StopSwitch:
    """A :class:`clients.agent.daemon.Waiter` that a stop signal (or :meth:`stop`) ends."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when asked to stop."""
        return self._event.wait(max(0.0, seconds))

    def stop(self, reason: str) -> None:
        if self._event.is_set():
            raise Interrupted(reason)
        self.reason = reason
        self._event.set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum).name)

    @contextmanager
    def signals_installed(self) -> Iterator[StopSwitch]:
        """Route SIGTERM and SIGINT to :meth:`stop` (main thread only); restore the old handlers after."""
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
