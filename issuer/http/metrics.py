"""``GET /metrics`` and the middleware that times every HTTP answer.

The application's :class:`~issuer.observability.metrics.Metrics` sits under the
:data:`METRICS` key. The endpoint answers in the Prometheus text format, or OpenMetrics
when the scraper asks for it; it is never shed, needs no authentication (keep it
off the public listener or filter it at the load balancer if that matters), and never
fails because the database is down (the one database-derived gauge keeps its last value).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from issuer.http.overload import route_template
from issuer.observability.metrics import Metrics

__all__ = ["METRICS", "metrics_endpoint", "request_metrics"]

METRICS = web.AppKey("metrics", Metrics)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CLIENT_CLOSED = 499  # nginx's convention, as the access log uses it


def request_metrics(metrics: Metrics) -> Middleware:
    """The outermost middleware: counts and times every answer by route template and status."""

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = _CLIENT_CLOSED
            raise
        finally:
            metrics.answered(route_template(request), status, time.perf_counter() - started)

    return observe


async def metrics_endpoint(request: web.Request) -> web.Response:
    """The metrics of this process, or of every worker in multi-process mode."""
    body, content_type = await request.app[METRICS].render(request.headers.get("Accept"))
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    return response
