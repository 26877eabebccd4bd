"""Serving processes: one worker's event loop, and the parent that forks and supervises N of them.

A worker builds its application (``make_app()``, after the fork: the app opens its own
database pool), serves the inherited listening socket and stops gracefully on SIGTERM
or SIGINT. The parent reports "listening" once every worker has finished start-up,
forwards SIGTERM/SIGINT, restarts a worker that dies unexpectedly after a bounded
exponential backoff, and kills workers that outlive the shutdown timeout.

Workers talk to the parent over one pipe, a line per event (``<pid> ready`` or
``<pid> error <code> <detail>``), short enough for the kernel to write atomically.
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
from issuer.http.server_config import ServeError, ServerLimits
from issuer.http.server_protocol import start_app

__all__ = ["Supervisor", "run_worker", "startup_error"]

log = logging.getLogger("issuer.http.server")

AppFactory = Callable[[], web.Application]

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_STABLE_AFTER = 30.0  # a worker that served this long resets its slot's backoff
_KILL_GRACE = 10.0  # beyond shutdown_timeout, for the app's cleanup, before SIGKILL
_STARTUP_EXIT = 3
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def startup_error(exc: BaseException) -> IssuerError:
    """The one-line error for an exception raised by the application's start-up."""
    if isinstance(exc, IssuerError):
        return exc
    text = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return ServeError(f"application start-up failed: {detail}", code="startup_failed")


async def run_worker(
    make_app: AppFactory,
    sock: socket.socket,
    *,
    ssl_context: ssl.SSLContext | None,
    limits: ServerLimits,
    ready: Callable[[], None],
) -> None:
    """Build the app, serve ``sock`` until SIGTERM/SIGINT, then stop gracefully; ``ready()`` once serving.

    If ``make_app()`` or the app's start-up raises, the app's cleanup runs and the error
    propagates as its one-line form (:func:`startup_error`), chained to the original.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int, frame: object) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    # Plain handlers rather than loop.add_signal_handler: asyncio closes its wakeup pipe before
    # removing its handlers, and a signal in between prints a traceback to stderr.
    previous = {signum: signal.signal(signum, on_signal) for signum in _STOP_SIGNALS}
    # A forked worker starts with these blocked (see Supervisor._spawn); one sent early is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    try:
        try:
            runner = await start_app(make_app(), sock, ssl_context=ssl_context, limits=limits)
        except Exception as exc:
            log.debug("application start-up failed", exc_info=True)
            raise startup_error(exc) from exc
        try:
            if not stop.is_set():  # a signal during start-up: stop without ever saying "listening"
                ready()
            await stop.wait()
            log.info("stopping: letting in-flight requests finish (up to %gs)", limits.shutdown_timeout)
        finally:
            await runner.cleanup()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass(slots=True)
class _Child:
    pid: int
    slot: int
    started: float
    ready: bool = False
    error: str | None = None
    error_code: str | None = None


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
        socket_for_worker: Callable[[], socket.socket] | None = None,
    ) -> None:
        self._make_app = make_app
        self._sock = sock
        self._socket_for_worker = socket_for_worker
        self._ssl_context = ssl_context
        self._limits = limits
        self._workers = workers
        self._on_ready = on_ready
        self._children: dict[int, _Child] = {}
        self._restarts: dict[int, float] = {}  # slot -> when
        self._failures: dict[int, int] = {}  # slot -> consecutive unexpected exits
        self._signals: list[int] = []
        self._lines = b""
        self._serving = False
        self._ready_r, self._ready_w = os.pipe()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._ready_r, self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

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
            for fd in (self._ready_r, self._ready_w, self._wake_r, self._wake_w):
                os.close(fd)

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
            timeout = max(0.0, min(self._restarts.values()) - now) if self._restarts else None
            for child, status in self._pump(timeout):
                self._schedule_restart(child, status)

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
            select.select([self._ready_r, self._wake_r], [], [], timeout)
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
                exited.append((child, status))
        if exited:
            self._read_messages([child for child, _ in exited])  # an error line written just before exiting
        return exited

    def _read_messages(self, exited: list[_Child] | None = None) -> None:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._ready_r, 4096):
                self._lines += chunk
        *lines, self._lines = self._lines.split(b"\n")
        for line in lines:
            pid_text, _, rest = line.decode("utf-8", "replace").partition(" ")
            known = [*self._children.values(), *(exited or [])]
            child = next((c for c in known if str(c.pid) == pid_text), None)
            if child is None:
                continue
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
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            self._child_main()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self._children[pid] = _Child(pid=pid, slot=slot, started=time.monotonic())

    def _child_main(self) -> NoReturn:
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for signum in _STOP_SIGNALS:
                # What run_worker restores when it is done: a late SIGTERM must not kill a worker mid-exit.
                signal.signal(signum, signal.SIG_IGN)
            for fd in (self._ready_r, self._wake_r, self._wake_w):
                os.close(fd)
            serving = False

            def ready() -> None:
                nonlocal serving
                serving = True
                self._tell("ready")

            try:
                # A listening socket of its own (SO_REUSEPORT) where the parent only reserved the port:
                # the kernel then spreads connections evenly; one shared socket lets the first worker
                # to wake accept a whole burst of keep-alive connections.
                sock = self._socket_for_worker() if self._socket_for_worker is not None else self._sock
                asyncio.run(
                    run_worker(self._make_app, sock, ssl_context=self._ssl_context, limits=self._limits, ready=ready)
                )
                status = 0
            except IssuerError as exc:
                if serving:
                    raise
                self._tell(f"error {exc.code} {' '.join(exc.detail.split())[:1000]}")
                status = _STARTUP_EXIT
        except BaseException:
            log.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    def _tell(self, message: str) -> None:
        os.write(self._ready_w, f"{os.getpid()} {message}\n".encode())


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"
