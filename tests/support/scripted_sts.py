"""A scripted STS on 127.0.0.1, reached through ``[aws.sts] endpoint_overrides`` as the service reaches
moto: each base URL answers one way (``ok``, ``reject``, ``error500``, ``hold`` until released,
``hang`` forever), and counts its hits. Requests are signed by botocore with a made-up key:
nothing here checks signatures (moto's server does that in ``test_iam_issue``/``test_sts_moto``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.sts_signing import sign_get_caller_identity
from tests.support.x509_check import csr_sha256

ACCOUNT = "123456789012"
SERVER_ID = "issuer.test.example"
USER_ARN = f"arn:aws:iam::{ACCOUNT}:user/onprem/scripted-user"
OK_XML = (
    '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>'
    f"<Arn>{USER_ARN}</Arn><UserId>AIDASCRIPTEDUSER</UserId><Account>{ACCOUNT}</Account>"
    "</GetCallerIdentityResult></GetCallerIdentityResponse>"
)
REJECT_XML = (
    '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
    "<Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message>"
    "</Error></ErrorResponse>"
)
# A role for USER_ARN, to add to a test's issuer.toml (with server_id = SERVER_ID).
IAM_ROLE = f"""
[[roles]]
name = "builders"
methods = ["aws-iam"]
account_ids = ["{ACCOUNT}"]
principal_arns = ["arn:aws:iam::{ACCOUNT}:user/onprem/*"]
uri_san = "spiffe://{{trust_domain}}/aws/{{account_id}}/iam/user/{{user_name}}"
"""


@dataclass
class ScriptedSts:
    server: TestServer
    hits: Counter[str]
    release: asyncio.Event
    hit: asyncio.Event

    def url(self, behaviour: str) -> str:
        return str(self.server.make_url(f"/{behaviour}"))

    async def arrivals(self, behaviour: str, count: int) -> None:
        """Return once ``behaviour`` has been hit ``count`` times (fails after 30 s rather than hang)."""
        async with asyncio.timeout(30):
            while self.hits[behaviour] < count:
                self.hit.clear()
                await self.hit.wait()


@asynccontextmanager
async def scripted_sts() -> AsyncIterator[ScriptedSts]:
    hits: Counter[str] = Counter()
    release = asyncio.Event()
    hit = asyncio.Event()
    forever = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        behaviour = request.match_info["behaviour"]
        hits[behaviour] += 1
        hit.set()
        if behaviour == "ok":
            return web.Response(text=OK_XML, content_type="text/xml")
        if behaviour == "reject":
            return web.Response(status=403, text=REJECT_XML, content_type="text/xml")
        if behaviour == "hold":
            await release.wait()
        elif behaviour == "hang":
            await forever.wait()
        return web.Response(
            status=500, text="<ErrorResponse><Error><Code>InternalFailure</Code></Error></ErrorResponse>"
        )

    app = web.Application()
    app.router.add_route("*", "/{behaviour}/", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield ScriptedSts(server=server, hits=hits, release=release, hit=hit)
    finally:
        release.set()
        forever.set()
        await server.close()


def iam_request(csr_pem: str, *, host: str = "sts.amazonaws.com", region: str = "us-east-1") -> dict[str, object]:
    """An ``aws-iam`` issue request body for role ``builders``, bound to ``csr_pem``, for STS ``host``."""
    signed = sign_get_caller_identity(
        access_key_id="AKIAIOSFODNN7EXAMPLE",
        secret_access_key="scripted-secret",
        now=datetime.now(UTC),
        host=host,
        region=region,
        server_id=SERVER_ID,
        csr_sha256_hex=csr_sha256(csr_pem),
    )
    return {"csr": csr_pem, "role": "builders", "sts_request": signed.sts_request()}
