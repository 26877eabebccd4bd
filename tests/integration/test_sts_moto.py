"""IAM attestation end to end against real peers on 127.0.0.1.

STS is moto's server with request authentication on: moto lets the first
``INITIAL_NO_AUTH_ACTION_COUNT`` requests through unauthenticated (our IAM setup) and
from then on recomputes every request's SigV4 signature with the secret of the access
key it created, refusing a mismatch (``moto/core/authorization.py``,
``moto/iam/access_control.py``). ``test_moto_really_checks_signatures`` proves that for
STS GetCallerIdentity before anything else relies on it: with auth off, moto would answer
any key with a made-up ``arn:aws:sts::…:user/moto``.

Upstream misbehaviour (redirects, HTML, 5xx, throttling, a hang) comes from a small
aiohttp app posing as STS.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from botocore.exceptions import ClientError as BotoClientError

from issuer.attest.arn import identity_from_caller
from issuer.attest.identity import VerifiedIdentity
from issuer.attest.sts import validate_sts_request
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.attest.sts_wire import parse_sts_request
from issuer.aws.sts import AiohttpStsCaller
from issuer.errors import Unauthorized, UpstreamUnavailable
from tests.support.moto_server import free_port, moto_server
from tests.support.sts_signing import SignedStsRequest, sign_get_caller_identity

ACCOUNT = "123456789012"  # moto's default account
SERVER_ID = "issuer.example.org"
CSR = hashlib.sha256(b"DER of the machine's CSR").hexdigest()
HOSTS = StsHostAllowlist.from_botocore()
SETUP_REQUESTS = 4  # CreateUser, CreateAccessKey, PutUserPolicy, CreateRole


@dataclass(frozen=True, slots=True)
class Key:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


@dataclass(frozen=True, slots=True)
class Aws:
    url: str
    user: Key
    user_id: str
    role: Key


@pytest.fixture(scope="module")
def aws() -> Iterator[Aws]:
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}) as m:
        setup: dict[str, Any] = {
            "endpoint_url": m.url,
            "region_name": "us-east-1",
            "aws_access_key_id": "AKIASETUPSETUPSETUP0",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **setup)
        user = iam.create_user(UserName="builder-1", Path="/onprem/")["User"]
        key = iam.create_access_key(UserName="builder-1")["AccessKey"]
        role_arn = f"arn:aws:iam::{ACCOUNT}:role/svc/ecs-task-web"
        allow = {"Effect": "Allow", "Action": "sts:AssumeRole"}
        iam.put_user_policy(
            UserName="builder-1",
            PolicyName="assume",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{**allow, "Resource": role_arn}]}),
        )
        # moto matches the trust policy against the caller's ARN without the user's path.
        principals = [user["Arn"], f"arn:aws:iam::{ACCOUNT}:user/builder-1"]
        trust = {"Version": "2012-10-17", "Statement": [{**allow, "Principal": {"AWS": principals}}]}
        iam.create_role(RoleName="ecs-task-web", Path="/svc/", AssumeRolePolicyDocument=json.dumps(trust))
        # From here on moto authenticates: the user assumes the role with its own signature.
        sts = boto3.client(
            "sts",
            endpoint_url=m.url,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="task-42")["Credentials"]
        yield Aws(
            url=m.url,
            user=Key(key["AccessKeyId"], key["SecretAccessKey"]),
            user_id=user["UserId"],
            role=Key(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
        )


def sign(key: Key, **options: Any) -> SignedStsRequest:
    return sign_get_caller_identity(
        access_key_id=key.access_key_id,
        secret_access_key=key.secret_access_key,
        session_token=key.session_token,
        now=options.pop("now", datetime.now(UTC)),
        server_id=SERVER_ID,
        csr_sha256_hex=options.pop("csr", CSR),
        **options,
    )


async def attest(
    payload: dict[str, object],
    overrides: dict[str, str],
    *,
    csr: str = CSR,
    sts_timeout: float = 5.0,
) -> VerifiedIdentity:
    """What the service does: validate locally, then the one STS call, then canonicalise."""
    validated = validate_sts_request(
        parse_sts_request(payload),
        server_id=SERVER_ID,
        csr_sha256_hex=csr,
        require_csr_binding=True,
        hosts=HOSTS,
        now=datetime.now(UTC),
    )
    async with aiohttp.ClientSession() as session:
        caller = AiohttpStsCaller(session=session, endpoint_overrides=overrides, timeout=sts_timeout)
        return identity_from_caller(await caller.get_caller_identity(validated))


def to_moto(aws: Aws) -> dict[str, str]:
    return {"sts.amazonaws.com": aws.url, "sts.eu-west-1.amazonaws.com": aws.url}


def test_moto_really_checks_signatures(aws: Aws) -> None:
    sts = boto3.client(
        "sts",
        endpoint_url=aws.url,
        region_name="us-east-1",
        aws_access_key_id=aws.user.access_key_id,
        aws_secret_access_key="not-the-secret",
    )
    with pytest.raises(BotoClientError) as caught:
        sts.get_caller_identity()
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    ("host", "region"), [("sts.amazonaws.com", "us-east-1"), ("sts.eu-west-1.amazonaws.com", "eu-west-1")]
)
async def test_iam_user_is_accepted(aws: Aws, host: str, region: str) -> None:
    identity = await attest({"sts_request": sign(aws.user, host=host, region=region).sts_request()}, to_moto(aws))
    assert identity.method == "aws-iam"
    assert identity.principal == f"arn:aws:iam::{ACCOUNT}:user/onprem/builder-1"
    assert identity.account_id == ACCOUNT
    assert identity.attributes["user_id"] == aws.user_id
    assert identity.attributes["user_name"] == "builder-1"


async def test_assumed_role_is_accepted_and_canonicalised(aws: Aws) -> None:
    identity = await attest({"sts_request": sign(aws.role).sts_request()}, to_moto(aws))
    assert identity.principal == f"arn:aws:iam::{ACCOUNT}:role/ecs-task-web"
    assert identity.attributes["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/ecs-task-web/task-42"
    assert identity.attributes["role_name"] == "ecs-task-web"
    assert identity.attributes["session_name"] == "task-42"
    assert identity.attributes["user_id"].endswith(":task-42")


async def test_vault_style_login_fields_are_accepted(aws: Aws) -> None:
    signed = sign(aws.role, server_id_header="X-Vault-AWS-IAM-Server-ID")
    identity = await attest(signed.vault_fields(), to_moto(aws))
    assert identity.attributes["session_name"] == "task-42"


async def rejected(payload: dict[str, object], overrides: dict[str, str], **kwargs: Any) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        await attest(payload, overrides, **kwargs)
    assert caught.value.code == "sts_rejected", caught.value.reason
    return caught.value


async def test_wrong_secret_is_rejected_by_sts(aws: Aws) -> None:
    error = await rejected({"sts_request": sign(Key(aws.user.access_key_id, "wrong")).sts_request()}, to_moto(aws))
    assert "SignatureDoesNotMatch" in error.reason


async def test_unknown_access_key_is_rejected_by_sts(aws: Aws) -> None:
    error = await rejected({"sts_request": sign(Key("AKIAUNKNOWNUNKNOWN00", "x")).sts_request()}, to_moto(aws))
    assert "InvalidClientTokenId" in error.reason


async def test_tampered_session_token_is_rejected_by_sts(aws: Aws) -> None:
    key = Key(aws.role.access_key_id, aws.role.secret_access_key, "forged-token")
    await rejected({"sts_request": sign(key).sts_request()}, to_moto(aws))


async def test_body_changed_after_signing_is_rejected_by_sts(aws: Aws) -> None:
    # Still a valid GetCallerIdentity body, so it passes every local check; only STS
    # can tell it is not what was signed.
    signed = sign(aws.user)
    payload = signed.sts_request()
    payload["body"] = "VmVyc2lvbj0yMDExLTA2LTE1JkFjdGlvbj1HZXRDYWxsZXJJZGVudGl0eQ=="  # keys swapped
    await rejected({"sts_request": payload}, to_moto(aws))


async def test_stolen_request_cannot_bind_another_csr(aws: Aws) -> None:
    # An attacker with a captured signed request swaps in the hash of their own CSR:
    # the local check agrees with the (forged) header, STS does not agree with the signature.
    mine = hashlib.sha256(b"attacker's CSR").hexdigest()
    signed = sign(aws.role).with_header("X-Issuer-CSR-SHA256", mine)
    await rejected({"sts_request": signed.sts_request()}, to_moto(aws), csr=mine)


# --- STS misbehaving --------------------------------------------------------------------------


@dataclass
class FakeSts:
    server: TestServer
    hits: Counter[str]
    seen: list[tuple[dict[str, str], bytes]]

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


OK_XML = (
    '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>'
    f"<Arn>arn:aws:iam::{ACCOUNT}:user/fake</Arn><UserId>AIDAFAKE</UserId><Account>{ACCOUNT}</Account>"
    "</GetCallerIdentityResult></GetCallerIdentityResponse>"
)


@pytest.fixture
async def fake_sts() -> AsyncIterator[FakeSts]:
    hits: Counter[str] = Counter()
    seen: list[tuple[dict[str, str], bytes]] = []
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        behaviour = request.match_info["behaviour"]
        hits[behaviour] += 1
        seen.append((dict(request.headers), await request.read()))
        if behaviour == "ok" or behaviour == "target":
            return web.Response(text=OK_XML, content_type="text/xml")
        if behaviour == "redirect":
            raise web.HTTPTemporaryRedirect(location="/target/")
        if behaviour == "html":
            return web.Response(text="<html><body>Sign in to the Wi-Fi</body></html>", content_type="text/html")
        if behaviour == "error500":
            return web.Response(
                status=500, text="<ErrorResponse><Error><Code>InternalFailure</Code></Error></ErrorResponse>"
            )
        if behaviour == "throttle":
            return web.Response(
                status=400, text="<ErrorResponse><Error><Code>Throttling</Code></Error></ErrorResponse>"
            )
        if behaviour == "huge":
            return web.Response(body=b"<" + b"x" * (1024 * 1024), content_type="text/xml")
        await release.wait()  # "hang": never answers while the test runs
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{behaviour}/", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield FakeSts(server=server, hits=hits, seen=seen)
    finally:
        release.set()
        await server.close()


async def unavailable(fake: FakeSts, behaviour: str, *, sts_timeout: float = 5.0) -> str:
    signed = sign(Key("AKIAIOSFODNN7EXAMPLE", "secret"))
    with pytest.raises(UpstreamUnavailable) as caught:
        await attest(
            {"sts_request": signed.sts_request()},
            {"sts.amazonaws.com": fake.url(f"/{behaviour}")},
            sts_timeout=sts_timeout,
        )
    assert caught.value.code == "sts_unavailable"
    assert caught.value.status_hint == 503
    return caught.value.reason


async def test_forwards_exactly_what_was_validated(fake_sts: FakeSts) -> None:
    signed = sign(Key("AKIAIOSFODNN7EXAMPLE", "secret")).with_header("X-Forwarded-For", "10.9.8.7")
    identity = await attest({"sts_request": signed.sts_request()}, {"sts.amazonaws.com": fake_sts.url("/ok")})
    assert identity.principal == f"arn:aws:iam::{ACCOUNT}:user/fake"
    [(headers, body)] = fake_sts.seen
    assert body == signed.body
    assert headers["Host"] == "sts.amazonaws.com"  # the client's Host, not the override's
    for name, value in signed.headers:
        if name != "X-Forwarded-For":
            assert headers[name] == value
    assert "X-Forwarded-For" not in headers
    assert "User-Agent" not in headers
    assert "Accept-Encoding" not in headers


async def test_redirect_is_not_followed(fake_sts: FakeSts) -> None:
    reason = await unavailable(fake_sts, "redirect")
    assert "307" in reason
    assert fake_sts.hits["redirect"] == 1
    assert fake_sts.hits["target"] == 0  # the redirect target would have answered 200


async def test_html_is_unavailable(fake_sts: FakeSts) -> None:
    await unavailable(fake_sts, "html")


async def test_server_error_is_unavailable(fake_sts: FakeSts) -> None:
    assert "500" in await unavailable(fake_sts, "error500")


async def test_throttling_is_unavailable(fake_sts: FakeSts) -> None:
    assert "Throttling" in await unavailable(fake_sts, "throttle")


async def test_oversized_answer_is_unavailable(fake_sts: FakeSts) -> None:
    await unavailable(fake_sts, "huge")


async def test_hanging_sts_times_out(fake_sts: FakeSts) -> None:
    reason = await unavailable(fake_sts, "hang", sts_timeout=0.5)
    assert "0.5" in reason
    assert fake_sts.hits["hang"] == 1


async def test_connection_refused_is_unavailable() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamUnavailable) as caught:
        await attest(
            {"sts_request": sign(Key("AKIAIOSFODNN7EXAMPLE", "s")).sts_request()}, {"sts.amazonaws.com": closed}
        )
    assert caught.value.code == "sts_unavailable"


@pytest.mark.parametrize(
    "build",
    [
        # A client naming our fake server directly, by URL or through the Host header.
        lambda fake: sign(Key("AKIAIOSFODNN7EXAMPLE", "s"), url=fake.url("/ok/")),
        lambda fake: sign(Key("AKIAIOSFODNN7EXAMPLE", "s"), host=f"127.0.0.1:{fake.server.port}"),
        lambda fake: sign(Key("AKIAIOSFODNN7EXAMPLE", "s"), extra_headers={"Host": f"127.0.0.1:{fake.server.port}"}),
        lambda fake: sign(Key("AKIAIOSFODNN7EXAMPLE", "s"), body=b"Action=AssumeRole&Version=2011-06-15"),
    ],
)
async def test_locally_refused_requests_never_reach_sts(fake_sts: FakeSts, build: Any) -> None:
    signed = build(fake_sts)
    with pytest.raises(Unauthorized) as caught:
        await attest({"sts_request": signed.sts_request()}, {"sts.amazonaws.com": fake_sts.url("/ok")})
    assert caught.value.code != "sts_rejected"
    assert sum(fake_sts.hits.values()) == 0
