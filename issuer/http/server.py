"""How ``issuer serve`` serves the aiohttp application: :func:`serve` and its limits.

``serve(make_app, host=..., port=...)`` binds the socket, runs the app (in-process, or in
N forked workers sharing the socket), says "listening" only once the app's start-up has
completed, and stops gracefully on SIGTERM/SIGINT. Errors that stop it are one line
(:class:`ServeError` or the app's own :class:`~issuer.errors.IssuerError`), never a traceback.

Requests aiohttp's parser rejects (bad request line, method or header, conflicting
``Content-Length``/``Transfer-Encoding``, a bad chunk size, an oversized line or too many
headers) get ``application/problem+json`` like every other error, with a fresh request id
(also in ``X-Request-ID``), a stable ``code`` (``bad_request`` 400, ``request_line_too_long``
414, ``request_header_too_large`` 431), nothing of the request echoed, and the connection
closed. Each is one INFO log line naming the client address and the error class.

Limits (:class:`ServerLimits`), what each protects against, and its default:

``header_timeout`` (10 s)
    A request head (request line and headers) must be complete this long after the
    connection was accepted, or after the first byte of a later request on it; else the
    connection is closed without an answer. Also bounds the TLS handshake. Protects
    against slowloris: clients holding connections open by trickling header bytes.
``keepalive_timeout`` (15 s)
    An idle keep-alive connection (no request in progress, none started) is closed this
    long after its last response. Keep it above the load balancer's idle timeout if the
    balancer reuses connections (ALB: 60 s by default), so the balancer closes first.
``body_timeout`` (30 s)
    Not enforced here: the handlers read bodies with this timeout (408 ``body_timeout``).
``shutdown_timeout`` (30 s)
    On SIGTERM, in-flight requests get this long to finish before they are cancelled;
    then the app's cleanup runs (pools closed) and the process exits 0. The parent kills
    workers still alive 10 s after that.
``max_connections`` (1000 per process)
    Connections beyond this are closed at accept. Protects the file-descriptor limit
    (keep it below ``ulimit -n`` minus the database pool) and memory.
``max_request_line`` (4096 bytes), ``max_header_field`` (8190 bytes), ``max_headers`` (100)
    Larger request lines get 414, larger header fields or more headers 431. They must
    differ: aiohttp reports both overflows alike and only the limit tells them apart.
``worker_timeout`` (30 s; at least 2 s)
    With workers: a worker whose event loop has not reported to the supervisor for this
    long (stuck, or stopped) is killed and replaced. Protects the connections and requests
    such a worker holds; new connections never wait for it (they go to the others).

Workers: with ``workers=N > 1`` the parent binds the socket and forks N workers that each run
``make_app()`` and their own event loop, all accepting from that one socket, one connection per
turn of the loop, so a stopped, stuck, dead or starting worker never holds a new connection. The
parent forwards SIGTERM/SIGINT, restarts a worker that dies (backoff 0.5 s doubling to 30 s, reset
after 30 s of service), kills one that stops reporting (``worker_timeout``), and its workers stop
when it dies, however it dies. :mod:`issuer.http.server_workers` says why this design.
``make_app`` is always called in the process that serves it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from aiohttp import web

from issuer.http.server_config import ServeError, ServerLimits, bind_socket, listen_url
from issuer.http.server_protocol import IssuerRunner
from issuer.http.server_site import start_app
from issuer.http.server_tls import peer_certificate, tls_context
from issuer.http.server_worker import run_worker
from issuer.http.server_workers import Supervisor

__all__ = [
    "IssuerRunner",
    "ServeError",
    "ServerLimits",
    "bind_socket",
    "peer_certificate",
    "serve",
    "start_app",
    "tls_context",
]

log = logging.getLogger("issuer.http.server")


def serve(
    make_app: Callable[[], web.Application],
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    workers: int = 1,
    limits: ServerLimits | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve ``make_app()`` on ``host:port`` until SIGTERM or SIGINT, then stop gracefully and return.

    ``on_listening(url)`` (and the log line ``listening on <url>``) comes only once the
    socket is bound and the app's start-up has completed in every worker; ``url`` carries
    the real port when ``port`` is 0. Call from the main thread (signal handling).

    Raises :class:`ServeError` — ``listen_failed`` (port in use, permission denied, unknown
    host), ``startup_failed`` (the app's start-up raised something other than an
    ``IssuerError``, which propagates as itself), ``worker_failed`` (a worker died before it
    was ready) — with a one-line ``detail``; ``ValueError`` if ``workers`` < 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    limits = limits or ServerLimits()
    sock = bind_socket(host, port)  # with workers, the one socket they all accept from
    url = listen_url(sock, tls=ssl_context is not None)

    def ready() -> None:
        log.info("listening on %s%s", url, f" ({workers} workers)" if workers > 1 else "")
        if on_listening is not None:
            on_listening(url)

    try:
        if workers == 1:
            asyncio.run(run_worker(make_app, sock, ssl_context=ssl_context, limits=limits, ready=ready))
        else:
            Supervisor(
                make_app,
                sock,
                ssl_context=ssl_context,
                limits=limits,
                workers=workers,
                on_ready=ready,
            ).run()
    finally:
        sock.close()
    log.info("stopped")
