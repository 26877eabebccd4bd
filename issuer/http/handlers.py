"""Thin handlers: parse the wire, call the service, shape the response. No SQL, no crypto."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text

from issuer.attest.identity import Method
from issuer.ec2_issuance import Ec2Fields
from issuer.errors import ClientError, IssuerError
from issuer.http.keys import BUNDLE_PEM, EC2, ENGINE, IAM, REQUEST_ID, SERVICE, SETTINGS
from issuer.http.problems import problem
from issuer.http.schemas import (
    EC2_FIELDS,
    IAM_FIELDS,
    MAX_BLOB,
    MAX_DOCUMENT,
    TOKEN_FIELDS,
    issue_request,
    read_json_object,
    text_field,
)
from issuer.service import Attempt, Issued, RequestContext

log = logging.getLogger("issuer.http")


def context(request: web.Request) -> RequestContext:
    return RequestContext(request_id=request[REQUEST_ID], remote_addr=remote_address(request))


def remote_address(request: web.Request) -> str | None:
    """The client's address; X-Forwarded-For is believed only from a configured proxy."""
    remote = request.remote
    proxies = request.app[SETTINGS].trusted_proxies
    if remote and remote in proxies:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            if hop not in proxies:
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return remote
    return remote


def pem(*certs: Any) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def issued_response(issued: Issued) -> web.Response:
    cert = issued.certificate
    body: dict[str, Any] = {
        "serial": issued.serial,
        "certificate": pem(cert),
        "chain": pem(*issued.chain),
        "bundle": pem(*issued.roots),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "renew_after": issued.renew_after.isoformat(),
        "role": issued.role,
        "identity": {
            "method": issued.identity.method,
            "principal": issued.identity.principal,
            "uri_san": issued.uri_san,
        },
    }
    if issued.nonce is not None:
        body["nonce"] = issued.nonce
    return web.json_response(body, status=201)


@asynccontextmanager
async def audited(request: web.Request, method: Method) -> AsyncIterator[RequestContext]:
    """Refusals at the wire (bad JSON, wrong types, oversize) leave an audit row like any other attempt."""
    ctx = context(request)
    try:
        yield ctx
    except IssuerError as exc:
        await request.app[SERVICE].record_failure(Attempt(method=method, ctx=ctx), exc)
        raise


async def issue_token(request: web.Request) -> web.Response:
    async with audited(request, "token") as ctx:
        body = await read_json_object(request, allowed=TOKEN_FIELDS)
        issue = issue_request(body)
        token = text_field(body, "token", max_len=256)
        assert token is not None
    issued = await request.app[SERVICE].issue_with_token(issue, token, ctx)
    return issued_response(issued)


async def issue_ec2(request: web.Request) -> web.Response:
    async with audited(request, "aws-ec2") as ctx:
        body = await read_json_object(request, allowed=EC2_FIELDS)
        issue = issue_request(body)
        document = text_field(body, "document", max_len=MAX_DOCUMENT)
        assert document is not None
        fields = Ec2Fields(
            document=document,
            rsa2048=text_field(body, "rsa2048", max_len=MAX_BLOB, required=False),
            pkcs7=text_field(body, "pkcs7", max_len=MAX_BLOB, required=False),
            signature=text_field(body, "signature", max_len=MAX_BLOB, required=False),
            nonce=text_field(body, "nonce", max_len=128, required=False),
        )
    issued = await request.app[EC2].issue(issue, fields, ctx)
    return issued_response(issued)


async def issue_iam(request: web.Request) -> web.Response:
    async with audited(request, "aws-iam") as ctx:
        if IAM not in request.app:
            raise ClientError("No role allows the aws-iam method.", code="method_not_enabled")
        body = await read_json_object(request, allowed=IAM_FIELDS)
        issue = issue_request(body)
    issued = await request.app[IAM].issue(issue, body, ctx)
    return issued_response(issued)


async def bundle(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[BUNDLE_PEM],
        content_type="application/x-pem-file",
        headers={"Cache-Control": "max-age=300"},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with request.app[ENGINE].connect() as conn:
            await conn.execute(text("SELECT 1 FROM certificates LIMIT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database check failed: %s", exc)
        checks["database"] = "unavailable"
    checks["signer"] = "ok" if request.app[SERVICE].signer.issuer_certificate is not None else "missing"
    if all(v == "ok" for v in checks.values()):
        return web.json_response({"status": "ready", "checks": checks})
    response = problem(
        503,
        code="not_ready",
        title="Not ready",
        detail="; ".join(f"{k}: {v}" for k, v in checks.items()),
        request_id=request[REQUEST_ID],
    )
    return response
