"""The API Gateway REQUEST authorizer event: REST, and HTTP API with payload 1.0 or 2.0."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .errors import EventError
from .policy import Route, request_path_variants

__all__ = ["METHOD_ARN", "ApiRequest", "parse_event"]

METHOD_ARN: Final = re.compile(r"arn:[a-z-]+:execute-api:[a-z0-9-]+:\d{12}:[^/\s]+/[^/\s]+/[^/\s]+/\S*")
_MAX_PATH: Final = 8192


@dataclass(frozen=True)
class ApiRequest:
    route: Route  # the method and the route template
    request_path: str  # the path as API Gateway received it (REST ``path``, HTTP API ``rawPath``)
    request_paths: tuple[str, ...]  # its forms the policy is matched against
    cert_pem: str
    serial_text: str
    request_id: str


def parse_event(event: object) -> ApiRequest:
    """The route, request path and client certificate of a REQUEST authorizer event.

    Raises :class:`EventError` (``client_cert_missing`` when there is no certificate, e.g. a
    TOKEN authorizer or a domain without mutual TLS).
    """
    if not isinstance(event, dict):
        raise EventError("event is not a JSON object")
    context = event.get("requestContext")
    if not isinstance(context, dict):
        raise EventError("event has no requestContext (use a REQUEST authorizer)", code="client_cert_missing")
    http_api = event.get("version") == "2.0"
    holder = context.get("authentication" if http_api else "identity")
    cert = holder.get("clientCert") if isinstance(holder, dict) else None
    if cert is None:
        raise EventError("event carries no clientCert (is mutual TLS on?)", code="client_cert_missing")
    if not isinstance(cert, dict) or not isinstance(cert.get("clientCertPem"), str):
        raise EventError("clientCert.clientCertPem is not a string")
    if not isinstance(cert.get("serialNumber"), str):
        raise EventError("clientCert.serialNumber is not a string")
    if http_api:
        http = context.get("http")
        method = http.get("method") if isinstance(http, dict) else None
        route_key = event.get("routeKey")
        path = route_key.partition(" ")[2] if isinstance(route_key, str) and route_key != "$default" else route_key
        request_path = event.get("rawPath")
    else:
        method, path, request_path = event.get("httpMethod"), event.get("resource"), event.get("path")
        arn = event.get("methodArn")
        if not isinstance(arn, str) or not METHOD_ARN.fullmatch(arn):
            raise EventError("event has no execute-api methodArn")
    if not isinstance(method, str) or not re.fullmatch(r"[A-Z]+", method):
        raise EventError("event has no HTTP method")
    if not isinstance(path, str) or not (path == "$default" or path.startswith("/")):
        raise EventError("event has no route (resource or routeKey)")
    # The policy also matches the path requested, so a greedy route cannot hide it: no path, no decision.
    if not isinstance(request_path, str) or not request_path.startswith("/") or len(request_path) > _MAX_PATH:
        raise EventError("event has no request path (path or rawPath)")
    stage = context.get("stage")
    paths = request_path_variants(request_path, stage=stage if isinstance(stage, str) else "")
    request_id = context.get("requestId")
    return ApiRequest(
        Route(method, path),
        request_path,
        paths,
        cert["clientCertPem"],
        cert["serialNumber"],
        str(request_id or ""),
    )
