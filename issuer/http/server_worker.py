"""One serving process: :func:`run_worker`, and a forked worker's two links to its supervisor.

``run_worker`` builds the application (``make_app()``, in the process that serves it: the app
opens its own database pool), serves the listening socket and stops gracefully on SIGTERM or
SIGINT. ``serve()`` runs it in-process with one worker; the supervisor
(:mod:`issuer.http.server_workers`) runs it in each forked worker, with two links:

* the **report pipe**, worker to supervisor, one line per event (``<pid> ready``, ``<pid> error
  <code> <detail>``, and ``<pid> alive`` every :data:`HEARTBEAT_INTERVAL` from the running
  event loop, the heartbeat the supervisor's watchdog listens for). Lines are short enough for
  the kernel to write atomically. The pipe is non-blocking: a heartbeat that finds it full
  (a supervisor stopped for many minutes) is dropped rather than stopping the worker's loop.
* the **lifeline**, supervisor to worker: a pipe only the supervisor can write to and never
  does. It reads end-of-file when the supervisor is gone, however it went (``kill -9``, the OOM
  killer), and :func:`watch_lifeline`, a thread of the worker, then stops the worker gracefully
  and, should that take longer than ``shutdown_timeout`` plus a grace, exits it outright. No
  worker outlives its supervisor to keep serving old code beside a restarted one. A thread
  rather than the event loop, so that a worker whose loop is stuck still goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import select
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable

from aiohttp import web

from issuer.errors import IssuerError
from issuer.http.server_balance import Seat
from issuer.http.server_config import HEARTBEAT_INTERVAL, ServeError, ServerLimits
from issuer.http.server_site import start_app

__all__ = ["STOP_SIGNALS", "keep_beating", "run_worker", "send_line", "startup_error", "watch_lifeline"]

log = logging.getLogger("issuer.http.server")

AppFactory = Callable[[], web.Application]

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
_ORPHAN_EXIT = 4  # what a worker that had to be cut short after its supervisor died exits with


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
    seat: Seat | None = None,
) -> None:
    """Build the app, serve ``sock`` until SIGTERM/SIGINT, then stop gracefully; ``ready()`` once serving.

    ``ready`` runs in the event loop; ``seat`` is the worker's place in the workers'
    :class:`~issuer.http.server_balance.AcceptBalance`. If ``make_app()`` or the app's start-up raises, the app's
    cleanup runs and the error propagates as its one-line form (:func:`startup_error`), chained
    to the original.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int, frame: object) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    # Plain handlers rather than loop.add_signal_handler: asyncio closes its wakeup pipe before
    # removing its handlers, and a signal in between prints a traceback to stderr.
    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    # A forked worker starts with these blocked (see Supervisor._spawn); one sent early is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        try:
            runner = await start_app(make_app(), sock, ssl_context=ssl_context, limits=limits, seat=seat)
        except Exception as exc:
            log.debug("application start-up failed", exc_info=True)
            raise startup_error(exc) from exc
        # Everything built so far (modules, the app, the CA, SQLAlchemy's tables) lives as long as the
        # process: out of the collector's sight, a full collection walks only what requests made. Under
        # wrk a full collection over all of it paused a worker for 110-120 ms, the slowest answers of a run.
        gc.freeze()
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


def send_line(fd: int, message: str, *, patience: float) -> bool:
    """Write ``<pid> <message>`` to the report pipe, waiting up to ``patience`` s if it is full.

    False if it could not be written: still full, or the supervisor is gone (broken pipe).
    """
    line = f"{os.getpid()} {message}\n".encode()
    deadline = time.monotonic() + patience
    while True:
        try:
            os.write(fd, line)
            return True
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(InterruptedError):
                select.select([], [fd], [], min(remaining, 0.1))
        except OSError:
            return False


def keep_beating(beat: Callable[[], object]) -> None:
    """From now on, call ``beat()`` every :data:`HEARTBEAT_INTERVAL` from the running event loop."""
    loop = asyncio.get_running_loop()

    def tick() -> None:
        beat()
        loop.call_later(HEARTBEAT_INTERVAL, tick)

    loop.call_later(HEARTBEAT_INTERVAL, tick)


def watch_lifeline(fd: int, *, grace: float) -> threading.Thread:
    """Start the worker's thread that ends it once the supervisor is gone (the lifeline ``fd`` reads EOF).

    It sends the worker SIGTERM (the graceful stop of :func:`run_worker`) every second, since
    one sent during start-up may find the handler not yet installed, and ends the process with
    status 4 if it is still there ``grace`` seconds later.
    """

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 64):
                pass  # nothing is ever written; only end-of-file means anything
        log.warning("worker %d: the supervisor is gone; stopping", os.getpid())
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        log.error("worker %d: still running %gs after its supervisor died; exiting", os.getpid(), grace)
        logging.shutdown()
        os._exit(_ORPHAN_EXIT)

    thread = threading.Thread(target=watch, name="issuer-lifeline", daemon=True)
    thread.start()
    return thread
