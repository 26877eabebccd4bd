"""What a renewal spends, and when: a 429 leaves the proof-of-possession token usable (as it leaves a
join token), a replayed token costs the machine's rate-limit bucket nothing, the token is burnt before
the one outbound call; and no key this identity ever had a certificate for comes back.

Real app on a migrated Postgres; the rate limiter gets a clock the test moves, the EC2 lookup is the
injected seam (counted), everything else is real.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.engine import make_url

from issuer.attest.ec2_certs import AwsCertStore
from issuer.attest.ec2_instance import InstanceInfo
from issuer.policy.ratelimit import RateLimit, TokenBucketLimiter
from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign
from tests.support.harness import Harness, new_csr, running_issuer
from tests.support.renewal_token import renewal_token
from tests.support.x509_check import make_csr

AUDIENCE = "issuer.test.example"
CONFIG = f"""
[issuer]
trust_domain = "test.example"
server_id = "{AUDIENCE}"

[[roles]]
name = "edge"
methods = ["token"]
ttl = "1h"

[[roles]]
name = "fleet"
methods = ["aws-ec2"]
check_instance = true
"""


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountedLookup:
    """The injected InstanceLookup: a running instance, and how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def describe(self, *, account_id: str, region: str, instance_id: str) -> InstanceInfo | None:
        self.calls += 1
        return InstanceInfo(
            instance_id=instance_id,
            state="running",
            image_id="ami-0abcdef1234567890",
            vpc_id=None,
            subnet_id=None,
            instance_profile_arn=None,
        )


def limiter(clock: Ticker, count: int = 1) -> TokenBucketLimiter:
    return TokenBucketLimiter(RateLimit(count, timedelta(minutes=1)), clock=clock)


def renewal(key: Any, certificate: x509.Certificate, new_key: Any = None) -> tuple[dict[str, str], dict[str, str], Any]:
    """A renewal request for a new key (or ``new_key``) vouched for by ``key``'s ``certificate``."""
    new_key = new_key or ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(new_key).decode()
    token = renewal_token(key, certificate, csr_pem=csr, audience=AUDIENCE)
    return {"csr": csr}, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, new_key


async def post(h: Harness, body: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    resp = await h.client.post("/v1/renew", data=json.dumps(body), headers=headers)
    return resp.status, await resp.json(content_type=None)


def cert_of(body: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(body["certificate"].encode())


async def bootstrap(h: Harness, name: str = "edge-1") -> tuple[Any, dict[str, Any]]:
    key, csr = new_csr()
    status, body = await h.post("/v1/issue/token", {"csr": csr, "token": await h.token(role="edge", name=name)})
    assert status == 201, body
    return key, body


async def test_a_renewal_refused_with_429_leaves_its_token_usable(tmp_path: Path, pg_url: str) -> None:
    clock = Ticker()
    async with running_issuer(tmp_path, pg_url, config=CONFIG, rate_limiter=limiter(clock)) as h:
        key, first = await bootstrap(h)  # the bucket of edge-1 is empty now
        body, headers, _ = renewal(key, cert_of(first))
        status, problem = await post(h, body, headers)
        assert (status, problem["code"]) == (429, "rate_limited")
        clock.now += 60
        status, renewed = await post(h, body, headers)  # the very same request, token and all
        assert status == 201, renewed
        assert renewed["renewed_from"] == first["serial"]
        status, problem = await post(h, body, headers)  # and now it is spent
        assert (status, problem["code"]) == (401, "renew_token_replayed")


async def test_a_replayed_token_costs_the_machine_nothing(tmp_path: Path, pg_url: str) -> None:
    clock = Ticker()
    async with running_issuer(tmp_path, pg_url, config=CONFIG, rate_limiter=limiter(clock, count=2)) as h:
        key, first = await bootstrap(h)
        body, headers, new_key = renewal(key, cert_of(first))
        status, second = await post(h, body, headers)
        assert status == 201, second  # two of two spent
        clock.now += 30  # one back
        for _ in range(3):  # a stolen, spent token replayed: refused before the rate limit is asked
            status, problem = await post(h, body, headers)
            assert (status, problem["code"]) == (401, "renew_token_replayed")
        body, headers, _ = renewal(new_key, cert_of(second))
        status, third = await post(h, body, headers)
        assert status == 201, third  # the machine's own renewal still has its token


async def test_the_token_is_burnt_before_aws_is_asked_and_a_429_never_asks(tmp_path: Path, pg_url: str) -> None:
    aws = FakeAwsSigner.create(kind="rsa2048")
    lookup = CountedLookup()
    clock = Ticker()
    async with running_issuer(
        tmp_path,
        pg_url,
        config=CONFIG,
        rate_limiter=limiter(clock),
        aws_certs=AwsCertStore.builtin(extra={"eu-west-1": [aws.cert]}),
        instance_lookups=lambda assume_role, region: lookup,
    ) as h:
        document = build_document(region="eu-west-1", pending_time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        key, csr = new_csr()
        status, issued = await h.post(
            "/v1/issue/aws-ec2", {"csr": csr, "document": document.decode(), "rsa2048": sign(document, aws, "rsa2048")}
        )
        assert status == 201, issued
        asked = lookup.calls
        body, headers, _ = renewal(key, cert_of(issued))
        status, problem = await post(h, body, headers)
        assert (status, problem["code"]) == (429, "rate_limited")
        assert lookup.calls == asked  # limited before anything left the process
        clock.now += 60
        status, renewed = await post(h, body, headers)
        assert status == 201, renewed
        assert lookup.calls == asked + 1
        clock.now += 60
        status, problem = await post(h, body, headers)
        assert (status, problem["code"]) == (401, "renew_token_replayed")
        assert lookup.calls == asked + 1  # a replay never reaches AWS


async def test_two_concurrent_uses_of_one_token_only_one_wins(tmp_path: Path, pg_url: str) -> None:
    clock = Ticker()
    async with running_issuer(tmp_path, pg_url, config=CONFIG, rate_limiter=limiter(clock, count=3)) as h:
        key, first = await bootstrap(h)
        body, headers, _ = renewal(key, cert_of(first))
        results = await asyncio.gather(*(post(h, body, headers) for _ in range(2)))
        outcomes = sorted(str(status) if status == 201 else problem["code"] for status, problem in results)
        # The loser is refused by whichever guard it meets first: the burnt token, the superseded
        # certificate, or (the winner committed meanwhile) its key that now has a certificate.
        losers = ("renew_token_replayed", "certificate_superseded", "renew_key_reused")
        assert outcomes[0] == "201" and outcomes[1] in losers, results
        assert len([c for c in await h.certificates() if c.status == "active"]) == 1


async def test_a_key_from_earlier_in_the_chain_never_comes_back(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        key0, first = await bootstrap(h)
        body, headers, key1 = renewal(key0, cert_of(first))
        status, second = await post(h, body, headers)
        assert status == 201, second
        body, headers, key2 = renewal(key1, cert_of(second))
        status, third = await post(h, body, headers)
        assert status == 201, third

        for old_key in (key0, key1):  # two renewals back, and one back
            body, headers, _ = renewal(key2, cert_of(third), new_key=old_key)
            status, problem = await post(h, body, headers)
            assert (status, problem["code"]) == (400, "renew_key_reused"), problem
        body, headers, _ = renewal(key2, cert_of(third), new_key=key2)
        status, problem = await post(h, body, headers)
        assert (status, problem["code"]) == (400, "renew_same_key")
        assert {c.serial: c.status for c in await h.certificates()}[third["serial"]] == "active"
        rows = [a for a in await h.attestations() if a.code == "renew_key_reused"]
        assert len(rows) == 2 and all(
            r.principal == "edge-1" and "earlier certificate" in (r.reason or "") for r in rows
        )

        # Another machine's old key is not this identity's: that is not what the rule is about.
        other_key, _ = await bootstrap(h, name="edge-2")
        body, headers, _ = renewal(key2, cert_of(third), new_key=other_key)
        status, fourth = await post(h, body, headers)
        assert status == 201, fourth

        # A fresh key still renews, and the refused attempts did not spend their certificate.
        body, headers, _ = renewal(other_key, cert_of(fourth))
        status, fifth = await post(h, body, headers)
        assert status == 201, fifth


async def test_the_key_lookup_is_served_by_an_index(pg_url: str) -> None:
    conn = await asyncpg.connect(make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT id FROM certificates WHERE public_key_sha256 = $1 AND identity_id = $2 LIMIT 1",
                "ab" * 32,
                1,
            )
        )
    finally:
        await conn.close()
    assert "ix_certificates_public_key_sha256" in plan or "ix_certificates_identity_id" in plan, plan
    assert "Seq Scan" not in plan
