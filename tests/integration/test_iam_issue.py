"""POST /v1/issue/aws-iam end to end: the real app on a migrated database, moto's STS checking
every signature, openssl and cryptography checking every certificate.

Requests are signed by botocore (``tests/support/sts_signing.py``) with the keys moto issued
(``tests/support/moto_iam.py``). Where a test must count or script the upstream, STS is a
small aiohttp app on 127.0.0.1 that the service reaches through its ``[aws.sts]``
endpoint overrides, exactly as it reaches moto.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from ca.files import load_local_signer
from ca.signer import IssuedCertificate, Signer, SignerCapabilities, SignerHealth, SigningRequest
from issuer.attest.sts import ValidatedStsRequest
from issuer.attest.sts_response import CallerIdentity, StsCaller
from issuer.aws.sts import AiohttpStsCaller
from issuer.store.models import Attestation, Identity
from tests.support.harness import (
    PASSPHRASE,
    Harness,
    check_issued,
    check_leaf_against_truststore,
    new_csr,
    running_issuer,
    write_ca,
)
from tests.support.moto_iam import ACCOUNT_ID, BUILDER_AND_TASK_ROLES, AwsKey, MotoIam, moto_iam
from tests.support.sts_signing import SignedStsRequest, sign_get_caller_identity
from tests.support.x509_check import csr_sha256

PATH = "/v1/issue/aws-iam"
SERVER_ID = "issuer.test.example"
TRUST = "test.example"
# Any key will do where STS is our own fake: nothing checks its signature.
FAKE_KEY = AwsKey("AKIAIOSFODNN7EXAMPLE", "fake-secret")


def config(sts_overrides: Mapping[str, str], *, timeout: str = "5s") -> str:
    overrides = ", ".join(f'"{host}" = "{url}"' for host, url in sts_overrides.items())
    return f"""
[issuer]
trust_domain = "{TRUST}"
server_id = "{SERVER_ID}"

[aws.sts]
timeout = "{timeout}"
endpoint_overrides = {{ {overrides} }}

{BUILDER_AND_TASK_ROLES}
[[roles]]
name = "vault-clients"
methods = ["aws-iam"]
principal_arns = ["arn:aws:iam::{ACCOUNT_ID}:role/ecs-task-web"]
require_csr_binding = false
uri_san = "spiffe://{{trust_domain}}/vault/{{role_name}}/{{session_name}}"
"""


def to_moto(aws: MotoIam) -> dict[str, str]:
    return {"sts.amazonaws.com": aws.url, "sts.us-east-1.amazonaws.com": aws.url}


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoIam]:
    with moto_iam() as m:
        yield m


def sign(key: AwsKey, csr_pem: str | None, **options: Any) -> SignedStsRequest:
    """Sign GetCallerIdentity for this issuer (and ``csr_pem``'s CSR, when given) with botocore."""
    return sign_get_caller_identity(
        access_key_id=key.access_key_id,
        secret_access_key=key.secret_access_key,
        session_token=key.session_token,
        now=options.pop("now", datetime.now(UTC)),
        server_id=options.pop("server_id", SERVER_ID),
        csr_sha256_hex=csr_sha256(csr_pem) if csr_pem else None,
        **options,
    )


def issue_body(csr_pem: str, role: str | None, proof: Mapping[str, object]) -> dict[str, object]:
    body: dict[str, object] = {"csr": csr_pem, **proof}
    if role is not None:
        body["role"] = role
    return body


def native(signed: SignedStsRequest) -> dict[str, object]:
    return {"sts_request": signed.sts_request()}


async def identity_row(h: Harness, principal: str) -> Identity:
    async with h.service.sessions() as session:
        row = await session.scalar(
            select(Identity).where(Identity.method == "aws-iam", Identity.principal == principal)
        )
    assert row is not None, principal
    return row


async def audit_row(h: Harness, request_id: str) -> Attestation:
    (row,) = [a for a in await h.attestations() if a.request_id == request_id]
    return row


async def refused(
    h: Harness, body: Mapping[str, object], *, status: int, code: str
) -> tuple[dict[str, Any], Attestation]:
    """POST ``body``; assert a problem+json refusal with ``code``, a failure audit row and no certificate."""
    resp = await h.client.post(PATH, json=body)
    problem = await resp.json(content_type=None)
    assert (resp.status, problem.get("code")) == (status, code), problem
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert problem["type"].endswith(code)
    assert problem["request_id"] == resp.headers["X-Request-ID"]
    row = await audit_row(h, problem["request_id"])
    assert (row.outcome, row.method, row.code, row.certificate_serial) == ("failure", "aws-iam", code, None)
    assert [c.serial for c in await h.certificates() if c.request_id == problem["request_id"]] == []
    return problem, row


# --- accepted -----------------------------------------------------------------------------------


async def test_iam_user_gets_a_certificate(tmp_path: Path, db_url: str, aws: MotoIam) -> None:
    async with running_issuer(tmp_path, db_url, config=config(to_moto(aws))) as h:
        # The CSR asks for names of its own; only its key is used.
        key, csr = new_csr(common_name="root", uris=["spiffe://evil/x"])
        status, body = await h.post(PATH, issue_body(csr, "builders", native(sign(aws.user, csr))))
        assert status == 201, body
        leaf = check_issued(body, key=key)
        await check_leaf_against_truststore(h, body)

        uri = f"spiffe://{TRUST}/aws/{ACCOUNT_ID}/iam/user/builder-1"
        assert body["identity"] == {"method": "aws-iam", "principal": aws.user_arn, "uri_san": uri}
        assert aws.user_arn == f"arn:aws:iam::{ACCOUNT_ID}:user/onprem/builder-1"
        assert body["role"] == "builders"
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "builder-1"

        (cert_row,) = await h.certificates()
        assert (cert_row.serial, cert_row.method, cert_row.role, cert_row.status) == (
            body["serial"],
            "aws-iam",
            "builders",
            "active",
        )
        assert cert_row.sans == [uri]
        (audit,) = await h.attestations()
        assert (audit.outcome, audit.method, audit.principal, audit.role, audit.certificate_serial, audit.code) == (
            "success",
            "aws-iam",
            aws.user_arn,
            "builders",
            body["serial"],
            None,
        )
        ident = await identity_row(h, aws.user_arn)
        assert ident.account_id == ACCOUNT_ID
        assert (ident.attributes["user_id"], ident.attributes["unique_id"]) == (aws.user_id, aws.user_id)


async def test_assumed_role_is_bound_as_the_role_and_keeps_its_session_name(
    tmp_path: Path, pg_url: str, aws: MotoIam
) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(to_moto(aws))) as h:
        key, csr = new_csr()
        status, body = await h.post(PATH, issue_body(csr, "ecs-tasks", native(sign(aws.role, csr))))
        assert status == 201, body
        leaf = check_issued(body, key=key)

        uri = f"spiffe://{TRUST}/aws/{ACCOUNT_ID}/iam/ecs-task-web/task-42"
        assert body["identity"] == {"method": "aws-iam", "principal": aws.canonical_role_arn, "uri_san": uri}
        assert aws.canonical_role_arn == f"arn:aws:iam::{ACCOUNT_ID}:role/ecs-task-web"  # no /svc/ path
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]

        (audit,) = await h.attestations()
        assert (audit.outcome, audit.principal, audit.role) == ("success", aws.canonical_role_arn, "ecs-tasks")
        ident = await identity_row(h, aws.canonical_role_arn)
        assert (
            ident.attributes["arn"] == aws.session_arn == f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/ecs-task-web/task-42"
        )
        assert ident.attributes["session_name"] == "task-42"
        role_id, _, session = aws.session_user_id.partition(":")
        assert session == "task-42"
        assert (ident.attributes["user_id"], ident.attributes["unique_id"]) == (aws.session_user_id, role_id)


async def test_vault_style_payload_only_for_a_role_without_csr_binding(
    tmp_path: Path, pg_url: str, aws: MotoIam
) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(to_moto(aws))) as h:
        key, csr = new_csr()
        # What Vault's AWS auth clients send: no CSR hash, Vault's server-ID header, base64 fields.
        signed = sign(aws.role, None, server_id_header="X-Vault-AWS-IAM-Server-ID")
        vault = signed.vault_fields()
        assert set(vault) == {"iam_http_request_method", "iam_request_url", "iam_request_headers", "iam_request_body"}

        # A role that requires CSR binding refuses it before STS is asked (and before the
        # signature is burned, so the same request is still good for the next role).
        await refused(h, issue_body(csr, "ecs-tasks", vault), status=401, code="sts_csr_binding_missing")

        status, body = await h.post(PATH, issue_body(csr, "vault-clients", vault))
        assert status == 201, body
        check_issued(body, key=key)
        assert body["identity"] == {
            "method": "aws-iam",
            "principal": aws.canonical_role_arn,
            "uri_san": f"spiffe://{TRUST}/vault/ecs-task-web/task-42",
        }
        assert [c.role for c in await h.certificates()] == ["vault-clients"]


# --- refused ------------------------------------------------------------------------------------

Sign = Callable[[MotoIam, str], SignedStsRequest]


def user(aws: MotoIam, csr: str | None, **options: Any) -> SignedStsRequest:
    """The IAM user's request for ``csr``; ``options`` go to :func:`sign`."""
    return sign(aws.user, csr, **options)


def _body_swapped(aws: MotoIam, csr: str) -> SignedStsRequest:
    # Still exactly GetCallerIdentity (keys swapped), so every local check passes; only STS can
    # tell it is not the body that was signed.
    return replace(user(aws, csr), body=b"Version=2011-06-15&Action=GetCallerIdentity")


def _moved_to_another_csr(aws: MotoIam, csr: str) -> SignedStsRequest:
    # A stolen signed request (made for the victim's CSR) with the hash swapped for the thief's.
    return user(aws, new_csr()[1]).with_header("X-Issuer-CSR-SHA256", csr_sha256(csr))


@dataclass(frozen=True, slots=True)
class Refusal:
    name: str
    code: str
    signed: Sign
    status: int = 401
    role: str | None = "builders"


FORM = "application/x-www-form-urlencoded"
SKEWED = timedelta(minutes=16)
REFUSALS = [
    Refusal("wrong secret", "sts_rejected", lambda a, c: sign(AwsKey(a.user.access_key_id, "wrong"), c)),
    Refusal("body changed after signing", "sts_rejected", _body_swapped),
    Refusal("signed header changed", "sts_rejected", lambda a, c: user(a, c).with_header("Content-Type", FORM)),
    Refusal("signed CSR hash swapped for another CSR", "sts_rejected", _moved_to_another_csr),
    Refusal("server id missing", "sts_server_id_missing", lambda a, c: user(a, c, server_id=None)),
    Refusal(
        "server id unsigned",
        "sts_server_id_unsigned",
        lambda a, c: user(a, c, server_id=None).with_header("X-Issuer-Server-ID", SERVER_ID),
    ),
    Refusal("server id of another service", "sts_server_id_mismatch", lambda a, c: user(a, c, server_id="other")),
    Refusal("CSR hash missing", "sts_csr_binding_missing", lambda a, c: user(a, None)),
    Refusal(
        "CSR hash unsigned",
        "sts_csr_binding_unsigned",
        lambda a, c: user(a, None).with_header("X-Issuer-CSR-SHA256", csr_sha256(c)),
    ),
    Refusal("CSR hash of another CSR", "sts_csr_binding_mismatch", lambda a, c: user(a, new_csr()[1])),
    Refusal("signed 16 minutes ago", "sts_date_skew", lambda a, c: user(a, c, now=datetime.now(UTC) - SKEWED)),
    Refusal("principal not in principal_arns", "binding_mismatch", user, status=403, role="ecs-tasks"),
    Refusal("unknown role", "role_unknown", user, status=400, role="no-such-role"),
    Refusal("no role named, several aws-iam roles", "role_required", user, status=400, role=None),
]


async def test_refusals_name_their_code_and_issue_nothing(
    tmp_path: Path, pg_url: str, aws: MotoIam, subtests: pytest.Subtests
) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(to_moto(aws))) as h:
        for case in REFUSALS:
            with subtests.test(case.name, code=case.code):
                _, csr = new_csr()
                body = issue_body(csr, case.role, native(case.signed(aws, csr)))
                problem, row = await refused(h, body, status=case.status, code=case.code)
                if case.code == "binding_mismatch":
                    # The audit row knows who it was; the client is not told which binding failed.
                    assert row.principal == aws.user_arn and row.role == "ecs-tasks"
                    assert aws.user_arn not in problem["detail"] and "principal_arns" not in problem["detail"]
                    assert "principal_arns" in (row.reason or "")
                if case.code == "sts_rejected":
                    assert "SignatureDoesNotMatch" in (row.reason or "")
        assert await h.certificates() == []


# --- single use ---------------------------------------------------------------------------------


@dataclass
class CountingCaller:
    """The real STS caller, counting the calls the service makes through the seam."""

    inner: StsCaller
    calls: int = 0

    async def get_caller_identity(self, request: ValidatedStsRequest) -> CallerIdentity:
        self.calls += 1
        return await self.inner.get_caller_identity(request)


@pytest.fixture
async def counting_moto(aws: MotoIam) -> AsyncIterator[CountingCaller]:
    async with aiohttp.ClientSession(trust_env=False) as http:
        yield CountingCaller(AiohttpStsCaller(session=http, endpoint_overrides=to_moto(aws)))


async def test_a_signed_request_is_single_use(
    tmp_path: Path, db_url: str, aws: MotoIam, counting_moto: CountingCaller
) -> None:
    async with running_issuer(tmp_path, db_url, config=config({}), sts_caller=counting_moto) as h:
        key, csr = new_csr()
        body = issue_body(csr, "ecs-tasks", native(sign(aws.role, csr)))
        status, issued = await h.post(PATH, body)
        assert status == 201, issued
        check_issued(issued, key=key)
        await refused(h, body, status=401, code="sts_replayed")
        assert counting_moto.calls == 1  # the replay never reached STS
        assert len(await h.certificates()) == 1

        # Burned even when the issuance then fails: STS accepts the user, the role's binding does not.
        _, csr2 = new_csr()
        denied = issue_body(csr2, "ecs-tasks", native(sign(aws.user, csr2)))
        await refused(h, denied, status=403, code="binding_mismatch")
        await refused(h, denied, status=401, code="sts_replayed")
        assert counting_moto.calls == 2


async def test_concurrent_replays_reach_sts_once(
    tmp_path: Path, pg_url: str, aws: MotoIam, counting_moto: CountingCaller
) -> None:
    async with running_issuer(tmp_path, pg_url, config=config({}), sts_caller=counting_moto) as h:
        _, csr = new_csr()
        body = issue_body(csr, "ecs-tasks", native(sign(aws.role, csr)))
        results = await asyncio.gather(*(h.post(PATH, body) for _ in range(6)))
        assert sorted(status for status, _ in results) == [201] + [401] * 5, results
        assert {b["code"] for status, b in results if status == 401} == {"sts_replayed"}
        assert counting_moto.calls == 1
        assert len(await h.certificates()) == 1


class GatheringSigner:
    """The real CA signer, holding each ``issue`` until ``expected`` issuances wait, so that many
    issuance transactions go on to record at once (N tasks of one ECS service scaling out)."""

    def __init__(self, inner: Signer, *, expected: int) -> None:
        self.inner = inner
        self._barrier = asyncio.Barrier(expected)

    @property
    def issuer_certificate(self) -> x509.Certificate:
        return self.inner.issuer_certificate

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self.inner.chain

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self.inner.roots

    @property
    def capabilities(self) -> SignerCapabilities:
        return self.inner.capabilities

    async def issue(self, request: SigningRequest) -> IssuedCertificate:
        async with asyncio.timeout(20):  # fewer arrivals than expected: fail, do not hang
            await self._barrier.wait()
        return await self.inner.issue(request)

    async def revoke(self, serial: int, *, reason: x509.ReasonFlags | None) -> None:
        await self.inner.revoke(serial, reason=reason)

    async def health(self) -> SignerHealth:
        return await self.inner.health()


async def test_concurrent_first_issuances_for_one_role_all_succeed(tmp_path: Path, pg_url: str, aws: MotoIam) -> None:
    # Every task of an ECS service is the same principal; their first issuances meet in the
    # identities table (a unique (method, principal)) and must not turn into 500s.
    write_ca(tmp_path / "state")
    signer = load_local_signer(tmp_path / "state" / "ca", passphrase=PASSPHRASE.encode())
    tasks = 4
    gathering = GatheringSigner(signer, expected=tasks)
    async with running_issuer(tmp_path, pg_url, config=config(to_moto(aws)), signer=gathering) as h:
        csrs = [new_csr()[1] for _ in range(tasks)]
        results = await asyncio.gather(
            *(h.post(PATH, issue_body(csr, "ecs-tasks", native(sign(aws.role, csr)))) for csr in csrs)
        )
        assert [status for status, _ in results] == [201] * tasks, [b.get("code") for _, b in results]
        assert len(await h.certificates()) == tasks
        assert [a.outcome for a in await h.attestations()] == ["success"] * tasks
        async with h.service.sessions() as session:
            principals = (await session.scalars(select(Identity.principal))).all()
        assert principals == [aws.canonical_role_arn]


# --- a scripted STS: what must never reach it, and what it does wrong ---------------------------


@dataclass
class FakeSts:
    server: TestServer
    hits: Counter[str]

    def url(self, behaviour: str) -> str:
        return str(self.server.make_url(f"/{behaviour}"))


FAKE_USER_ARN = f"arn:aws:iam::{ACCOUNT_ID}:user/onprem/fake-sts-user"
OK_XML = (
    '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>'
    f"<Arn>{FAKE_USER_ARN}</Arn><UserId>AIDAFAKESTSUSER</UserId><Account>{ACCOUNT_ID}</Account>"
    "</GetCallerIdentityResult></GetCallerIdentityResponse>"
)


@pytest.fixture
async def fake_sts() -> AsyncIterator[FakeSts]:
    hits: Counter[str] = Counter()
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        behaviour = request.match_info["behaviour"]
        hits[behaviour] += 1
        if behaviour in ("ok", "target"):
            return web.Response(text=OK_XML, content_type="text/xml")
        if behaviour == "redirect":
            raise web.HTTPTemporaryRedirect(location="/target/")
        if behaviour == "error500":
            return web.Response(
                status=500, text="<ErrorResponse><Error><Code>InternalFailure</Code></Error></ErrorResponse>"
            )
        await release.wait()  # "hang": no answer while the test runs
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{behaviour}/", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield FakeSts(server=server, hits=hits)
    finally:
        release.set()
        await server.close()


def _get(csr: str) -> SignedStsRequest:
    # An attacker's GET (the form with the query in the URL); the method alone must stop it.
    return replace(sign(FAKE_KEY, csr), method="GET")


EVIL_HOST = "sts.amazonaws.com.evil.example"
QUERY_URL = "https://sts.amazonaws.com/?Action=GetCallerIdentity"
OTHER_ACTION = b"Action=GetSessionToken&Version=2011-06-15"
LOCAL_REFUSALS: list[tuple[str, str, Callable[[str], SignedStsRequest]]] = [
    ("host not on the allowlist", "sts_host_not_allowed", lambda csr: sign(FAKE_KEY, csr, host=EVIL_HOST)),
    ("query string", "sts_url_invalid", lambda csr: sign(FAKE_KEY, csr, url=QUERY_URL)),
    ("another action", "sts_body_invalid", lambda csr: sign(FAKE_KEY, csr, body=OTHER_ACTION)),
    ("GET", "sts_method_not_allowed", _get),
    ("credential scope not sts", "sts_scope_invalid", lambda csr: sign(FAKE_KEY, csr, service="iam")),
]


async def test_local_refusals_make_no_outbound_call(
    tmp_path: Path, pg_url: str, fake_sts: FakeSts, subtests: pytest.Subtests
) -> None:
    # Every host, even the one STS's allowlist does not know, leads to the counting fake: had a
    # request got past validation, the service would have sent it there.
    overrides = {host: fake_sts.url("ok") for host in ("sts.amazonaws.com", EVIL_HOST)}
    async with running_issuer(tmp_path, pg_url, config=config(overrides)) as h:
        for name, code, build in LOCAL_REFUSALS:
            with subtests.test(name, code=code):
                _, csr = new_csr()
                before = sum(fake_sts.hits.values())
                await refused(h, issue_body(csr, "builders", native(build(csr))), status=401, code=code)
                assert sum(fake_sts.hits.values()) == before == 0
        assert await h.certificates() == []

        # The counter is live: a valid request through the same configuration reaches it once.
        _, csr = new_csr()
        status, body = await h.post(PATH, issue_body(csr, "builders", native(sign(FAKE_KEY, csr))))
        assert status == 201, body
        assert body["identity"]["principal"] == FAKE_USER_ARN
        assert fake_sts.hits == Counter({"ok": 1})


async def test_sts_failures_are_503_with_retry_after(
    tmp_path: Path, pg_url: str, fake_sts: FakeSts, subtests: pytest.Subtests
) -> None:
    hosts = {
        "error500": ("sts.us-east-1.amazonaws.com", "us-east-1"),
        "hang": ("sts.us-west-2.amazonaws.com", "us-west-2"),
        "redirect": ("sts.eu-west-1.amazonaws.com", "eu-west-1"),
    }
    overrides = {host: fake_sts.url(behaviour) for behaviour, (host, _) in hosts.items()}
    async with running_issuer(tmp_path, pg_url, config=config(overrides, timeout="1s")) as h:
        for behaviour, (host, region) in hosts.items():
            with subtests.test(behaviour):
                _, csr = new_csr()
                body = issue_body(csr, "builders", native(sign(FAKE_KEY, csr, host=host, region=region)))
                # A guard, not a measurement: a service that ignored its STS timeout fails here
                # instead of hanging the suite.
                async with asyncio.timeout(30):
                    resp = await h.client.post(PATH, json=body)
                problem = await resp.json(content_type=None)
                assert (resp.status, problem["code"]) == (503, "sts_unavailable"), problem
                assert resp.headers["Content-Type"].startswith("application/problem+json")
                assert resp.headers["Retry-After"] == "5"
                row = await audit_row(h, problem["request_id"])
                assert (row.outcome, row.code) == ("failure", "sts_unavailable")
                assert fake_sts.hits[behaviour] == 1
                reason = row.reason or ""
                if behaviour == "hang":
                    assert "within 1.0s" in reason  # the configured timeout, not the 5 s default
                elif behaviour == "redirect":
                    assert "307" in reason
                    assert fake_sts.hits["target"] == 0  # the target would have answered 200
                else:
                    assert "500" in reason
        assert await h.certificates() == []
