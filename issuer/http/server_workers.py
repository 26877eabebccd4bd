"""The supervisor: the parent that forks N workers sharing one listening socket, and watches them.

The supervisor binds the socket, forks the workers (each runs
:func:`~issuer.http.server_worker.run_worker`), reports "listening" once every worker has
finished start-up, forwards SIGTERM/SIGINT, restarts a worker that dies after a bounded
exponential backoff (0.5 s doubling to 30 s, reset after 30 s of service), and kills
workers that outlive the shutdown timeout.

**One socket, shared.** Every worker accepts from the one listening socket, one connection
per turn of its loop (:mod:`issuer.http.server_site`). A connection waits in the kernel's
queue until a worker that is running takes it: a worker that is stopped, stuck, dead or
still starting takes none, and killing a worker loses only the connections it had already
accepted. With a socket per worker (``SO_REUSEPORT``, the design before this one) the
kernel hashes each new connection to one worker's queue whatever that worker's state:
with one of two workers stopped, every other new connection hung until it came back, a
replacement worker's share waited out its start-up, and a killed worker's queue was reset.
What a socket per worker did better, spreading a burst of keep-alive connections evenly, the
shared socket does as well with :mod:`issuer.http.server_balance` (8/8 to 5/11 of 16 against the
kernel's hash, 8/8 to 4/12). Throughput was the same within the noise of a shared 2-core
machine (README, "Benchmark": the figures of both designs and the command). A watchdog alone over
per-worker sockets was the other way: to answer new connections within seconds it would have to
kill a worker silent for only a few seconds, which a loaded machine can starve that long, and
each kill would still reset the connections queued for it.

**The watchdog.** Each ready worker's event loop reports every second over the report
pipe; one silent for ``limits.worker_timeout`` (30 s) has a stuck loop or was stopped, and
is killed (SIGKILL) and replaced like any dead worker. The shared socket already keeps new
connections away from it; the watchdog frees the connections and requests it holds. It
only watches ready workers: one still starting takes no connection.

**The lifeline.** Each worker reads the end of a pipe only the supervisor holds open, and
stops when it reads end-of-file (see :mod:`issuer.http.server_worker`): when the
supervisor is killed (``kill -9``, the OOM killer), its workers drain their requests and
exit, and the port is free for the next ``issuer serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from aiohttp import web

from issuer.errors import IssuerError
from issuer.http.server_balance import AcceptBalance
from issuer.http.server_config import HEARTBEAT_INTERVAL, ServeError, ServerLimits
from issuer.http.server_worker import STOP_SIGNALS, keep_beating, run_worker, send_line, watch_lifeline

__all__ = ["Supervisor"]

log = logging.getLogger("issuer.http.server")

AppFactory = Callable[[], web.Application]

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_STABLE_AFTER = 30.0  # a worker that served this long resets its slot's backoff
_KILL_GRACE = 10.0  # beyond shutdown_timeout, for the app's cleanup, before SIGKILL
_STARTUP_EXIT = 3
_REPORT_PATIENCE = 10.0  # how long a worker waits to say "ready" or "error" into a full pipe


@dataclass(slots=True)
class _Child:
    pid: int
    slot: int
    started: float
    ready: bool = False
    error: str | None = None
    error_code: str | None = None
    heard: float = 0.0  # when the supervisor last read a line from it
    killed: bool = False  # by the watchdog


class Supervisor:
    """The parent of ``workers`` forked workers serving one listening socket (Unix, main thread only)."""

    def __init__(
        self,
        make_app: AppFactory,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None,
        limits: ServerLimits,
        workers: int,
        on_ready: Callable[[], None],
    ) -> None:
        self._make_app = make_app
        self._sock = sock
        self._ssl_context = ssl_context
        self._limits = limits
        self._workers = workers
        self._on_ready = on_ready
        self._balance = AcceptBalance(workers)
        self._children: dict[int, _Child] = {}
        self._restarts: dict[int, float] = {}  # slot -> when
        self._failures: dict[int, int] = {}  # slot -> consecutive unexpected exits
        self._signals: list[int] = []
        self._lines = b""
        self._serving = False
        self._report_r, self._report_w = os.pipe()  # workers -> supervisor: ready, error, alive
        self._lifeline_r, self._lifeline_w = os.pipe()  # EOF in the workers once the supervisor is gone
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._report_r, self._report_w, self._wake_r, self._wake_w):
            os.set_blocking(fd, False)  # _report_w: shared by every worker; a full pipe must not block one

    def run(self) -> None:
        """Fork the workers, call ``on_ready`` once all serve, supervise until SIGTERM/SIGINT, stop them.

        Raises :class:`ServeError` (or the worker's own start-up error) if a worker fails before
        every worker was ready; the other workers are stopped first.
        """
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGCHLD, self._on_sigchld)  # a handler, so the wakeup fd hears of exits
        try:
            for slot in range(self._workers):
                self._spawn(slot)
            if self._wait_until_ready():
                self._serving = True
                self._on_ready()
                self._supervise()
            self._stop_all()
        finally:
            self._kill_all()
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for fd in self._fds():
                os.close(fd)

    def _fds(self) -> tuple[int, ...]:
        return (self._report_r, self._report_w, self._lifeline_r, self._lifeline_w, self._wake_r, self._wake_w)

    # -- phases ---------------------------------------------------------------------------

    def _wait_until_ready(self) -> bool:
        while not self._signals:
            if all(child.ready for child in self._children.values()) and len(self._children) == self._workers:
                return True
            for child, status in self._pump(None):
                self._stop_all()
                if child.error is not None:
                    raise ServeError(child.error, code=child.error_code or "startup_failed")
                raise ServeError(f"worker {child.pid} {_describe(status)} during start-up", code="worker_failed")
        return False

    def _supervise(self) -> None:
        while not self._signals:
            now = time.monotonic()
            for slot, when in list(self._restarts.items()):
                if when <= now:
                    del self._restarts[slot]
                    self._spawn(slot)
            self._kill_silent()
            timeout = max(0.0, min([*self._restarts.values(), now + HEARTBEAT_INTERVAL]) - now)
            for child, status in self._pump(timeout):
                self._schedule_restart(child, status)

    def _kill_silent(self) -> None:
        """The watchdog: SIGKILL each ready worker not heard from for ``worker_timeout``; it is then replaced."""
        # Heartbeats are stamped when read, and what is in the pipe is read first: a supervisor that
        # was itself stopped or starved does not take its own pause for its workers'.
        self._read_messages()
        now = time.monotonic()
        for child in self._children.values():
            if child.ready and not child.killed and now - child.heard > self._limits.worker_timeout:
                log.error(
                    "worker %d has not reported for %.0fs (its event loop is stuck or it was stopped); killing it",
                    child.pid,
                    now - child.heard,
                )
                child.killed = True
                _kill(child.pid, signal.SIGKILL)

    def _stop_all(self) -> None:
        self._restarts.clear()
        self._sock.close()  # nothing more to fork; once the workers close theirs, connects are refused
        for child in self._children.values():
            _kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._limits.shutdown_timeout + _KILL_GRACE
        seen = len(self._signals)
        while self._children:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(self._signals) > seen:
                log.warning("workers did not stop in time; killing %s", sorted(self._children))
                return  # _kill_all
            for child, status in self._pump(remaining):
                level = logging.INFO if os.waitstatus_to_exitcode(status) == 0 else logging.WARNING
                log.log(level, "worker %d %s", child.pid, _describe(status))

    def _kill_all(self) -> None:
        for pid in list(self._children):
            _kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            del self._children[pid]

    # -- events ---------------------------------------------------------------------------

    def _pump(self, timeout: float | None) -> list[tuple[_Child, int]]:
        """Wait up to ``timeout`` for a signal, a worker message or a worker exit; returns the exits."""
        with contextlib.suppress(InterruptedError):
            select.select([self._report_r, self._wake_r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass
        self._read_messages()
        exited: list[tuple[_Child, int]] = []
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            child = self._children.pop(pid, None)
            if child is not None:
                self._balance.vacate(child.slot)
                exited.append((child, status))
        if exited:
            self._read_messages([child for child, _ in exited])  # an error line written just before exiting
        return exited

    def _read_messages(self, exited: list[_Child] | None = None) -> None:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._report_r, 65536):
                self._lines += chunk
        *lines, self._lines = self._lines.split(b"\n")
        now = time.monotonic()
        for line in lines:
            pid_text, _, rest = line.decode("utf-8", "replace").partition(" ")
            known = [*self._children.values(), *(exited or [])]
            child = next((c for c in known if str(c.pid) == pid_text), None)
            if child is None:
                continue
            child.heard = now
            kind, _, detail = rest.partition(" ")
            if kind == "ready":
                child.ready = True
                log.info("worker %d serving", child.pid)
            elif kind == "error":
                child.error_code, _, child.error = detail.partition(" ")
                if self._serving:  # before that, the error is what serve() raises
                    log.error("worker %d failed to start: %s", child.pid, child.error)

    def _schedule_restart(self, child: _Child, status: int) -> None:
        if child.ready and time.monotonic() - child.started >= _STABLE_AFTER:
            self._failures[child.slot] = 0
        failures = self._failures.get(child.slot, 0) + 1
        self._failures[child.slot] = failures
        delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (failures - 1))
        log.warning("worker %d %s; starting a new one in %.1fs", child.pid, _describe(status), delay)
        self._restarts[child.slot] = time.monotonic() + delay

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def _on_sigchld(self, signum: int, frame: object) -> None:
        pass

    # -- the child ------------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        # Blocked across the fork, a SIGTERM cannot reach the child before it can stop gracefully.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            self._child_main(slot)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        now = time.monotonic()
        self._children[pid] = _Child(pid=pid, slot=slot, started=now, heard=now)

    def _child_main(self, slot: int) -> NoReturn:
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for signum in STOP_SIGNALS:
                # What run_worker restores when it is done: a late SIGTERM must not kill a worker mid-exit.
                signal.signal(signum, signal.SIG_IGN)
            # Only the supervisor may hold the lifeline's write end, or this worker never reads EOF.
            for fd in (self._report_r, self._lifeline_w, self._wake_r, self._wake_w):
                os.close(fd)
            watch_lifeline(self._lifeline_r, grace=self._limits.shutdown_timeout + _KILL_GRACE)
            serving = False

            def ready() -> None:
                nonlocal serving
                serving = True
                send_line(self._report_w, "ready", patience=_REPORT_PATIENCE)
                keep_beating(lambda: send_line(self._report_w, "alive", patience=0))

            try:
                asyncio.run(
                    run_worker(
                        self._make_app,
                        self._sock,
                        ssl_context=self._ssl_context,
                        limits=self._limits,
                        ready=ready,
                        seat=self._balance.seat(slot),
                    )
                )
                status = 0
            except IssuerError as exc:
                if serving:
                    raise
                detail = " ".join(exc.detail.split())[:1000]
                send_line(self._report_w, f"error {exc.code} {detail}", patience=_REPORT_PATIENCE)
                status = _STARTUP_EXIT
        except BaseException:
            log.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"
