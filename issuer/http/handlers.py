"""Thin handlers: read the wire through a schema, run the pipeline, shape the response. No SQL, no crypto."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from issuer.http.body import read_json_object
from issuer.http.client_address import remote_address
from issuer.http.keys import BODY_TIMEOUT, CLIENT_REQUEST_ID, ENGINE, METHODS, PIPELINE, REGISTRY, REQUEST_ID, SETTINGS
from issuer.http.problems import problem
from issuer.http.server_tls import peer_certificate
from issuer.observability.health import database_status, signer_status
from issuer.service.issuance.entry import MethodEntry, Transport
from issuer.service.issuance.model import Issued, IssueRequest, RequestContext
from issuer.service.issuance.wire import COMMON_FIELDS, read_issue_request

log = logging.getLogger("issuer.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def context(request: web.Request) -> RequestContext:
    return RequestContext(
        request_id=request[REQUEST_ID],
        remote_addr=remote_address(request),
        client_request_id=request.get(CLIENT_REQUEST_ID),
    )


def pem(*certs: Any) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


@functools.lru_cache(maxsize=64)
def _pem_of(certs: tuple[x509.Certificate, ...]) -> str:
    """The chain's or the bundle's PEM: the same few tuples on every answer, encoded once."""
    return pem(*certs)


def issued_response(issued: Issued) -> web.Response:
    cert = issued.certificate
    body: dict[str, Any] = {
        "serial": issued.serial,
        "certificate": issued.certificate_pem or pem(cert),
        "chain": _pem_of(issued.chain),
        "bundle": _pem_of(issued.roots),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "renew_after": issued.renew_after.isoformat(),
        "role": issued.role,
        "server_id": issued.server_id,
        "identity": {
            "method": issued.identity.method,
            "principal": issued.identity.principal,
            "uri_san": issued.uri_san,
        },
    }
    if issued.nonce is not None:
        body["nonce"] = issued.nonce
    if issued.renewed_from is not None:
        body["renewed_from"] = issued.renewed_from
    return web.json_response(body, status=201)


def issue_handler(entry: MethodEntry[Any]) -> Handler:
    """The handler of ``entry``'s route: its wire schema, then the pipeline with the app's build of its steps."""
    fields = COMMON_FIELDS | entry.fields

    async def issue(request: web.Request) -> web.Response:
        transport = Transport(
            authorization=request.headers.get("Authorization"), peer_certificate=peer_certificate(request)
        )

        async def read() -> IssueRequest[Any]:
            body = await read_json_object(
                request,
                allowed=fields,
                max_bytes=request.app[SETTINGS].max_body_bytes,
                read_timeout=request.app[BODY_TIMEOUT],
            )
            return read_issue_request(body, entry, transport)

        method = request.app[METHODS][entry.name]
        return issued_response(await request.app[PIPELINE].issue(method, context(request), read))

    return issue


async def bundle(request: web.Request) -> web.Response:
    """The trust anchors (roots), for clients verifying servers and chains."""
    return _pem_response(request, request.app[REGISTRY].snapshot.bundle_pem)


async def truststore(request: web.Request) -> web.Response:
    """What API Gateway's truststore must hold: every issuing CA that may have live leaves, then the roots."""
    snapshot = request.app[REGISTRY].snapshot
    if request.headers.get("If-None-Match") == snapshot.truststore_etag:
        return web.Response(status=304, headers={"ETag": snapshot.truststore_etag})
    response = _pem_response(request, snapshot.truststore_pem)
    response.headers["ETag"] = snapshot.truststore_etag
    return response


def _pem_response(request: web.Request, body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/x-pem-file", headers={"Cache-Control": "max-age=60"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = {"database": await database_status(request.app[ENGINE])}
    try:
        signer = request.app[REGISTRY].snapshot.active.signer
    except RuntimeError:
        signer = None
    checks["signer"] = await signer_status(signer) if signer is not None else "missing"
    # A replica that cannot follow the CA registry (say, a newly activated issuer's key is not on its
    # disk) keeps signing with the previous view: out of rotation until it can.
    checks["registry"] = "stale" if request.app[REGISTRY].stale_reason else "ok"
    if all(v == "ok" for v in checks.values()):
        return web.json_response({"status": "ready", "checks": checks})
    return problem(
        503,
        code="not_ready",
        title="Not ready",
        detail="; ".join(f"{k}: {v}" for k, v in checks.items()),
        request_id=request[REQUEST_ID],
        retry_after=5,
    )
