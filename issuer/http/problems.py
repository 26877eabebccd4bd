"""The error middleware: every error becomes ``application/problem+json`` (RFC 9457).

Deliberate errors (:class:`IssuerError`, :class:`CAError`) keep their status and
``code``; a database outage is a 503 with ``Retry-After``; aiohttp's own HTTP errors
get a code of their own; anything else is a bug and becomes a 500 that leaks
nothing. Every response carries ``X-Request-ID`` — always an id of ours; a caller's
own ``X-Request-ID`` is kept only as ``client_request_id`` in the logs.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ca.errors import CAError
from issuer.errors import IssuerError
from issuer.faults import as_service_error
from issuer.http.client_address import remote_address
from issuer.http.keys import CLIENT_REQUEST_ID, PROBLEM_CODE, REQUEST_ID, WIRE_AUDIT
from issuer.logs import client_request_id_var, request_id_var

log = logging.getLogger("issuer.http")
access_log = logging.getLogger("issuer.access")

PROBLEM_TYPE = "https://github.com/aws-machine-issuer/docs/problems#"
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def problem(
    status: int, *, code: str, title: str, detail: str, request_id: str, retry_after: int | None = None
) -> web.Response:
    body = {
        "type": PROBLEM_TYPE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    headers = {"X-Request-ID": request_id}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    response = web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json", headers=headers
    )
    # The access log line carries the code, so log-based metrics can count refusals by reason.
    response[PROBLEM_CODE] = code
    return response


def new_request_id() -> str:
    return secrets.token_hex(8)


def client_request_id(request: web.Request) -> str | None:
    """The caller's (or load balancer's) X-Request-ID when it is sane, so logs can be joined up."""
    given = request.headers.get("X-Request-ID", "")
    return given if _CLIENT_REQUEST_ID.fullmatch(given) else None


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = new_request_id()
    client_id = client_request_id(request)
    token = request_id_var.set(request_id)
    client_token = client_request_id_var.set(client_id)
    request[REQUEST_ID] = request_id
    if client_id is not None:
        request[CLIENT_REQUEST_ID] = client_id
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
        response.headers["X-Request-ID"] = request_id
    except (IssuerError, CAError) as exc:
        retry_after = getattr(exc, "retry_after", None)
        response = problem(
            exc.status_hint,
            code=exc.code,
            title=getattr(exc, "title", "Request refused"),
            detail=exc.detail,
            request_id=request_id,
            retry_after=retry_after,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        detail = exc.text or exc.reason
        if exc.status == 413:
            detail = "The request body is larger than this service accepts."
        audit = request.app.get(WIRE_AUDIT)
        if exc.status == 405 and audit is not None:
            # The router refused it before any handler: an issuance path still gets its audit row.

            await audit.method_not_allowed(request, request_id=request_id, remote=remote_address(request))
        response = problem(exc.status, code=code, title=exc.reason, detail=detail, request_id=request_id)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    except Exception as exc:
        error = as_service_error(exc)
        if isinstance(error, IssuerError):
            log.warning("%s on %s %s: %s", error.code, request.method, request.path, error.reason)
            response = problem(
                error.status_hint,
                code=error.code,
                title=error.title,
                detail=error.detail,
                request_id=request_id,
                retry_after=error.retry_after,
            )
        else:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = problem(
                500,
                code="internal_error",
                title="Internal error",
                detail="The service failed to handle the request; the request id is in its log.",
                request_id=request_id,
            )
    extra: dict[str, object] = {
        "method": request.method,
        "path": request.path,
        "status": response.status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "remote": request.remote,
    }
    problem_code = response.get(PROBLEM_CODE)
    if problem_code is not None:
        extra["code"] = problem_code
    access_log.info("%s %s %s", request.method, request.path, response.status, extra=extra)
    request_id_var.reset(token)
    client_request_id_var.reset(client_token)
    return response
