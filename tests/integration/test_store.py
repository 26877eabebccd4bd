"""Repository behaviour that must hold on both Postgres and SQLite, under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from issuer.store import certificates, identities, replay_guards, tokens
from issuer.store.engine import make_session_factory
from issuer.store.models import Attestation, Identity
from issuer.store.records import AuditEntry, IdentityRecord, NewIdentity, record_of
from tests.support.store_rows import add_active_issuer, issued_row


async def test_concurrent_first_sightings_of_one_principal_share_one_identity(db_url: str, engine_for) -> None:
    """Every task of an ECS service has the same role ARN; their first issuances race."""
    sessions = make_session_factory(engine_for(db_url))
    now = datetime.now(UTC)

    async def sighting(i: int) -> int:
        async with sessions() as session, session.begin():
            return await identities.upsert_identity(
                session,
                NewIdentity(
                    method="aws-iam",
                    principal="arn:aws:iam::123456789012:role/ecs-task-web",
                    account_id="123456789012",
                    region=None,
                    attributes={"session_name": f"task-{i}"},
                ),
                now=now,
            )

    ids = await asyncio.gather(*(sighting(i) for i in range(8)))
    assert len(set(ids)) == 1
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Identity)) == 1
        row = await session.scalar(select(Identity))
        assert row is not None
        assert row.first_seen == row.last_seen == now
        assert row.attributes["session_name"].startswith("task-")


async def test_join_token_is_consumed_once(db_url: str, engine_for) -> None:
    sessions = make_session_factory(engine_for(db_url))
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        await tokens.add_join_token(
            session, token_hash="h" * 64, name="n", role="r", now=now, expires_at=now + timedelta(hours=1)
        )

    async def use() -> bool:
        async with sessions() as session, session.begin():
            used = await tokens.consume_join_token(session, token_hash="h" * 64, now=now, request_id="x")
            return used is not None

    results = await asyncio.gather(*(use() for _ in range(6)))
    assert sorted(results) == [False] * 5 + [True]
    # Expired tokens are never consumed.
    async with sessions() as session, session.begin():
        await tokens.add_join_token(session, token_hash="e" * 64, name="n", role="r", now=now, expires_at=now)
        assert await tokens.consume_join_token(session, token_hash="e" * 64, now=now, request_id="x") is None


async def test_a_replay_guard_is_recorded_once(db_url: str, engine_for) -> None:
    sessions = make_session_factory(engine_for(db_url))
    now = datetime.now(UTC)

    async def burn() -> bool:
        async with sessions() as session, session.begin():
            return await replay_guards.add_replay_guard(
                session, kind="sts", digest="d" * 64, expires_at=now + timedelta(minutes=5), now=now
            )

    results = await asyncio.gather(*(burn() for _ in range(6)))
    assert sorted(results) == [False] * 5 + [True]
    async with sessions() as session, session.begin():
        assert await replay_guards.add_replay_guard(
            session, kind="renew", digest="e" * 64, expires_at=now + timedelta(minutes=5), now=now
        )


async def test_an_issuance_is_recorded_alike_on_postgres_and_sqlite(db_url: str, engine_for) -> None:
    """record_issuance is one CTE statement on Postgres and three on SQLite; the rows must not differ."""
    sessions = make_session_factory(engine_for(db_url))
    first = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
    later = first + timedelta(minutes=5)
    principal = "arn:aws:iam::123456789012:role/ecs-task-web"
    issuer_id = await add_active_issuer(sessions, now=first)
    ids = []
    for serial, region, when in (("1a", None, first), ("2b", "eu-west-1", later)):
        certificate = issued_row(
            serial, issuer_id=issuer_id, request_id=f"cert-{serial}", not_after=when + timedelta(hours=24)
        )
        async with sessions() as session, session.begin():
            ids.append(
                await certificates.record_issuance(
                    session,
                    identity=NewIdentity(
                        method="aws-iam",
                        principal=principal,
                        account_id="123456789012",
                        region=region,
                        attributes={"session_name": f"task-{serial}"},
                    ),
                    certificate=certificate,
                    audit_entry=AuditEntry(
                        method="aws-iam",
                        outcome="success",
                        request_id=f"audit-{serial}",
                        principal=principal,
                        role="web",
                        certificate_serial=serial,
                        remote_addr="192.0.2.7",
                    ),
                    now=when,
                )
            )

    async with sessions() as session:
        rows = (await session.scalars(select(Identity))).all()
        records = [await certificates.get_certificate(session, serial) for serial in ("1a", "2b")]
        audits = (await session.scalars(select(Attestation).order_by(Attestation.id))).all()
        identity = await identities.get_identity(session, rows[0].id)
        assert await identities.get_identity(session, rows[0].id + 1) is None
        assert await certificates.get_certificate(session, "3c") is None
    # One identity, refreshed by the second sighting, first seen at the first.
    assert [(i.region, i.attributes, i.first_seen, i.last_seen) for i in rows] == [
        ("eu-west-1", {"session_name": "task-2b"}, first, later)
    ]
    assert identity == record_of(IdentityRecord, rows[0])
    assert [r.id for r in records if r is not None] == ids
    for record, serial, when in zip(records, ("1a", "2b"), (first, later), strict=True):
        assert record is not None
        assert (record.identity_id, record.issuer_id, record.status, record.request_id) == (
            rows[0].id,
            issuer_id,
            "active",
            f"cert-{serial}",
        )
        assert (record.sans, record.identity_attributes) == (
            [f"spiffe://example.org/{serial}"],
            {"session_name": f"task-{serial}"},
        )
        assert (record.created_at, record.not_after, record.chain_started_at) == (
            when,
            when + timedelta(hours=24),
            when + timedelta(hours=24) - timedelta(days=3),
        )
        assert (record.revoked_at, record.revocation_reason, record.renewed_from) == (None, None, None)
    assert [
        (
            a.method,
            a.outcome,
            a.code,
            a.principal,
            a.role,
            a.certificate_serial,
            a.remote_addr,
            a.request_id,
            a.created_at,
        )
        for a in audits
    ] == [
        ("aws-iam", "success", None, principal, "web", serial, "192.0.2.7", f"audit-{serial}", when)
        for serial, when in (("1a", first), ("2b", later))
    ]
