"""GET /metrics in one process: what a Prometheus scraper reads, and that it moves with the traffic.

Every scrape is read with prometheus_client's own parser (text and OpenMetrics). STS is the
scripted aiohttp app, EC2 is moto's server, the database gauge runs on Postgres and SQLite.
The same metrics across ``issuer serve --workers 2`` are in ``test_metrics_workers.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from sqlalchemy import update

from issuer.attest.ec2_certs import AwsCertStore
from issuer.observability.expiring import ExpiringCertificates, count_unrenewed
from issuer.store.models import Certificate
from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign
from tests.support.harness import Harness, new_csr, running_issuer
from tests.support.metrics_scrape import Scrape
from tests.support.moto_server import MotoServer, fake_aws_credentials, free_port, moto_server
from tests.support.renewal_token import renewal_token
from tests.support.scripted_sts import IAM_ROLE, SERVER_ID, ScriptedSts, iam_request, scripted_sts
from tests.support.tcp_proxy import proxied_database
from tests.support.x509_check import make_csr

TOKEN = "/v1/issue/token"
IAM = "/v1/issue/aws-iam"
EC2 = "/v1/issue/aws-ec2"
REGION = "eu-west-1"
ACCOUNT = "123456789012"


def config(*, sts: dict[str, str] | None = None, ec2_endpoint: str | None = None) -> str:
    overrides = ", ".join(f'"{host}" = "{url}"' for host, url in (sts or {}).items())
    ec2 = f'[aws.ec2]\nendpoint_overrides = {{ "*" = "{ec2_endpoint}" }}' if ec2_endpoint else ""
    return f"""
[issuer]
trust_domain = "test.example"
server_id = "{SERVER_ID}"

[aws.sts]
endpoint_overrides = {{ {overrides} }}
{ec2}

[[roles]]
name = "onprem"
methods = ["token"]
ttl = "1h"

[[roles]]
name = "live"
methods = ["aws-ec2"]
check_instance = true
{IAM_ROLE}
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def scrape(h: Harness, accept: str | None = None) -> tuple[str, str]:
    resp = await h.client.get("/metrics", headers={"Accept": accept} if accept else {})
    assert resp.status == 200
    return resp.headers["Content-Type"], await resp.text()


async def metrics(h: Harness) -> Scrape:
    return Scrape.parse((await scrape(h))[1])


@pytest.fixture
async def sts() -> AsyncIterator[ScriptedSts]:
    async with scripted_sts() as s:
        yield s


@pytest.fixture(scope="module")
def aws() -> FakeAwsSigner:
    return FakeAwsSigner.create(kind="rsa2048")


@pytest.fixture(scope="module")
def aws_certs(aws: FakeAwsSigner) -> AwsCertStore:
    return AwsCertStore.builtin(extra={REGION: [aws.cert]})


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[MotoServer, str, str]]:
    """moto's EC2 with one running instance: (server, instance id, its image)."""
    with pytest.MonkeyPatch.context() as mp:
        fake_aws_credentials(mp, region=REGION)
        with moto_server() as server:
            ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=server.url)
            images = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])
            image = images["Images"][0]["ImageId"]
            instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
            yield server, instance, image


async def test_the_scrape_parses_and_moves_with_issuances_and_refusals(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=config()) as h:
        content_type, text = await scrape(h)
        assert content_type.startswith("text/plain; version=")
        before = Scrape.parse(text)
        assert before.types["issuer_issuances"] == "counter"
        assert before.types["issuer_issuance_duration_seconds"] == "histogram"
        assert before.types["issuer_http_in_flight_requests"] == "gauge"
        assert before.types["issuer_certificates_expiring_unrenewed"] == "gauge"
        assert before.total("issuer_issuances_total") == 0
        assert before.series("issuer_worker_start_time_seconds") == [{}]  # one process, no pid label
        assert before.has("process_resident_memory_bytes")

        for name in ("a", "b"):
            status, body = await h.post(TOKEN, {"csr": new_csr()[1], "token": await h.token(name=name)})
            assert status == 201, body
        status, body = await h.post(TOKEN, {"csr": new_csr()[1], "token": "not-a-token"})
        assert (status, body["code"]) == (401, "token_invalid")
        resp = await h.client.post("/v1/issue/nothing", json={})
        assert resp.status == 404

        after = await metrics(h)
        issued = {"method": "token", "role": "onprem", "outcome": "issued", "code": "issued"}
        assert after.total("issuer_issuances_total", **issued) == 2
        refused = {"method": "token", "role": "", "outcome": "refused", "code": "token_invalid"}
        assert after.total("issuer_issuances_total", **refused) == 1
        assert after.total("issuer_issuance_duration_seconds_count", method="token", outcome="issued") == 2
        assert after.total("issuer_issuance_duration_seconds_count", method="token", outcome="refused") == 1
        assert after.total("issuer_http_requests_total", route=TOKEN, status="201") == 2
        assert after.total("issuer_http_requests_total", route=TOKEN, status="401") == 1
        assert after.total("issuer_http_requests_total", route="unmatched", status="404") == 1
        assert after.total("issuer_http_request_duration_seconds_count", route=TOKEN) == 3
        assert after.total("issuer_http_requests_total", route="/metrics", status="200") == 1  # the first scrape
        assert after.total("issuer_http_in_flight_requests") == 0
        assert after.total("issuer_rate_limited_total") == 0
        # Buckets are cumulative and end in +Inf = count.
        assert after.total("issuer_issuance_duration_seconds_bucket", method="token", outcome="issued", le="+Inf") == 2

        content_type, text = await scrape(h, accept="application/openmetrics-text; version=1.0.0")
        assert content_type.startswith("application/openmetrics-text")
        families = {f.name: f for f in openmetrics_families(text)}
        samples = families["issuer_issuances"].samples
        totals = [s for s in samples if s.name == "issuer_issuances_total" and s.labels["outcome"] == "issued"]
        assert sum(s.value for s in totals) == 2


async def test_upstream_calls_are_timed_by_outcome(
    tmp_path: Path,
    pg_url: str,
    sts: ScriptedSts,
    aws: FakeAwsSigner,
    aws_certs: AwsCertStore,
    moto: tuple[MotoServer, str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_aws_credentials(monkeypatch, region=REGION)
    server, instance, image = moto
    hosts = {
        "sts.amazonaws.com": sts.url("ok"),
        "sts.us-east-2.amazonaws.com": sts.url("reject"),
        "sts.us-west-2.amazonaws.com": f"http://127.0.0.1:{free_port()}/",
    }
    settings = config(sts=hosts, ec2_endpoint=server.url)
    async with running_issuer(tmp_path, pg_url, config=settings, aws_certs=aws_certs) as h:
        status, body = await h.post(IAM, iam_request(new_csr()[1]))
        assert status == 201, body
        status, body = await h.post(
            IAM, iam_request(new_csr()[1], host="sts.us-east-2.amazonaws.com", region="us-east-2")
        )
        assert (status, body["code"]) == (401, "sts_rejected"), body
        status, body = await h.post(
            IAM, iam_request(new_csr()[1], host="sts.us-west-2.amazonaws.com", region="us-west-2")
        )
        assert (status, body["code"]) == (503, "sts_unavailable"), body

        document = build_document(instance_id=instance, image_id=image, account_id=ACCOUNT, region=REGION)
        ec2_body = {"csr": new_csr()[1], "document": document.decode(), "rsa2048": sign(document, aws, "rsa2048")}
        status, body = await h.post(EC2, ec2_body)
        assert status == 201, body

        m = await metrics(h)
        sts_calls = {"service": "sts", "call": "GetCallerIdentity"}
        for outcome in ("ok", "refused", "error"):
            assert m.total("issuer_upstream_request_duration_seconds_count", **sts_calls, outcome=outcome) == 1
        # A refusal by STS is the client's credentials, not an upstream error.
        assert m.total("issuer_upstream_errors_total", **sts_calls) == 1
        assert m.total("issuer_upstream_errors_total", **sts_calls, code="sts_unavailable") == 1
        ec2_calls = {"service": "ec2", "call": "DescribeInstances"}
        assert m.total("issuer_upstream_request_duration_seconds_count", **ec2_calls, outcome="ok") == 1
        assert m.total("issuer_upstream_errors_total", **ec2_calls) == 0


async def test_ec2_that_cannot_be_asked_is_an_upstream_error(
    tmp_path: Path, pg_url: str, aws: FakeAwsSigner, aws_certs: AwsCertStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_aws_credentials(monkeypatch, region=REGION)
    settings = config(ec2_endpoint=f"http://127.0.0.1:{free_port()}")
    async with running_issuer(tmp_path, pg_url, config=settings, aws_certs=aws_certs) as h:
        document = build_document(instance_id="i-0d0000000000000a1")
        ec2_body = {"csr": new_csr()[1], "document": document.decode(), "rsa2048": sign(document, aws, "rsa2048")}
        status, body = await h.post(EC2, ec2_body)
        assert (status, body["code"]) == (503, "ec2_lookup_unavailable"), body
        m = await metrics(h)
        calls = {"service": "ec2", "call": "DescribeInstances"}
        assert m.total("issuer_upstream_errors_total", **calls, code="ec2_lookup_unavailable") == 1
        assert m.total("issuer_upstream_request_duration_seconds_count", **calls, outcome="error") == 1
        assert m.total("issuer_issuances_total", method="aws-ec2", role="live", code="ec2_lookup_unavailable") == 1


# -- certificates past their renewal point -------------------------------------------------------


async def test_unrenewed_certificates_past_their_renewal_point_are_counted(tmp_path: Path, db_url: str) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    clock = Clock(start + timedelta(minutes=50))  # issued at T, 1 h certificates, due at T+40 min
    async with running_issuer(tmp_path, db_url, config=config(), clock=clock) as h:
        clock.now = start
        keys = {}
        for name in ("a", "b", "c"):
            key, csr = new_csr()
            status, body = await h.post(TOKEN, {"csr": csr, "token": await h.token(name=name)})
            assert status == 201, body
            keys[name] = (key, body)

        async def count(at: timedelta) -> int:
            async with h.service.sessions() as session:
                return await count_unrenewed(session, now=start + at, renew_fraction=h.settings.renew_fraction)

        assert await count(timedelta(minutes=39)) == 0
        assert await count(timedelta(minutes=41)) == 3
        assert await count(timedelta(minutes=61)) == 0  # expired: no longer a rotation to make

        # a is renewed (superseded; its successor is due later), b is revoked: only c is left.
        clock.now = start + timedelta(minutes=41)
        key, body = keys["a"]
        new_key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(new_key).decode()
        cert = x509.load_pem_x509_certificate(body["certificate"].encode())
        token = renewal_token(key, cert, csr_pem=csr, audience=SERVER_ID, now=clock.now.timestamp())
        resp = await h.client.post("/v1/renew", json={"csr": csr}, headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 201, await resp.text()
        async with h.service.sessions() as session, session.begin():
            await session.execute(
                update(Certificate).where(Certificate.serial == keys["b"][1]["serial"]).values(status="revoked")
            )
        assert await count(timedelta(minutes=45)) == 1

        # What a scrape says, at the service's own clock (the first scrape counts at once).
        clock.now = start + timedelta(minutes=45)
        scrape = await metrics(h)
        assert scrape.total("issuer_certificates_expiring_unrenewed") == 1
        assert scrape.total("issuer_certificates_expiring_unrenewed", role="onprem") == 1
        assert {"role": "live"} in scrape.series("issuer_certificates_expiring_unrenewed")  # present, at 0


async def test_the_gauge_is_cached_and_keeps_its_value_through_an_outage(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ticks = [0.0]
    async with proxied_database(pg_url) as (proxy, url), running_issuer(tmp_path, url, config=config()) as h:
        gauge = ExpiringCertificates(
            h.service.sessions,
            clock=lambda: datetime.now(UTC) + timedelta(minutes=45),  # hour-long certificates are due by then
            renew_fraction=h.settings.renew_fraction,
            roles=["onprem", "live"],
            ttl=30.0,
            monotonic=lambda: ticks[0],
        )

        def value() -> list[tuple[str, float]]:
            return [(sample.labels["role"], sample.value) for family in gauge.collect() for sample in family.samples]

        assert value() == []  # nothing known yet: no sample rather than a made-up 0
        await gauge.refresh()
        assert value() == [("live", 0), ("onprem", 0)]  # every role from the first count on
        status, body = await h.post(TOKEN, {"csr": new_csr()[1], "token": await h.token()})
        assert status == 201, body
        ticks[0] += 29
        await gauge.refresh()
        assert value() == [("live", 0), ("onprem", 0)]  # cached
        ticks[0] += 1
        await gauge.refresh()
        assert value() == [("live", 0), ("onprem", 1)]

        await proxy.cut()
        ticks[0] += 30
        await gauge.refresh()  # asked, failed, logged: the last value stays
        assert value() == [("live", 0), ("onprem", 1)]
        assert any("could not count unrenewed certificates" in r.getMessage() for r in caplog.records)
        assert (await h.client.get("/metrics")).status == 200  # a scrape never fails for the database
