"""A local stand-in for the EC2 instance metadata service (IMDSv2), on 127.0.0.1.

It behaves as the real one does where the agent can tell:

- ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600,
  else 400) and refuses a request carrying ``X-Forwarded-For`` (403);
- in ``v2`` mode (``http-tokens required``) every GET needs a token it issued: a
  missing or unknown one is 401; ``optional`` mode serves GETs without a token
  too (but still 401s an unknown one); ``v1-only`` mode answers the PUT with 403
  (an IMDSv1-only service, or IMDS behind something that drops PUTs);
- ``/latest/dynamic/instance-identity/{document,rsa2048,pkcs7,signature}`` serve the
  configured text byte for byte (absent ones are 404), and
  ``/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance`` the
  instance identity role's credentials (``instance_role``), under the same token rules.

And it misbehaves as the real one does, on request:

- ``expire_first_token``: the first token it issues is refused (401) at its first use, as
  a token that expired (or an IMDS that restarted) is;
- ``unavailable=N``: the first N requests get 503 (throttled, or not ready at boot); -1: all;
- ``hops > hop_limit``: the reply to the token PUT never arrives (its IP TTL is the
  instance's PUT response hop limit, and a container behind a bridge is 2 hops away);
  GETs, which are not hop-limited, are answered.

Use :func:`fake_imds` from synchronous tests (the agent blocks), or
:func:`create_imds_app` with aiohttp's test server. :func:`serve_in_thread` runs
any aiohttp app on a free loopback port in a background thread.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "SAMPLE_DOCUMENT",
    "SAMPLE_RSA2048",
    "FakeImds",
    "ImdsConfig",
    "ImdsMode",
    "RecordedRequest",
    "create_imds_app",
    "fake_imds",
    "serve_in_thread",
]

ImdsMode = Literal["v2", "optional", "v1-only"]

# Shaped like a real document (pretty-printed, AWS key order); the agent must pass it on byte for byte.
SAMPLE_DOCUMENT = """{
  "accountId" : "123456789012",
  "architecture" : "x86_64",
  "availabilityZone" : "eu-west-1a",
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : "ami-0abcdef1234567890",
  "instanceId" : "i-0123456789abcdef0",
  "instanceType" : "t3.micro",
  "kernelId" : null,
  "pendingTime" : "2025-01-02T03:04:05Z",
  "privateIp" : "10.0.1.23",
  "ramdiskId" : null,
  "region" : "eu-west-1",
  "version" : "2017-09-30"
}"""
# Not a valid signature: the agent never verifies it. Wrapped at 76 columns like IMDS serves it.
SAMPLE_RSA2048 = (
    "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABIIB\n"
    "4HsKICAiYWNjb3VudElkIiA6ICIxMjM0NTY3ODkwMTIiLAogICJhcmNoaXRlY3R1cmUiIDogIng4\n"
    "Nl82NCIKfQAAAAAAAA=="
)

# Spelled out here rather than imported from clients.imds, so that a typo there fails the tests.
TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
_IDENTITY = "/latest/dynamic/instance-identity/"
INSTANCE_ROLE_PATH = "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance"


@dataclass(frozen=True)
class ImdsConfig:
    document: str = SAMPLE_DOCUMENT
    rsa2048: str | None = SAMPLE_RSA2048
    pkcs7: str | None = None
    signature: str | None = None
    mode: ImdsMode = "v2"
    expire_first_token: bool = False
    unavailable: int = 0
    hops: int = 1
    hop_limit: int = 1
    # The instance identity role's credentials (JSON, as IMDS serves them); None: 404.
    instance_role: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # case-insensitive, as HTTP headers are
    status: int


@dataclass
class _State:
    config: ImdsConfig
    tokens: set[str] = field(default_factory=set)
    requests: list[RecordedRequest] = field(default_factory=list)
    expired: str | None = None  # the token to refuse at its first use
    issued: int = 0
    answered: int = 0
    released: asyncio.Event | None = None  # set at shutdown: dropped replies stop waiting


_STATE = web.AppKey("fake_imds_state", _State)


def create_imds_app(config: ImdsConfig | None = None) -> web.Application:
    """An aiohttp app serving IMDS as configured; its requests are recorded in order."""
    app = web.Application(middlewares=[_record])
    app[_STATE] = _State(config=config or ImdsConfig())
    app.router.add_put(TOKEN_PATH, _token)
    app.router.add_get(_IDENTITY + "{name}", _identity)
    app.router.add_get(INSTANCE_ROLE_PATH, _instance_role)
    app.on_shutdown.append(_release)
    return app


async def _release(app: web.Application) -> None:
    released = app[_STATE].released
    if released is not None:
        released.set()


@web.middleware
async def _record(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[_STATE]
    requests = state.requests
    state.answered += 1
    if state.config.unavailable < 0 or state.answered <= state.config.unavailable:
        requests.append(RecordedRequest(request.method, request.path, _headers(request), 503))
        return web.Response(status=503, text="Service Unavailable")
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # the router's 404/405
        requests.append(RecordedRequest(request.method, request.path, _headers(request), exc.status))
        raise
    requests.append(RecordedRequest(request.method, request.path, _headers(request), response.status))
    return response


def _headers(request: web.Request) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(request.headers))


async def _token(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    if state.config.mode == "v1-only" or "X-Forwarded-For" in request.headers:
        return web.Response(status=403, text="Forbidden")
    ttl = request.headers.get(TTL_HEADER, "")
    if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
        return web.Response(status=400, text="Bad Request")
    token = secrets.token_urlsafe(40)
    state.tokens.add(token)
    state.issued += 1
    if state.config.expire_first_token and state.issued == 1:
        state.expired = token
    if state.config.hops > state.config.hop_limit:
        # The reply would die on the way: the client hears nothing (it times out).
        if state.released is None:
            state.released = asyncio.Event()
        await asyncio.wait_for(state.released.wait(), timeout=60)
    return web.Response(text=token, headers={TTL_HEADER: ttl})


def _token_refused(request: web.Request) -> web.Response | None:
    """401 for a GET without a good token (as the mode requires), else None."""
    state = request.app[_STATE]
    config = state.config
    token = request.headers.get(TOKEN_HEADER)
    if config.mode != "v1-only":
        if token is None and config.mode == "v2":
            return web.Response(status=401, text="Unauthorized")
        if token is not None and token not in state.tokens:
            return web.Response(status=401, text="Unauthorized")
        if token is not None and token == state.expired:
            state.tokens.discard(token)
            state.expired = None
            return web.Response(status=401, text="Unauthorized")
    return None


async def _instance_role(request: web.Request) -> web.Response:
    refused = _token_refused(request)
    if refused is not None:
        return refused
    body = request.app[_STATE].config.instance_role
    if body is None:
        return web.Response(status=404, text="Not Found")
    return web.Response(body=body.encode("utf-8"), content_type="text/plain")


async def _identity(request: web.Request) -> web.Response:
    refused = _token_refused(request)
    if refused is not None:
        return refused
    config = request.app[_STATE].config
    blobs = {
        "document": config.document,
        "rsa2048": config.rsa2048,
        "pkcs7": config.pkcs7,
        "signature": config.signature,
    }
    body = blobs.get(request.match_info["name"])
    if body is None:
        return web.Response(status=404, text="Not Found")
    return web.Response(body=body.encode("utf-8"), content_type="text/plain")


@dataclass(frozen=True)
class FakeImds:
    url: str  # http://127.0.0.1:PORT
    app: web.Application

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self.app[_STATE].requests)

    @property
    def tokens(self) -> set[str]:
        """Tokens issued so far."""
        return set(self.app[_STATE].tokens)

    def document_fields(self) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(self.app[_STATE].config.document)
        return parsed


@contextmanager
def serve_in_thread(app: web.Application, *, ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (free port) from a background thread; yield its base URL
    (``https://`` when an ``ssl_context`` is given)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="aiohttp-test-server", daemon=True)
    thread.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()

    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        sock.close()


@contextmanager
def fake_imds(config: ImdsConfig | None = None) -> Iterator[FakeImds]:
    """Run a fake IMDS on 127.0.0.1; ``with fake_imds(ImdsConfig(mode="v1-only")) as imds: imds.url``."""
    app = create_imds_app(config)
    with serve_in_thread(app) as url:
        yield FakeImds(url=url, app=app)
