"""The per-identity rate limit: 429 ``rate_limited`` with ``Retry-After`` once an identity has used
its bucket, keyed by what the proof proved (the join token's name, the IAM principal, the EC2
instance, and for a renewal the principal of the certificate renewed), audited like any refusal,
and harmless to a join token (a limited request does not spend it).

Most tests pass their own limiter with a clock the test moves; one goes through
``[issuer] rate_limit`` and the real clock.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from issuer.attest.ec2_certs import AwsCertStore
from issuer.policy.ratelimit import RateLimit, TokenBucketLimiter
from issuer.store.models import Attestation
from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign
from tests.support.harness import Harness, new_csr, running_issuer
from tests.support.metrics_scrape import Scrape
from tests.support.renewal_token import renewal_token
from tests.support.scripted_sts import IAM_ROLE, SERVER_ID, USER_ARN, ScriptedSts, iam_request, scripted_sts
from tests.support.x509_check import make_csr

TOKEN = "/v1/issue/token"
EC2 = "/v1/issue/aws-ec2"
IAM = "/v1/issue/aws-iam"


def config(*, rate_limit: str | None = None, sts_url: str = "http://127.0.0.1:9/") -> str:
    limit = f'rate_limit = "{rate_limit}"' if rate_limit else ""
    return f"""
[issuer]
trust_domain = "test.example"
server_id = "{SERVER_ID}"
{limit}

[aws.sts]
endpoint_overrides = {{ "sts.amazonaws.com" = "{sts_url}" }}

[[roles]]
name = "onprem"
methods = ["token"]
ttl = "1h"

[[roles]]
name = "fleet"
methods = ["aws-ec2"]
allow_unbounded_documents = true
{IAM_ROLE}
"""


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def aws() -> FakeAwsSigner:
    return FakeAwsSigner.create(kind="rsa2048")


@pytest.fixture(scope="module")
def aws_certs(aws: FakeAwsSigner) -> AwsCertStore:
    return AwsCertStore.builtin(extra={"eu-west-1": [aws.cert]})


@pytest.fixture
async def sts() -> Any:
    async with scripted_sts() as s:
        yield s


def ec2_request(aws: FakeAwsSigner, instance_id: str, *, nonce: str | None = None) -> dict[str, str]:
    document = build_document(instance_id=instance_id)
    body = {"csr": new_csr()[1], "document": document.decode(), "rsa2048": sign(document, aws, "rsa2048")}
    if nonce is not None:
        body["nonce"] = nonce
    return body


async def limited(h: Harness, path: str, body: object, **headers: str) -> tuple[dict[str, Any], Attestation]:
    """POST and assert a 429 ``rate_limited`` problem with Retry-After and its failure audit row."""
    resp = await h.client.post(path, data=json.dumps(body), headers={"Content-Type": "application/json", **headers})
    problem = await resp.json(content_type=None)
    assert (resp.status, problem["code"]) == (429, "rate_limited"), problem
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.headers["Retry-After"].isdigit() and int(resp.headers["Retry-After"]) >= 1
    (row,) = [a for a in await h.attestations() if a.request_id == problem["request_id"]]
    assert (row.outcome, row.code, row.certificate_serial) == ("failure", "rate_limited", None)
    assert [c for c in await h.certificates() if c.request_id == problem["request_id"]] == []
    return problem, row


async def test_the_setting_limits_each_token_name(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(rate_limit="2/h")) as h:
        for _ in range(2):
            status, body = await h.post(TOKEN, {"csr": new_csr()[1], "token": await h.token(name="edge-1")})
            assert status == 201, body
        third = await h.token(name="edge-1")
        problem, row = await limited(h, TOKEN, {"csr": new_csr()[1], "token": third})
        assert (row.principal, row.role) == ("edge-1", "onprem")
        assert "edge-1" not in problem["detail"]  # the client learns no more than "too many"
        resp = await h.client.post(TOKEN, json={"csr": new_csr()[1], "token": third})
        assert 1 <= int(resp.headers["Retry-After"]) <= 1800  # one request per 30 minutes comes back
        # Another machine is not affected.
        status, body = await h.post(TOKEN, {"csr": new_csr()[1], "token": await h.token(name="edge-2")})
        assert status == 201, body


async def test_off_means_no_limit(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(rate_limit="off")) as h:
        for _ in range(12):
            status, body = await h.post(TOKEN, {"csr": new_csr()[1], "token": await h.token(name="edge-1")})
            assert status == 201, body


async def test_a_limited_join_token_is_not_spent(tmp_path: Path, pg_url: str) -> None:
    clock = Ticker()
    limiter = TokenBucketLimiter(RateLimit(1, timedelta(minutes=1)), clock=clock)
    async with running_issuer(tmp_path, pg_url, config=config(), rate_limiter=limiter) as h:
        status, body = await h.post(TOKEN, {"csr": new_csr()[1], "token": await h.token(name="a")})
        assert status == 201, body
        token = await h.token(name="a")
        await limited(h, TOKEN, {"csr": new_csr()[1], "token": token})
        clock.now += 60
        status, body = await h.post(TOKEN, {"csr": new_csr()[1], "token": token})
        assert status == 201, body
        metrics = Scrape.parse(await (await h.client.get("/metrics")).text())
        assert metrics.total("issuer_rate_limited_total", method="token") == 1
        assert metrics.total("issuer_issuances_total", method="token", code="rate_limited", role="onprem") == 1
        assert metrics.total("issuer_issuances_total", method="token", outcome="issued") == 2


async def test_iam_is_limited_by_principal_after_sts_has_named_it(
    tmp_path: Path, pg_url: str, sts: ScriptedSts
) -> None:
    clock = Ticker()
    limiter = TokenBucketLimiter(RateLimit(1, timedelta(minutes=1)), clock=clock)
    async with running_issuer(tmp_path, pg_url, config=config(sts_url=sts.url("ok")), rate_limiter=limiter) as h:
        status, body = await h.post(IAM, iam_request(new_csr()[1]))
        assert status == 201, body
        _, row = await limited(h, IAM, iam_request(new_csr()[1]))
        assert (row.method, row.principal, row.role) == ("aws-iam", USER_ARN, "builders")
        assert sts.hits["ok"] == 2  # the principal is known only from STS's answer
        clock.now += 60
        status, body = await h.post(IAM, iam_request(new_csr()[1]))
        assert status == 201, body


async def test_ec2_is_limited_by_instance(
    tmp_path: Path, pg_url: str, aws: FakeAwsSigner, aws_certs: AwsCertStore
) -> None:
    clock = Ticker()
    limiter = TokenBucketLimiter(RateLimit(1, timedelta(minutes=1)), clock=clock)
    async with running_issuer(tmp_path, pg_url, config=config(), rate_limiter=limiter, aws_certs=aws_certs) as h:
        status, first = await h.post(EC2, ec2_request(aws, "i-0aaaaaaaaaaaaaaa1"))
        assert status == 201, first
        _, row = await limited(h, EC2, ec2_request(aws, "i-0aaaaaaaaaaaaaaa1", nonce=first["nonce"]))
        assert (row.method, row.principal) == ("aws-ec2", "i-0aaaaaaaaaaaaaaa1")
        status, other = await h.post(EC2, ec2_request(aws, "i-0bbbbbbbbbbbbbbb2"))
        assert status == 201, other
        clock.now += 60
        status, again = await h.post(EC2, ec2_request(aws, "i-0aaaaaaaaaaaaaaa1", nonce=first["nonce"]))
        assert status == 201, again


async def test_a_renewal_counts_against_the_certificates_principal(tmp_path: Path, pg_url: str) -> None:
    clock = Ticker()
    limiter = TokenBucketLimiter(RateLimit(1, timedelta(minutes=1)), clock=clock)
    async with running_issuer(tmp_path, pg_url, config=config(), rate_limiter=limiter) as h:
        key, csr = new_csr()
        status, body = await h.post(TOKEN, {"csr": csr, "token": await h.token(name="edge-9")})
        assert status == 201, body
        certificate = x509.load_pem_x509_certificate(body["certificate"].encode())

        def renewal() -> tuple[dict[str, str], dict[str, str]]:
            new_csr_pem = make_csr(ec.generate_private_key(ec.SECP256R1())).decode()
            token = renewal_token(key, certificate, csr_pem=new_csr_pem, audience=SERVER_ID)
            return {"csr": new_csr_pem}, {"Authorization": f"Bearer {token}"}

        request, headers = renewal()
        _, row = await limited(h, "/v1/renew", request, **headers)
        assert (row.method, row.principal) == ("renew", "edge-9")
        clock.now += 60
        request, headers = renewal()
        resp = await h.client.post("/v1/renew", json=request, headers=headers)
        assert resp.status == 201, await resp.text()
