"""Events to EventBridge, end to end: moto's server (signatures checked) as EventBridge, a rule routing the
bus to an SQS queue, and the service's relay publishing from the sealed audit trail. Every event type,
the ids consumers deduplicate on, and an outage (the endpoint cut under load) that loses nothing."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from issuer.events.catalogue import event_id_for, event_of_row
from issuer.events.publisher import EventBridgePublisher
from issuer.http.keys import AUDIT
from issuer.service.admin import operations as admin
from issuer.service.revocation.revoke import RevocationTarget, revoke
from issuer.store import audit
from issuer.store.models import Attestation, AuditChainEntry
from issuer.store.records import AuditEntry
from tests.support.audit_trail import issue, refuse, sessions_of
from tests.support.harness import BASE_CONFIG, Harness, new_csr, running_issuer
from tests.support.metrics_scrape import Scrape
from tests.support.moto_events import MotoEvents, moto_events, with_bus
from tests.support.renewal_token import renewal_token
from tests.support.tcp_proxy import TcpProxy
from tests.support.x509_check import make_csr

DOMAIN = "test.example"


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoEvents]:
    with moto_events() as peer:
        yield peer


@pytest.fixture
def bus(aws: MotoEvents) -> MotoEvents:
    return with_bus(aws, f"security-{secrets.token_hex(4)}")


def config(bus: MotoEvents, extra: str = "") -> str:
    return BASE_CONFIG + f'\n[events]\nbus_arn = "{bus.bus_arn}"\n{extra}'


def by_type(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        assert event["source"] == "aws-machine-issuer"
        out.setdefault(event["detail-type"], []).append(event["detail"])
    return out


async def arrived(bus: MotoEvents, count: int) -> dict[str, list[dict[str, Any]]]:
    """The events the queue received, once at least ``count`` did (or 30 s passed), by detail type."""
    return by_type(await asyncio.to_thread(bus.drain, until=count, timeout=30.0))


async def test_issued_and_refused(tmp_path: Path, db_url: str, bus: MotoEvents) -> None:
    async with running_issuer(tmp_path, db_url, config=config(bus), events_client=bus.events_client()) as h:
        body = await issue(h, "web-1")
        await refuse(h)
        got = await arrived(bus, 2)
        ids = [a.id for a in await h.attestations()]
    (issued,) = got["Certificate Issued"]
    assert issued["certificate_serial"] == body["serial"] and issued["principal"] == "web-1"
    assert issued["role"] == "onprem" and issued["method"] == "token" and issued["issuer"] == DOMAIN
    assert issued["event_id"] == event_id_for(DOMAIN, "attestation", ids[0])
    (refused,) = got["Attestation Refused"]
    assert refused["code"] == "token_invalid" and refused["outcome"] == "failure"


async def test_renewed(tmp_path: Path, pg_url: str, bus: MotoEvents) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(bus), events_client=bus.events_client()) as h:
        key = ec.generate_private_key(ec.SECP256R1())
        status, body = await h.post(
            "/v1/issue/token", {"csr": make_csr(key).decode(), "token": await h.token(name="edge-1")}
        )
        assert status == 201
        certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
        csr = make_csr(ec.generate_private_key(ec.SECP256R1())).decode()
        token = renewal_token(key, certificate, csr_pem=csr, audience=h.settings.audience)
        resp = await h.client.post("/v1/renew", json={"csr": csr}, headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 201, await resp.text()
        renewed = await resp.json()
        got = await arrived(bus, 2)
    (event,) = got["Certificate Renewed"]
    assert event["certificate_serial"] == renewed["serial"] and event["reason"] == f"renewed {body['serial']}"
    assert [e["certificate_serial"] for e in got["Certificate Issued"]] == [body["serial"]]


async def test_revoked(tmp_path: Path, pg_url: str, bus: MotoEvents) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(bus), events_client=bus.events_client()) as h:
        body = await issue(h, "laptop")
        await revoke(
            h.service.sessions,
            RevocationTarget("serial", body["serial"]),
            reason="keyCompromise",
            now=datetime.now(UTC),
            note="stolen",
        )
        got = await arrived(bus, 2)
    (event,) = got["Certificate Revoked"]
    assert event["certificate_serial"] == body["serial"] and event["code"] == "certificate_revoked"
    assert "keyCompromise: stolen" in event["reason"]


async def test_identity_denied(tmp_path: Path, pg_url: str, bus: MotoEvents) -> None:
    """A refusal with code identity_denied (the deny list's) is its own type, not "Attestation Refused"."""
    async with running_issuer(tmp_path, pg_url, config=config(bus), events_client=bus.events_client()) as h:
        async with h.service.sessions() as session, session.begin():
            await audit.record(
                session,
                AuditEntry(
                    method="aws-iam",
                    outcome="failure",
                    request_id="req-denied",
                    code="identity_denied",
                    reason="denied: arn:aws:iam::123456789012:role/ci (compromised)",
                    principal="arn:aws:iam::123456789012:role/ci",
                ),
                now=datetime.now(UTC),
            )
        got = await arrived(bus, 1)
    (event,) = got["Identity Denied"]
    assert event["principal"] == "arn:aws:iam::123456789012:role/ci" and "Attestation Refused" not in got


async def test_ca_rotated(bus: MotoEvents) -> None:
    """An operator's ``ca.activate`` row (the columns the operators' audit rows add) becomes "CA Rotated"."""
    row = {
        "id": 41,
        "method": "admin",
        "outcome": "success",
        "code": None,
        "reason": "activated issuing CA 3f2a…",
        "principal": None,
        "role": None,
        "certificate_serial": None,
        "remote_addr": "10.0.0.7",
        "request_id": "req-ca",
        "created_at": datetime.now(UTC),
        "actor": "arn:aws:sts::123456789012:assumed-role/Ops/alice",
        "action": "ca.activate",
        "arguments": {"fingerprint": "3f2a"},
    }
    event = event_of_row(row, seq=9, trust_domain=DOMAIN)
    assert event is not None
    result = await EventBridgePublisher(bus.events_client(), bus_arn=bus.bus_arn).publish([event])
    assert result.accepted == {event.event_id}
    (got,) = (await arrived(bus, 1))["CA Rotated"]
    assert (
        got["action"] == "ca.activate"
        and got["actor"].endswith("/alice")
        and got["arguments"] == {"fingerprint": "3f2a"}
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_expiring_unrenewed_once_per_certificate(tmp_path: Path, db_url: str, bus: MotoEvents) -> None:
    clock = Clock()
    async with running_issuer(
        tmp_path, db_url, config=config(bus), events_client=bus.events_client(), clock=clock
    ) as h:
        stale = await issue(h, "forgetful")  # 24 h: due for renewal after 16 h
        scan = h.client.app[AUDIT].expiring
        assert scan is not None
        assert await scan.scan_once() == 0
        clock.now += timedelta(hours=17)
        token = await admin.create_token(
            h.service.sessions, h.settings, role="onprem", name="new", ttl=timedelta(hours=1), now=clock.now
        )
        status, fresh = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": token.token})
        assert status == 201  # issued "now": not due
        assert await scan.scan_once() == 1
        assert await scan.scan_once() == 0  # once per certificate, whichever replica scans
        got = await arrived(bus, 3)
    (event,) = got["Certificate Expiring Unrenewed"]
    assert event["certificate_serial"] == stale["serial"] and event["principal"] == "forgetful"
    assert event["event_id"] == event_id_for(DOMAIN, "outbox", f"expiring:{stale['serial']}")
    assert datetime.fromisoformat(event["renew_after"]) < clock.now < datetime.fromisoformat(event["not_after"])
    assert {e["certificate_serial"] for e in got["Certificate Issued"]} == {stale["serial"], fresh["serial"]}


async def expected_events(h: Harness) -> set[str]:
    """The event id of every sealed row that publishes one."""
    async with sessions_of(h.settings.database_url) as sessions, sessions() as session:
        rows = await session.execute(
            select(AuditChainEntry.seq, Attestation).join(Attestation, Attestation.id == AuditChainEntry.attestation_id)
        )
        wanted = set()
        for seq, row in rows:
            values = {c.name: getattr(row, c.name) for c in Attestation.__table__.columns}
            event = event_of_row(values, seq=seq, trust_domain=DOMAIN)
            if event is not None:
                wanted.add(event.event_id)
    return wanted


async def test_an_eventbridge_outage_loses_nothing(tmp_path: Path, pg_url: str, bus: MotoEvents) -> None:
    """Under load, the endpoint is cut for a few seconds and restored: every event arrives at least once."""
    port = int(bus.server.url.rsplit(":", 1)[1])
    proxy = TcpProxy("127.0.0.1", port)
    await proxy.start()
    client = bus.events_client(endpoint_url=f"http://127.0.0.1:{proxy.port}")
    try:
        async with running_issuer(tmp_path, pg_url, config=config(bus), events_client=client) as h:
            limit = asyncio.Semaphore(6)

            async def work(i: int) -> None:
                async with limit:
                    await (refuse(h) if i % 4 == 3 else issue(h, f"m{i}"))

            await asyncio.gather(*(work(i) for i in range(15)))
            await proxy.cut()
            await asyncio.gather(*(work(i) for i in range(15, 35)))
            await asyncio.sleep(3)
            during = Scrape.parse(await (await h.client.get("/metrics")).text())
            assert during.total("issuer_events_unpublished") >= 20  # the rows of the cut wait, sealed
            await proxy.restore()
            await asyncio.gather(*(work(i) for i in range(35, 50)))
            for _ in range(100):  # until every row is sealed
                if len(await expected_events(h)) == 50:
                    break
                await asyncio.sleep(0.2)
            wanted = await expected_events(h)
            got = await asyncio.to_thread(bus.drain, until=len(wanted), timeout=90)
    finally:
        await proxy.cut()
    delivered = [e["detail"]["event_id"] for e in got]
    assert len(wanted) == 50
    assert wanted <= set(delivered), f"missing {len(wanted - set(delivered))} of {len(wanted)}"
    assert set(delivered) <= wanted


async def test_enabling_events_publishes_from_then_on(tmp_path: Path, pg_url: str, bus: MotoEvents) -> None:
    async with running_issuer(tmp_path, pg_url, seal_every=None) as h:
        await issue(h, "before-1")
        await issue(h, "before-2")
    async with running_issuer(tmp_path, pg_url, config=config(bus), events_client=bus.events_client()) as h:
        after = await issue(h, "after")
        got = await asyncio.to_thread(bus.drain, until=2, timeout=6)  # waits the full 6 s for a second one
    assert [e["detail"]["certificate_serial"] for e in got] == [after["serial"]]
