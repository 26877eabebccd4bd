"""Faults under load: Postgres going away mid-load, STS slow, hanging or down, the signer unavailable.

What must hold in each: every answer is a certificate (201) or a problem+json 503 with
``Retry-After`` (never a 500); no certificate leaves without being recorded; readiness says
so while a dependency is down; the service recovers by itself; a join token whose request
failed still works; and the methods that do not need the failed peer carry on.

Postgres "stops" through a TCP proxy the test cuts (``tests/support/tcp_proxy.py``); STS is a
scripted aiohttp app (``tests/support/scripted_sts.py``); the signer is the real CA key behind
switches (``tests/support/scripted_signer.py``). Nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse

from issuer.attest.ec2_certs import AwsCertStore
from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign
from tests.support.harness import Harness, new_csr, running_issuer
from tests.support.metrics_scrape import Scrape
from tests.support.moto_server import free_port
from tests.support.scripted_signer import ScriptedSigner
from tests.support.scripted_sts import IAM_ROLE, SERVER_ID, ScriptedSts, iam_request, scripted_sts
from tests.support.tcp_proxy import proxied_database

TOKEN = "/v1/issue/token"
EC2 = "/v1/issue/aws-ec2"
IAM = "/v1/issue/aws-iam"
JSON = {"Content-Type": "application/json"}


def config(sts: dict[str, str] | None = None, *, timeout: str = "5s") -> str:
    overrides = ", ".join(f'"{host}" = "{url}"' for host, url in (sts or {}).items())
    return f"""
[issuer]
trust_domain = "test.example"
server_id = "{SERVER_ID}"

[aws.sts]
timeout = "{timeout}"
endpoint_overrides = {{ {overrides} }}

[[roles]]
name = "onprem"
methods = ["token"]

[[roles]]
name = "fleet"
methods = ["aws-ec2"]
allow_unbounded_documents = true
{IAM_ROLE}
"""


@pytest.fixture(scope="module")
def aws() -> FakeAwsSigner:
    return FakeAwsSigner.create(kind="rsa2048")


@pytest.fixture(scope="module")
def aws_certs(aws: FakeAwsSigner) -> AwsCertStore:
    return AwsCertStore.builtin(extra={"eu-west-1": [aws.cert]})


@pytest.fixture
async def sts() -> AsyncIterator[ScriptedSts]:
    async with scripted_sts() as s:
        yield s


async def answer(resp: ClientResponse) -> tuple[int, dict[str, Any]]:
    """The status and JSON body; a 503 must be problem+json with a Retry-After."""
    body = await resp.json(content_type=None)
    if resp.status == 503:
        assert resp.headers["Content-Type"].startswith("application/problem+json"), body
        assert resp.headers["Retry-After"].isdigit(), resp.headers
        assert body["request_id"] == resp.headers["X-Request-ID"]
    return resp.status, body


async def issue_token(h: Harness, token: str) -> tuple[int, dict[str, Any]]:
    return await answer(
        await h.client.post(TOKEN, data=json.dumps({"csr": new_csr()[1], "token": token}), headers=JSON)
    )


def ec2_request(aws: FakeAwsSigner, instance_id: str) -> dict[str, str]:
    document = build_document(instance_id=instance_id)
    return {"csr": new_csr()[1], "document": document.decode(), "rsa2048": sign(document, aws, "rsa2048")}


async def scrape(h: Harness) -> Scrape:
    resp = await h.client.get("/metrics")
    assert resp.status == 200
    return Scrape.parse(await resp.text())


# -- the database --------------------------------------------------------------------------------


async def test_postgres_going_away_mid_load(tmp_path: Path, pg_url: str) -> None:
    load = 16
    signer = ScriptedSigner.for_state(tmp_path)
    async with proxied_database(pg_url) as (proxy, url), running_issuer(tmp_path, url, signer=signer) as h:
        tokens = [await h.token(name=f"load-{i}") for i in range(load)]
        cut = asyncio.Event()
        done: list[int] = []
        some_issued = asyncio.Event()

        async def request(token: str) -> tuple[int, dict[str, Any]]:
            result = await issue_token(h, token)
            done.append(result[0])
            if done.count(201) >= 3:
                some_issued.set()
            return result

        async def cut_mid_load(arrived: int) -> None:
            # Mid-load: some requests have their certificate already, this one is signed but not
            # recorded, and the others are anywhere between reading their body and committing.
            if arrived == load // 2:
                async with asyncio.timeout(30):
                    await some_issued.wait()
                await proxy.cut()
                cut.set()

        signer.before_issue = cut_mid_load
        async with asyncio.timeout(60):
            results = await asyncio.gather(*(request(token) for token in tokens))
        assert cut.is_set()
        statuses = [status for status, _ in results]
        assert set(statuses) <= {201, 503}, results
        assert 201 in statuses and 503 in statuses, "the cut came mid-load"
        assert {body["code"] for status, body in results if status == 503} == {"database_unavailable"}

        # While it is down: not ready (and saying why), metrics still answer.
        resp = await h.client.get("/readyz")
        problem = await resp.json(content_type=None)
        assert (resp.status, problem["code"]) == (503, "not_ready")
        assert "database: unavailable" in problem["detail"] and resp.headers["Retry-After"].isdigit()
        assert (await h.client.get("/metrics")).status == 200
        status, body = await issue_token(h, tokens[0])
        assert (status, body["code"]) == (503, "database_unavailable")

        await proxy.restore()
        for _ in range(300):  # recovery by itself, no restart, no operator (bounded: 30 s)
            if (await h.client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("not ready 30 s after the database came back")

        recorded = {c.serial: c for c in await h.certificates()}
        issued = {body["serial"] for status, body in results if status == 201}
        assert issued <= set(recorded), "a certificate left without being recorded"
        # Recorded but not handed out: only where the commit reached Postgres and the
        # acknowledgement was lost; the client was told 503 under that request id.
        failed_ids = {body["request_id"] for status, body in results if status == 503}
        assert {recorded[s].request_id for s in set(recorded) - issued} <= failed_ids
        # Every failed request's token still works (unless its commit went through, as above).
        retried = 0
        for token, (status, body) in zip(tokens, results, strict=True):
            if status != 503:
                continue
            committed = any(c.request_id == body["request_id"] for c in recorded.values())
            again, again_body = await issue_token(h, token)
            if committed:
                assert (again, again_body["code"]) == (401, "token_used")
            else:
                assert again == 201, again_body
                retried += 1
        assert retried >= 1


# -- STS -----------------------------------------------------------------------------------------


async def test_a_slow_or_down_sts_fails_only_iam_while_token_and_ec2_carry_on(
    tmp_path: Path, pg_url: str, sts: ScriptedSts, aws: FakeAwsSigner, aws_certs: AwsCertStore
) -> None:
    down = f"http://127.0.0.1:{free_port()}/"  # nothing listens: connection refused
    overrides = {"sts.amazonaws.com": sts.url("hold"), "sts.us-west-2.amazonaws.com": down}
    async with running_issuer(tmp_path, pg_url, config=config(overrides, timeout="60s"), aws_certs=aws_certs) as h:
        waiting = [asyncio.create_task(h.client.post(IAM, json=iam_request(new_csr()[1]))) for _ in range(4)]
        await sts.arrivals("hold", 4)  # every IAM request now waits on STS

        tokens = [await h.token(name=f"edge-{i}") for i in range(3)]
        for token in tokens:
            status, body = await issue_token(h, token)
            assert status == 201, body
        for i in range(3):
            resp = await h.client.post(EC2, json=ec2_request(aws, f"i-0c0ffee00000000{i}"))
            assert resp.status == 201, await resp.text()
        assert (await h.client.get("/readyz")).status == 200  # STS is not a readiness dependency
        assert not any(task.done() for task in waiting)

        sts.release.set()  # STS answers at last, with a 500
        for task in waiting:
            status, body = await answer(await task)
            assert (status, body["code"]) == (503, "sts_unavailable"), body
        status, body = await answer(
            await h.client.post(
                IAM, json=iam_request(new_csr()[1], host="sts.us-west-2.amazonaws.com", region="us-west-2")
            )
        )
        assert (status, body["code"]) == (503, "sts_unavailable"), body

        rows = [(a.method, a.outcome, a.code) for a in await h.attestations()]
        assert rows.count(("aws-iam", "failure", "sts_unavailable")) == 5
        assert rows.count(("token", "success", None)) == 3 and rows.count(("aws-ec2", "success", None)) == 3
        metrics = await scrape(h)
        assert metrics.total("issuer_upstream_errors_total", service="sts", code="sts_unavailable") == 5
        assert metrics.total("issuer_upstream_request_duration_seconds_count", service="sts", outcome="error") == 5
        assert metrics.total("issuer_issuances_total", method="aws-iam", code="sts_unavailable") == 5


async def test_a_hanging_sts_is_cut_at_its_timeout(tmp_path: Path, pg_url: str, sts: ScriptedSts) -> None:
    overrides = {"sts.amazonaws.com": sts.url("hang")}
    async with running_issuer(tmp_path, pg_url, config=config(overrides, timeout="1s")) as h:
        tokens = [await h.token(name=f"edge-{i}") for i in range(3)]
        async with asyncio.timeout(30):  # a guard, not a measurement: a service ignoring its timeout fails here
            iam = asyncio.gather(*(h.client.post(IAM, json=iam_request(new_csr()[1])) for _ in range(3)))
            issued = await asyncio.gather(*(issue_token(h, token) for token in tokens))
            hung = await iam
        assert [status for status, _ in issued] == [201, 201, 201]
        for resp in hung:
            status, body = await answer(resp)
            assert (status, body["code"], resp.headers["Retry-After"]) == (503, "sts_unavailable", "5"), body
        reasons = [a.reason or "" for a in await h.attestations() if a.code == "sts_unavailable"]
        assert len(reasons) == 3 and all("within 1.0s" in r for r in reasons)


# -- the signer ----------------------------------------------------------------------------------


async def test_an_unavailable_signer_fails_readiness_and_issuance_with_retry_after(tmp_path: Path, pg_url: str) -> None:
    signer = ScriptedSigner.for_state(tmp_path)
    async with running_issuer(tmp_path, pg_url, signer=signer) as h:
        resp = await h.client.get("/readyz")
        assert resp.status == 200 and (await resp.json())["checks"]["signer"] == "ok"
        assert signer.checks == 1  # readiness asks a signer that can be asked

        signer.down = True  # what the KMS signer raises when KMS is throttled or unreachable
        resp = await h.client.get("/readyz")
        problem = await resp.json(content_type=None)
        assert (resp.status, problem["code"]) == (503, "not_ready")
        assert "signer: unavailable" in problem["detail"] and "database: ok" in problem["detail"]
        token = await h.token()
        status, body = await issue_token(h, token)
        assert (status, body["code"]) == (503, "ca_signer_unavailable"), body
        (row,) = await h.attestations()
        assert (row.outcome, row.code, row.principal) == ("failure", "ca_signer_unavailable", "machine-1")
        assert await h.certificates() == []

        signer.down = False  # back by itself; the token was not spent
        assert (await h.client.get("/readyz")).status == 200
        status, body = await issue_token(h, token)
        assert status == 201, body


async def test_a_signer_check_that_hangs_fails_readiness(tmp_path: Path, pg_url: str) -> None:
    signer = ScriptedSigner.for_state(tmp_path)
    async with running_issuer(tmp_path, pg_url, signer=signer) as h:
        signer.hang_check = True
        async with asyncio.timeout(30):  # a guard: the check's own timeout is 2 s
            resp = await h.client.get("/readyz")
        problem = await resp.json(content_type=None)
        assert (resp.status, problem["code"]) == (503, "not_ready")
        assert "signer: unavailable" in problem["detail"]
        assert (await h.client.get("/healthz")).status == 200  # alive, just not ready
