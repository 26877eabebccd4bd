"""Load shedding: a bounded number of issuance requests in flight per process, and 503 at once beyond it.

Issuing is the expensive work (a signature, outbound AWS calls, a transaction holding a
pooled connection). When more of it arrives than a process can do, queueing only makes
every request late, holds sockets and memory, and times clients out after the work was
done. :class:`InFlightLimit` instead answers the request that would exceed ``limit``
with ``503 overloaded`` and ``Retry-After`` before its body is read, so a client (or the
load balancer) tries again shortly or elsewhere, and the requests already admitted
finish on time.

Only issuance routes (``POST /v1/issue/*``, ``POST /v1/renew``) are counted and shed:
health, readiness, metrics and the trust-bundle/CRL reads are never refused here. A shed
request never reached the pipeline, so it leaves no audit row (writing one is the load
being shed); it is in the access log and in ``issuer_http_shed_total``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from issuer.errors import IssuerError
from issuer.observability.seams import LoadObserver, NullObserver

__all__ = ["ISSUANCE_PREFIXES", "InFlightLimit", "Overloaded", "route_template"]

log = logging.getLogger("issuer.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ISSUANCE_PREFIXES = ("/v1/issue/", "/v1/renew")
_REPORT_EVERY = 10.0  # seconds between log lines about shedding: under overload, logging is load too


class Overloaded(IssuerError):
    """503: this process has as much issuance work in flight as it may; try again shortly."""

    status_hint = 503
    default_code = "overloaded"
    title = "Overloaded"


def route_template(request: web.Request) -> str:
    """The route's path template (``/v1/issue/token``), or ``unmatched``: a label of bounded cardinality."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class InFlightLimit:
    """At most ``limit`` issuance requests in flight in this process; see the module docstring.

    ``observer`` hears the in-flight count and each shed request; ``retry_after`` is the
    seconds sent in ``Retry-After``. Raises ``ValueError`` for a ``limit`` below 1.
    """

    def __init__(
        self,
        limit: int,
        *,
        observer: LoadObserver | None = None,
        retry_after: int = 1,
        prefixes: Sequence[str] = ISSUANCE_PREFIXES,
    ) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1, not {limit}")
        self.limit = limit
        self._observer = observer or NullObserver()
        self._retry_after = retry_after
        self._prefixes = tuple(prefixes)
        self._in_flight = 0
        self._shed_unreported = 0
        self._reported_at = -_REPORT_EVERY

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def guards(self, request: web.Request) -> bool:
        """Whether ``request`` counts against the limit (an issuance route that exists)."""
        return request.match_info.route.resource is not None and request.path.startswith(self._prefixes)

    def middleware(self) -> Middleware:
        """The aiohttp middleware; put it inside the problem+json middleware, which renders :class:`Overloaded`."""

        @web.middleware
        async def shed_overload(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not self.guards(request):
                return await handler(request)
            if self._in_flight >= self.limit:
                self._shed(request)
            self._enter()
            try:
                return await handler(request)
            finally:
                self._leave()

        return shed_overload

    def _shed(self, request: web.Request) -> None:
        self._shed_unreported += 1
        now = time.monotonic()
        if now - self._reported_at >= _REPORT_EVERY:
            log.warning(
                "overloaded: refused %d issuance request(s) since the last report (limit %d in flight)",
                self._shed_unreported,
                self.limit,
            )
            self._shed_unreported, self._reported_at = 0, now
        self._observer.shed(route_template(request))
        raise Overloaded(
            "The service is busy; try again shortly.",
            reason=f"{self._in_flight} requests in flight (limit {self.limit})",
            retry_after=self._retry_after,
        )

    def _enter(self) -> None:
        self._in_flight += 1
        self._observer.in_flight(self._in_flight)

    def _leave(self) -> None:
        self._in_flight -= 1
        self._observer.in_flight(self._in_flight)
