"""The admin API, ``/v1/admin/…``: one route per operator action, each signed in with IAM.

Registered only when ``[[admins]]`` exists (otherwise every ``/v1/admin/`` path is a 404). Every
request: the body is read within the same bounds as issuance (size, time, media type), the
operator's proof (``X-Issuer-Admin-Proof``) is checked against this exact request, single use,
and STS says who signed it; then the action runs with the arguments from the JSON body (POST)
or the query (GET) and path. Every call, refused or not, leaves an audit row naming the actor.
Errors are problem+json with stable codes (401 sign-in, 403 ``not_an_admin`` /
``permission_denied``, 400 arguments), never a 500 for anything a caller can send.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.attest.admin_proof import ADMIN_PROOF_HEADER, ADMIN_PURPOSE, decode_proof_header, request_digest
from issuer.attest.sts import ADMIN_NONCE_HEADER, ADMIN_REQUEST_HEADER, PURPOSE_HEADER, SERVER_ID_HEADER
from issuer.attest.sts_wire import parse_sts_request
from issuer.errors import ClientError
from issuer.faults import as_service_error
from issuer.http.body import parse_json, read_body
from issuer.http.client_address import remote_address
from issuer.http.keys import BODY_TIMEOUT, REQUEST_ID
from issuer.service.admin.actions import Action, OperatorContext, perform
from issuer.service.admin.audit import record_operator_action
from issuer.service.admin.catalogue import ACTIONS
from issuer.service.admin.signin import Operator, OperatorSignIn
from issuer.settings import Settings

__all__ = ["ADMIN", "AdminApi", "add_admin_routes"]


@dataclass(frozen=True, slots=True)
class AdminApi:
    """What the admin routes need, built once at start-up."""

    sign_in: OperatorSignIn
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    clock: Callable[[], datetime]


ADMIN = web.AppKey("admin_api", AdminApi)


def add_admin_routes(app: web.Application) -> None:
    """Route every action of the catalogue, and ``GET /v1/admin`` (how to sign in; no proof needed)."""
    app.router.add_get("/v1/admin", describe)
    for action in ACTIONS.values():
        app.router.add_route(action.method, action.path, _handler(action))


async def describe(request: web.Request) -> web.Response:
    """What a client needs to make a proof: nothing secret (the server ID is in every issue response)."""
    api = request.app[ADMIN]
    return web.json_response(
        {
            "api": "v1",
            "server_id": api.settings.audience,
            "sign_in": {
                "proof_header": ADMIN_PROOF_HEADER,
                "signed_headers": {
                    SERVER_ID_HEADER: api.settings.audience,
                    PURPOSE_HEADER: ADMIN_PURPOSE,
                    ADMIN_REQUEST_HEADER: "hex sha256 of METHOD \\n PATH?QUERY \\n hex sha256(body)",
                    ADMIN_NONCE_HEADER: "random, recommended (a proof is single use; SigV4 times are to the second)",
                },
            },
            "actions": {
                a.name: {"method": a.method, "path": a.path, "permission": a.permission} for a in ACTIONS.values()
            },
        }
    )


def _handler(action: Action[Any]) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        api = request.app[ADMIN]
        now = api.clock()
        request_id = request[REQUEST_ID]
        remote = remote_address(request)
        operator: Operator | None = None
        try:
            body = b""
            if request.method == "POST":
                body = await read_body(
                    request, max_bytes=api.settings.max_body_bytes, read_timeout=request.app[BODY_TIMEOUT]
                )
            proof = parse_sts_request({"sts_request": decode_proof_header(request.headers.get(ADMIN_PROOF_HEADER))})
            operator = await api.sign_in.sign_in(
                proof, digest=request_digest(request.method, request.raw_path, body), now=now
            )
            arguments = _arguments(request, body)
        except Exception as exc:
            error = as_service_error(exc)
            await record_operator_action(
                api.sessions,
                actor=operator.actor if operator else getattr(error, "principal", None) or "unauthenticated",
                action=action.name,
                arguments={},
                outcome="failure",
                request_id=request_id,
                now=now,
                code=getattr(error, "code", "internal_error"),
                summary=str(getattr(error, "reason", None) or error),
                remote_addr=remote,
            )
            if error is exc:
                raise
            raise error from exc
        ctx = OperatorContext(
            sessions=api.sessions,
            settings=api.settings,
            operator=operator,
            request_id=request_id,
            now=now,
            remote=True,
            remote_addr=remote,
        )
        result = await perform(action, arguments, ctx)
        return web.json_response(result)

    return handle


def _arguments(request: web.Request, body: bytes) -> dict[str, Any]:
    """The action's arguments: the JSON object of a POST, or the query of a GET, plus the path's parts."""
    arguments: dict[str, Any]
    if request.method == "POST":
        parsed = parse_json(body) if body else {}
        if not isinstance(parsed, dict):
            raise ClientError("The request body must be a JSON object.", code="body_not_object")
        arguments = parsed
    else:
        arguments = {}
        for name in request.query:
            if len(request.query.getall(name)) > 1:
                raise ClientError(f"the query names {name[:64]!r} more than once", code="field_duplicate")
            arguments[name] = request.query[name]
    return {**arguments, **_path(request.match_info, arguments)}


def _path(match: Mapping[str, str], arguments: Mapping[str, Any]) -> dict[str, str]:
    clash = sorted(set(match) & set(arguments))
    if clash:
        raise ClientError(f"{clash[0]!r} is part of the path; do not send it again", code="field_duplicate")
    return dict(match)
