"""aiohttp's HTTP/1.1 protocol with the issuer's rules: problem+json for protocol errors, timeouts, a connection cap.

The hooks, and why each is the narrow one:

* :class:`IssuerRunner` is an ``AppRunner`` overriding ``_make_server``, the abstract
  hook of ``BaseRunner`` every runner implements: ``AppRunner``'s own version still runs
  the application's start-up, and the ``request_handler``/``request_factory`` of the
  server it returns (public attributes of ``web.Server``) are served through
  :class:`_Server`, whose ``__call__`` is the protocol factory asyncio calls per connection.
* :class:`_Protocol` subclasses ``web_protocol.RequestHandler``: it overrides
  ``handle_error`` (public; aiohttp calls it for every request its parser rejects) and
  wraps ``connection_made``/``data_received``. The header timer reads ``_waiter`` and
  ``_messages``, exactly what aiohttp's own keep-alive check reads; the fix for a body
  cut short by a framing error also reads ``_current_request`` and ``_ErrInfo``.
* The listening side is :class:`~issuer.http.server_site.SocketSite` (one accept per turn of
  the loop, the TLS handshake bounded), a ``BaseSite`` like aiohttp's ``SockSite``;
  :func:`~issuer.http.server_site.start_app` puts the two together.

Behaviour that depends on these is pinned by ``tests/integration/test_http_server*.py``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, BadStatusLine, InvalidHeader, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from issuer.http.problems import problem
from issuer.http.server_config import ServerLimits

__all__ = ["PROTOCOL_REFUSALS", "IssuerRunner", "ProtocolRefusals"]

log = logging.getLogger("issuer.http.server")

_CAP_WARNING_INTERVAL = 10.0
_BAD_REQUEST = "The request is not valid HTTP/1.1 and was not processed."
_DETAILS: tuple[tuple[type[BaseException], str], ...] = (
    (BadHttpMethod, "The request line does not start with a valid HTTP method."),
    (BadStatusLine, "The request line is malformed."),
    (InvalidHeader, "A request header is malformed."),
)


class ProtocolRefusals(Protocol):
    """Told about every request the HTTP parser refused (an application's audit trail); must not block or raise."""

    def refused(self, *, request_id: str, remote: str | None, status: int, code: str, reason: str) -> None: ...


# An application that wants its parser refusals audited puts its sink here during start-up.
PROTOCOL_REFUSALS = web.AppKey("protocol_refusals", ProtocolRefusals)


class _Server(web.Server):
    """``web.Server`` that builds :class:`_Protocol` connections and counts them against the cap."""

    def __init__(
        self,
        template: web.Server,
        *,
        limits: ServerLimits,
        handler_kwargs: dict[str, Any],
        refusals: ProtocolRefusals | None = None,
    ) -> None:
        super().__init__(
            template.request_handler,
            request_factory=template.request_factory,
            handler_cancellation=template.handler_cancellation,
            **handler_kwargs,
        )
        self.limits = limits
        self.refusals = refusals
        self._loop_ref = asyncio.get_running_loop()
        self._handler_kwargs = handler_kwargs
        self._last_cap_warning = -_CAP_WARNING_INTERVAL
        self.open: set[RequestHandler] = set()
        self.on_open_changed: Callable[[], None] | None = None

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop_ref, **self._handler_kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.open.add(handler)
        if self.on_open_changed is not None:
            self.on_open_changed()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.open.discard(handler)
        if self.on_open_changed is not None:
            self.on_open_changed()

    def at_capacity(self) -> bool:
        if len(self.connections) < self.limits.max_connections:
            return False
        now = time.monotonic()
        if now - self._last_cap_warning >= _CAP_WARNING_INTERVAL:
            self._last_cap_warning = now
            log.warning("connection limit reached (%d); refusing new connections", self.limits.max_connections)
        return True


class _Protocol(RequestHandler):
    """One HTTP connection: aiohttp's handler plus the header timer and problem+json protocol errors."""

    def __init__(self, manager: _Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager
        self._limits = manager.limits
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._server.at_capacity():
            # Closing before aiohttp registers the connection keeps the cap a hard bound on sockets.
            transport.close()
            return
        super().connection_made(transport)
        # The first request head is timed from accept (Go's ReadHeaderTimeout does the same).
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._head_timer is None and self._awaiting_head():
            self._arm_head_timer()
        in_flight = self._current_request
        super().data_received(data)
        if self._messages:
            # A head was parsed (or rejected: then the error answer closes the connection).
            self._cancel_head_timer()
            if isinstance(self._messages[-1][0], _ErrInfo):
                self._fail_interrupted_body(in_flight)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A problem+json answer that echoes nothing of the request; the connection is closed after it."""
        if request.writer.output_size > 0:
            # Same contract as aiohttp: a response is on the wire already, so the connection is broken.
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        status, code, detail = self._classify(status, exc)
        request_id = secrets.token_hex(8)
        if status >= 500:
            log.error("unhandled error serving %s [%s]", request.remote, request_id, exc_info=exc)
        else:
            log.info(
                "rejected a request from %s: %s (%d %s) [%s]",
                request.remote,
                type(exc).__name__ if exc is not None else "unknown",
                status,
                code,
                request_id,
                extra={"event": "refused", "code": code, "status": status, "remote": request.remote},
            )
        if self._server.refusals is not None and status < 500:
            reason = f"{type(exc).__name__ if exc is not None else 'unknown'}: {detail}"
            try:
                self._server.refusals.refused(
                    request_id=request_id, remote=request.remote, status=status, code=code, reason=reason
                )
            except Exception:  # the answer never depends on its audit row
                log.exception("could not hand a protocol refusal to the audit trail [%s]", request_id)
        response = problem(status, code=code, title=HTTPStatus(status).phrase, detail=detail, request_id=request_id)
        response.force_close()
        return response

    def _classify(self, status: int, exc: BaseException | None) -> tuple[int, str, str]:
        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            if limit == self._limits.max_request_line:
                return 414, "request_line_too_long", "The request line is longer than this service accepts."
            return 431, "request_header_too_large", "A request header is longer than this service accepts."
        if isinstance(exc, BadHttpMessage) and exc.message.startswith("Too many headers"):
            return 431, "request_header_too_large", "The request has more headers than this service accepts."
        if isinstance(exc, BadHttpMessage) or status == 400:
            detail = next((text for kind, text in _DETAILS if isinstance(exc, kind)), _BAD_REQUEST)
            return 400, "bad_request", detail
        if status == 500:
            return 500, "internal_error", "The service failed to handle the request; the request id is in its log."
        return status, f"http_{status}", HTTPStatus(status).description

    def _awaiting_head(self) -> bool:
        # Idle between requests with nothing parsed: the same test aiohttp's keep-alive timer uses.
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = asyncio.get_running_loop().call_later(self._limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None:
            return
        if self._awaiting_head():
            log.debug("closing a connection from %s: no complete request head in time", _host(self.peername))
            self.force_close()

    def _fail_interrupted_body(self, in_flight: BaseRequest | None) -> None:
        """The parser gave up in the middle of a request body (e.g. a bad chunk size after a good one).

        aiohttp's C parser then leaves that body open: the handler would wait for bytes that
        never come, and an unsolicited second 400 would follow its answer. A request still
        queued is dropped, so the queued error answers for it. A request already in flight
        owns its response: its body fails with a 400 that the handler's ``read()`` raises (the
        app's error middleware answers it), the queued error is dropped, and the connection
        closes after that one response.
        """
        if len(self._messages) > 1:
            if not self._messages[-2][1].is_eof():
                del self._messages[-2]
            return
        if in_flight is None or in_flight.content.is_eof():
            return  # that body was complete: the error is about a new request head, answered in turn
        err, _ = self._messages.pop()
        assert isinstance(err, _ErrInfo)
        log.info("rejected a request body from %s: %s", _host(self.peername), type(err.exc).__name__)
        in_flight.content.set_exception(web.HTTPBadRequest(text="The request body framing is invalid."))
        in_flight.content.feed_eof()
        self.close()


def _host(peername: object) -> str:
    return str(peername[0]) if isinstance(peername, tuple) else str(peername)


class IssuerRunner(web.AppRunner):
    """``AppRunner`` serving through :class:`_Server` with ``limits``; ``cleanup()`` is the graceful stop."""

    def __init__(self, app: web.Application, *, limits: ServerLimits) -> None:
        self._limits = limits
        self._handler_kwargs: dict[str, Any] = {
            "keepalive_timeout": limits.keepalive_timeout,
            "max_line_size": limits.max_request_line,
            "max_field_size": limits.max_header_field,
            "max_headers": limits.max_headers,
            # The app's middleware writes the access log; aiohttp's would be a second line per request.
            "access_log": None,
        }
        super().__init__(app, shutdown_timeout=limits.shutdown_timeout, **self._handler_kwargs)

    async def _make_server(self) -> web.Server:
        template = await super()._make_server()  # runs the application's start-up (cleanup_ctx)
        return _Server(
            template,
            limits=self._limits,
            handler_kwargs=self._handler_kwargs,
            refusals=self.app.get(PROTOCOL_REFUSALS),
        )

    def open_connections(self) -> int:
        """Connections open now (0 before ``setup()`` and after ``cleanup()``)."""
        return len(self.server.open) if isinstance(self.server, _Server) else 0

    def on_open_connections_changed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time a connection opens or closes, once ``setup()`` is done."""
        assert isinstance(self.server, _Server)
        self.server.on_open_changed = callback
