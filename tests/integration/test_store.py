"""Repository behaviour that must hold on both Postgres and SQLite, under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from issuer.store import repo, tokens
from issuer.store.engine import make_session_factory
from issuer.store.models import Identity
from issuer.store.records import NewIdentity


async def test_concurrent_first_sightings_of_one_principal_share_one_identity(db_url: str, engine_for) -> None:
    """Every task of an ECS service has the same role ARN; their first issuances race."""
    sessions = make_session_factory(engine_for(db_url))
    now = datetime.now(UTC)

    async def sighting(i: int) -> int:
        async with sessions() as session, session.begin():
            return await repo.upsert_identity(
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
            used = await tokens.consume_join_token(
                session, token_hash="h" * 64, now=now, request_id="x", certificate_serial="1"
            )
            return used is not None

    results = await asyncio.gather(*(use() for _ in range(6)))
    assert sorted(results) == [False] * 5 + [True]
    # Expired tokens are never consumed.
    async with sessions() as session, session.begin():
        await tokens.add_join_token(session, token_hash="e" * 64, name="n", role="r", now=now, expires_at=now)
        assert (
            await tokens.consume_join_token(
                session, token_hash="e" * 64, now=now, request_id="x", certificate_serial="1"
            )
            is None
        )
