"""Where a serving process takes its connections: :class:`SocketSite`, one accept per turn of the loop.

With ``issuer serve --workers N`` every worker accepts from the one listening socket the
supervisor bound (see :mod:`issuer.http.server_workers` for why one shared socket). asyncio's
own server (``loop.create_server``) accepts up to ``backlog`` connections each time the socket
is readable (CPython's ``_accept_connection``), so on a shared socket the first worker to wake
takes a whole burst, and a keep-alive connection stays where it lands. Here a worker accepts
one connection per turn of its event loop, and, given a :class:`~issuer.http.server_balance.Seat`,
first leaves it for a few milliseconds to a live worker with fewer connections: workers take
turns, a stopped or stuck one takes none and the others take them all. The price is the
thundering herd: every new connection wakes every idle worker, and all but one find nothing to
accept (one cheap syscall each).

Each accepted socket becomes an aiohttp connection through ``loop.connect_accepted_socket``
(public asyncio), with the TLS handshake bounded by ``header_timeout`` (asyncio's default is
60 s). Running out of file descriptors or memory pauses accepting for a second, as asyncio
does; other workers take the connections meanwhile.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time

from aiohttp import web

from issuer.http.server_balance import WAIT, Seat
from issuer.http.server_config import HEARTBEAT_INTERVAL, LISTEN_BACKLOG, ServerLimits
from issuer.http.server_protocol import IssuerRunner

__all__ = ["SocketSite", "start_app"]

log = logging.getLogger("issuer.http.server")

_PAUSE_ON_EXHAUSTION = 1.0  # asyncio's ACCEPT_RETRY_DELAY
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class SocketSite(web.BaseSite):
    """An aiohttp site serving ``runner`` on the listening ``sock``; ``stop()`` closes this process's copy.

    With ``seat``, it reports its open connections there and defers to less busy workers.
    """

    __slots__ = (
        "_handshake_timeout",
        "_loop",
        "_pending",
        "_resume_timer",
        "_runner_ref",
        "_seat",
        "_sock",
        "_stamp_timer",
    )

    def __init__(
        self,
        runner: IssuerRunner,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
        seat: Seat | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
        self._runner_ref = runner
        self._sock = sock
        self._handshake_timeout = handshake_timeout
        self._seat = seat
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[None]] = set()  # connections being set up (the TLS handshake)
        self._resume_timer: asyncio.TimerHandle | None = None
        self._stamp_timer: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"{'https' if self._ssl_context else 'http'}://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        self._loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        if self._seat is not None:
            self._runner_ref.on_open_connections_changed(self._report)
            self._stamp()
        self._resume()

    async def stop(self) -> None:
        """Stop accepting and close the socket here (other processes sharing it keep accepting)."""
        if self._loop is not None:
            self._pause()
            for timer in (self._resume_timer, self._stamp_timer):
                if timer is not None:
                    timer.cancel()
            self._resume_timer = self._stamp_timer = None
            if self._seat is not None:
                self._seat.vacate()
            for task in list(self._pending):
                task.cancel()  # a handshake not finished: as if the connection had come after the stop
        self._sock.close()
        await super().stop()

    def _resume(self) -> None:
        assert self._loop is not None
        self._resume_timer = None
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _pause(self) -> None:
        assert self._loop is not None
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())

    def _on_readable(self) -> None:
        assert self._loop is not None
        if self._seat is not None and self._seat.should_wait(self._open(), now=time.monotonic()):
            self._pause()  # a less busy worker may take it meanwhile
            self._resume_timer = self._loop.call_later(WAIT, self._accept_after_waiting)
            return
        self._accept()

    def _accept_after_waiting(self) -> None:
        self._resume_timer = None
        if self._accept():
            self._resume()

    def _accept(self) -> bool:
        """Accept one connection if there is one; False if accepting is paused (out of descriptors)."""
        assert self._loop is not None
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return True  # another worker took it, or the client gave up while it waited
        except OSError as exc:
            if exc.errno not in _EXHAUSTED:
                raise
            log.warning("cannot accept connections (%s); pausing for %gs", exc.strerror, _PAUSE_ON_EXHAUSTION)
            self._pause()
            self._resume_timer = self._loop.call_later(_PAUSE_ON_EXHAUSTION, self._resume)
            return False
        conn.setblocking(False)
        task = self._loop.create_task(self._connect(conn))
        self._pending.add(task)
        task.add_done_callback(self._set_up)
        self._report()
        return True

    def _set_up(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        self._report()

    def _open(self) -> int:
        return len(self._pending) + self._runner_ref.open_connections()

    def _report(self) -> None:
        if self._seat is not None:
            self._seat.report(self._open(), now=time.monotonic())

    def _stamp(self) -> None:
        # The heartbeat that keeps this worker in the others' comparison while its loop runs.
        assert self._loop is not None
        self._report()
        self._stamp_timer = self._loop.call_later(HEARTBEAT_INTERVAL, self._stamp)

    async def _connect(self, conn: socket.socket) -> None:
        assert self._loop is not None
        server = self._runner_ref.server
        assert server is not None
        try:
            await self._loop.connect_accepted_socket(
                server,
                conn,
                ssl=self._ssl_context,
                ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as exc:  # the client's doing (reset, failed or slow handshake), as asyncio treats it
            conn.close()
            log.debug("connection not set up: %s: %s", type(exc).__name__, exc)


async def start_app(
    app: web.Application,
    sock: socket.socket,
    *,
    ssl_context: ssl.SSLContext | None,
    limits: ServerLimits,
    seat: Seat | None = None,
) -> IssuerRunner:
    """Run ``app``'s start-up and serve it on the listening ``sock``; returns the runner.

    ``seat``: this worker's place in the workers' :class:`~issuer.http.server_balance.AcceptBalance`.

    The caller stops serving with ``await runner.cleanup()`` (stop accepting, let in-flight
    requests finish within ``limits.shutdown_timeout``, run the app's cleanup). If start-up
    raises, the app's cleanup has run and the exception propagates.
    """
    runner = IssuerRunner(app, limits=limits)
    try:
        await runner.setup()
        site = SocketSite(runner, sock, ssl_context=ssl_context, handshake_timeout=limits.header_timeout, seat=seat)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
