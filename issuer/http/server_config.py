"""What ``issuer serve`` listens on and with which limits: :class:`ServerLimits`, :class:`ServeError`, the socket.

The listening socket is bound here, once, before anything else happens, so that a
port in use, a permission problem or an unknown host is one line naming
``host:port`` and the operating system's reason, and so that worker processes can
share it after ``fork``. See :mod:`issuer.http.server` for what each limit protects.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, fields

from issuer.errors import IssuerError

__all__ = ["HEARTBEAT_INTERVAL", "LISTEN_BACKLOG", "ServeError", "ServerLimits", "bind_socket", "listen_url"]

# The kernel caps this at net.core.somaxconn; a deep queue absorbs bursts behind a load balancer.
LISTEN_BACKLOG = 1024
# How often a forked worker's event loop tells its supervisor it still runs (see ``worker_timeout``).
HEARTBEAT_INTERVAL = 1.0


class ServeError(IssuerError):
    """``issuer serve`` could not start (or keep) serving; ``detail`` is one line for the operator.

    Codes: ``listen_failed`` (bind/listen), ``tls_files_invalid`` (certificate, key or client CA),
    ``startup_failed`` (the application's start-up raised), ``worker_failed`` (a worker process
    died before it was ready). Never sent to a client.
    """

    default_code = "listen_failed"
    title = "Cannot serve"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Connection-level limits of the HTTP server (seconds, bytes, counts); see :mod:`issuer.http.server`.

    Raises ``ValueError`` for a non-positive or non-finite value.
    """

    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    body_timeout: float = 30.0
    shutdown_timeout: float = 30.0
    max_connections: int = 1000
    max_request_line: int = 4096
    max_header_field: int = 8190
    max_headers: int = 100
    worker_timeout: float = 30.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{field.name} must be a number, not {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{field.name} must be a positive number, not {value!r}")
        if self.max_request_line == self.max_header_field:
            # aiohttp reports both overflows as LineTooLong and only the limit tells them apart (414 vs 431).
            raise ValueError("max_request_line and max_header_field must differ")
        if self.worker_timeout < 2 * HEARTBEAT_INTERVAL:
            # Shorter, and a worker would be killed between two heartbeats of a loop that runs fine.
            shortest = 2 * HEARTBEAT_INTERVAL
            raise ValueError(f"worker_timeout must be at least {shortest:g}s, not {self.worker_timeout!r}")


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to the first address of ``host`` and listening (SO_REUSEADDR; port 0 picks one).

    Raises :class:`ServeError` (``listen_failed``) naming ``host:port`` and the OS reason
    (unknown host, address in use, permission denied, address not on this machine).
    """
    where = _host_port(host, port)
    if not 0 <= port <= 65535:
        raise ServeError(f"cannot listen on {where}: port must be between 0 and 65535")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {where}: cannot resolve the host ({exc.strerror})") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Restarting right after a stop must not wait out TIME_WAIT; it does not allow two live listeners.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
    sock.set_inheritable(False)
    return sock


def listen_url(sock: socket.socket, *, tls: bool) -> str:
    """``http(s)://host:port`` of a bound socket, with the port the kernel chose for port 0."""
    host, port = sock.getsockname()[:2]
    return f"{'https' if tls else 'http'}://{_host_port(host, port)}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host or '0.0.0.0'}:{port}"  # noqa: S104 - naming, not binding
