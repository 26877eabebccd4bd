"""Hot statements of concurrent requests run as one statement on Postgres (issuer.store.batch).

What a caller relies on: each request gets exactly the rows it would have got alone, a write whose
claim does not hold writes nothing, two writes of one identity never share a statement, and one
request's failure in a batch is that request's alone.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from issuer.store import certificates, hot, tokens
from issuer.store.engine import close_sessions, make_session_factory
from issuer.store.models import Attestation, Certificate, JoinToken, ReplayGuard
from issuer.store.records import AuditEntry, NewIdentity
from tests.support.store_rows import add_active_issuer, issued_row

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests' copies each statement sent to the database carried."""
    sizes: list[int] = []
    real = hot.fetch_copies

    async def spy(pooled: Any, dialect: Any, statement: hot.HotStatement, params: Any) -> Any:
        sizes.append(len(params))
        return await real(pooled, dialect, statement, params)

    monkeypatch.setattr(hot, "fetch_copies", spy)
    return sizes


async def _add_tokens(sessions: Any, *names_and_hashes: tuple[str, str]) -> None:
    async with sessions() as session, session.begin():
        for name, token_hash in names_and_hashes:
            await tokens.add_join_token(
                session, token_hash=token_hash, name=name, role="web", now=NOW, expires_at=NOW + timedelta(hours=1)
            )


async def _record_token(sessions: Any, *, issuer_id: int, token_hash: str, name: str, serial: str) -> int | None:
    """What token issuance records on Postgres: the token consumed and the certificate, one statement."""
    principal = f"token:{name}"
    async with sessions() as session:
        return await certificates.record_claimed(
            session,
            claim=tokens.CONSUME_STEP,
            claim_params={"c_hash": token_hash},
            identity=NewIdentity(method="token", principal=principal, account_id=None, region=None, attributes={}),
            certificate=issued_row(
                serial,
                issuer_id=issuer_id,
                request_id=f"req-{serial}",
                not_after=NOW + timedelta(hours=1),
                method="token",
            ),
            audit_entry=AuditEntry(
                method="token",
                outcome="success",
                request_id=f"req-{serial}",
                principal=principal,
                role="web",
                certificate_serial=serial,
            ),
            now=NOW,
        )


async def test_concurrent_reads_go_as_one_statement_each_with_its_own_answer(
    pg_url: str, engine_for: Any, batch_sizes: list[int]
) -> None:
    sessions = make_session_factory(engine_for(pg_url))
    await _add_tokens(sessions, *((f"m{i}", f"{i}" * 64) for i in range(5)))

    async def peek(token_hash: str) -> str | None:
        async with sessions() as session:
            record, denials = await tokens.peek_join_token(session, token_hash=token_hash, now=NOW)
            assert denials == []
            return None if record is None else record.name

    hashes = [f"{i}" * 64 for i in (3, 0, 9, 4, 1, 8, 2)]  # 9 and 8: no such token
    assert await asyncio.gather(*(peek(h) for h in hashes)) == ["m3", "m0", None, "m4", "m1", None, "m2"]
    assert batch_sizes == [7]
    # Alone, the same read answers the same.
    assert await peek("4" * 64) == "m4"
    assert batch_sizes == [7, 1]


async def test_concurrent_claims_commit_together_and_a_claim_that_fails_writes_nothing(
    pg_url: str, engine_for: Any, batch_sizes: list[int]
) -> None:
    sessions = make_session_factory(engine_for(pg_url))
    issuer_id = await add_active_issuer(sessions, now=NOW)
    await _add_tokens(sessions, ("a", "a" * 64), ("b", "b" * 64), ("c", "c" * 64))
    async with sessions() as session, session.begin():  # c is spent before the batch
        assert await tokens.consume_join_token(session, token_hash="c" * 64, now=NOW, request_id="earlier")

    results = await asyncio.gather(
        _record_token(sessions, issuer_id=issuer_id, token_hash="a" * 64, name="a", serial="a1"),
        _record_token(sessions, issuer_id=issuer_id, token_hash="c" * 64, name="c", serial="c1"),
        _record_token(sessions, issuer_id=issuer_id, token_hash="b" * 64, name="b", serial="b1"),
    )
    assert batch_sizes == [3]
    assert results[1] is None  # the spent token's copy matched nothing
    assert results[0] is not None and results[2] is not None and results[0] != results[2]
    async with sessions() as session:
        serials = (await session.scalars(select(Certificate.serial).order_by(Certificate.serial))).all()
        used = dict((await session.execute(select(JoinToken.name, JoinToken.certificate_serial))).all())
        audited = (await session.scalars(select(Attestation.certificate_serial))).all()
    assert serials == ["a1", "b1"]
    assert used == {"a": "a1", "b": "b1", "c": None}
    assert sorted(audited) == ["a1", "b1"]


async def test_writes_of_one_identity_never_share_a_statement(
    pg_url: str, engine_for: Any, batch_sizes: list[int]
) -> None:
    """Two tokens for one name are one identity: in one statement its upsert would hit its row twice."""
    sessions = make_session_factory(engine_for(pg_url))
    issuer_id = await add_active_issuer(sessions, now=NOW)
    await _add_tokens(sessions, ("same", "1" * 64), ("same", "2" * 64), ("other", "3" * 64))

    results = await asyncio.gather(
        _record_token(sessions, issuer_id=issuer_id, token_hash="1" * 64, name="same", serial="s1"),
        _record_token(sessions, issuer_id=issuer_id, token_hash="2" * 64, name="same", serial="s2"),
        _record_token(sessions, issuer_id=issuer_id, token_hash="3" * 64, name="other", serial="o1"),
    )
    assert all(result is not None for result in results)
    assert batch_sizes == [2, 1]  # the second "same" waited for the next statement
    # The same token claimed twice at once: one certificate, whichever way the batches fall.
    await _add_tokens(sessions, ("twice", "4" * 64))
    again = await asyncio.gather(
        *(
            _record_token(sessions, issuer_id=issuer_id, token_hash="4" * 64, name="twice", serial=f"t{i}")
            for i in range(3)
        )
    )
    assert sum(result is not None for result in again) == 1
    async with sessions() as session:
        assert await session.scalar(select(func.count()).where(Certificate.serial.like("t%"))) == 1


async def test_one_failing_copy_fails_alone(pg_url: str, engine_for: Any, batch_sizes: list[int]) -> None:
    """A serial already recorded (a unique violation) fails that request; the others in its batch commit."""
    sessions = make_session_factory(engine_for(pg_url))
    issuer_id = await add_active_issuer(sessions, now=NOW)
    await _add_tokens(sessions, *((n, n * 64) for n in "defg"))
    assert await _record_token(sessions, issuer_id=issuer_id, token_hash="d" * 64, name="d", serial="dup")
    batch_sizes.clear()

    results = await asyncio.gather(
        _record_token(sessions, issuer_id=issuer_id, token_hash="e" * 64, name="e", serial="e1"),
        _record_token(sessions, issuer_id=issuer_id, token_hash="f" * 64, name="f", serial="dup"),
        _record_token(sessions, issuer_id=issuer_id, token_hash="g" * 64, name="g", serial="g1"),
        return_exceptions=True,
    )
    assert batch_sizes == [3, 1, 1, 1]  # the batch failed, then each on its own
    assert isinstance(results[1], IntegrityError)
    assert isinstance(results[0], int) and isinstance(results[2], int)
    async with sessions() as session:
        serials = (await session.scalars(select(Certificate.serial).order_by(Certificate.serial))).all()
        used = dict((await session.execute(select(JoinToken.name, JoinToken.certificate_serial))).all())
    assert serials == ["dup", "e1", "g1"]
    assert used == {"d": "dup", "e": "e1", "f": None, "g": "g1"}  # f's token is not spent


async def test_renewals_burn_their_tokens_in_the_batch(pg_url: str, engine_for: Any, batch_sizes: list[int]) -> None:
    """A renewal's statement has a prelude (the renewal token's digest burnt): its copies batch too."""
    sessions = make_session_factory(engine_for(pg_url))
    issuer_id = await add_active_issuer(sessions, now=NOW)
    await _add_tokens(sessions, ("r1", "1" * 64), ("r2", "2" * 64))
    firsts = [
        await _record_token(sessions, issuer_id=issuer_id, token_hash=f"{i}" * 64, name=f"r{i}", serial=f"{i}0")
        for i in (1, 2)
    ]
    batch_sizes.clear()

    async def renew(i: int, prior: int | None, digest: str) -> int | None:
        principal = f"token:r{i}"
        async with sessions() as session:
            return await certificates.record_claimed(
                session,
                claim=certificates.SUPERSEDE_BURNT_STEP,
                prelude=certificates.BURN_PRELUDE,
                claim_params={"c_prior": prior, "c_digest": digest, "c_expires_at": NOW + timedelta(minutes=5)},
                identity=NewIdentity(method="token", principal=principal, account_id=None, region=None, attributes={}),
                certificate=issued_row(
                    f"{i}1",
                    issuer_id=issuer_id,
                    request_id=f"renew-{i}",
                    not_after=NOW + timedelta(hours=1),
                    method="token",
                    renewed_from=prior,
                ),
                audit_entry=AuditEntry(method="renew", outcome="success", request_id=f"renew-{i}", principal=principal),
                now=NOW,
            )

    first, second = await asyncio.gather(renew(1, firsts[0], "x" * 64), renew(2, firsts[1], "y" * 64))
    assert batch_sizes == [2]
    assert first is not None and second is not None
    # A replayed renewal token (its digest burnt) matches nothing, in a batch or alone.
    assert await renew(1, firsts[0], "x" * 64) is None
    async with sessions() as session:
        statuses = dict((await session.execute(select(Certificate.serial, Certificate.status))).all())
        digests = (await session.scalars(select(ReplayGuard.digest).order_by(ReplayGuard.digest))).all()
    assert statuses == {"10": "superseded", "20": "superseded", "11": "active", "21": "active"}
    assert digests == ["x" * 64, "y" * 64]


async def test_sessions_that_do_not_batch_run_each_statement_alone(
    pg_url: str, engine_for: Any, batch_sizes: list[int]
) -> None:
    sessions = make_session_factory(engine_for(pg_url), batch=False)
    await _add_tokens(sessions, ("m", "m" * 64))

    async def peek() -> bool:
        async with sessions() as session:
            return (await tokens.peek_join_token(session, token_hash="m" * 64, now=NOW))[0] is not None

    assert await asyncio.gather(peek(), peek()) == [True, True]
    assert batch_sizes == []


async def test_a_lost_connection_fails_its_batch_and_the_next_batch_reconnects(
    pg_url: str, engine_for: Any, batch_sizes: list[int]
) -> None:
    """Postgres restarted under a batch: each request in it gets the error (the service answers 503), none is
    retried (a write's commit would be unknown), and the next batch runs on a new connection."""
    sessions = make_session_factory(engine_for(pg_url))
    await _add_tokens(sessions, ("m", "m" * 64))

    async def peek() -> str | None:
        async with sessions() as session:
            record, _ = await tokens.peek_join_token(session, token_hash="m" * 64, now=NOW)
            return None if record is None else record.name

    assert await peek() == "m"  # the batch's connection is open, held by its lane or back in the pool
    async with make_session_factory(engine_for(pg_url))() as session:  # another engine: its own connection
        database = await session.scalar(select(func.current_database()))
        # With a timeout, pg_terminate_backend returns once the backend has exited (a signal alone may
        # still be on its way when the next query arrives, on a loaded machine).
        terminated = await session.scalars(
            text(
                "SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": database},
        )
        assert terminated.all() == [True]  # the one connection the batches used
    batch_sizes.clear()

    failed = await asyncio.gather(peek(), peek(), peek(), return_exceptions=True)
    assert batch_sizes == [3]
    assert all(isinstance(error, DBAPIError) and error.connection_invalidated for error in failed), failed
    assert len({id(error) for error in failed}) == 1  # one failure, given to each request in the batch
    assert await asyncio.gather(peek(), peek()) == ["m", "m"]
    assert batch_sizes == [3, 2]


async def test_a_session_gives_back_what_it_took_and_one_that_took_nothing_exits_at_once(
    pg_url: str, engine_for: Any
) -> None:
    engine = engine_for(pg_url)
    sessions = make_session_factory(engine)
    await _add_tokens(sessions, ("kept", "h-kept"))
    async with sessions() as session:
        await session.execute(text("UPDATE join_tokens SET name = 'changed' WHERE token_hash = 'h-kept'"))
        assert engine.pool.checkedout() == 1
    assert engine.pool.checkedout() == 0  # given back, and what was not committed rolled back:
    async with sessions() as session:
        token = await session.scalar(select(JoinToken).where(JoinToken.token_hash == "h-kept"))
    assert token is not None and token.name == "kept"
    assert inspect(token).detached  # a loaded object leaves the session at its end, as SQLAlchemy's close does
    async with sessions() as session:
        row, _ = await tokens.peek_join_token(session, token_hash="h-kept", now=NOW)
        assert row is not None and row.name == "kept" and not session.in_transaction()  # it went in a batch
    await _given_back(engine)


async def _given_back(engine: Any, *, within: float = 5.0) -> None:
    """Wait until every pooled connection is back (a batch lane keeps its own ``LINGER`` seconds)."""
    for _ in range(int(within / 0.005)):
        if not engine.pool.checkedout():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{engine.pool.checkedout()} pooled connection(s) still out after {within} s")


async def test_a_lane_keeps_its_connection_while_requests_keep_coming_and_gives_it_back_when_idle(
    pg_url: str, engine_for: Any
) -> None:
    engine = engine_for(pg_url)
    checkouts: list[object] = []
    event.listen(engine.sync_engine, "checkout", lambda *args: checkouts.append(args[0]))
    sessions = make_session_factory(engine)
    await _add_tokens(sessions, ("a", "h-a"))
    checkouts.clear()
    batches = sessions.kw["info"][hot.BATCHER]
    # Far longer than any pause between the peeks below, however loaded the machine.
    batches.linger = 30.0

    async def peek() -> None:
        async with sessions() as session:
            assert (await tokens.peek_join_token(session, token_hash="h-a", now=NOW))[0] is not None

    for _ in range(3):  # one after another, each within the linger of the one before
        await peek()
        assert engine.pool.checkedout() == 1
    assert len(checkouts) == 1  # one checkout for the run
    batches.linger = 0.05
    await peek()  # still on the lane's connection; after it the lane lingers 50 ms only
    assert len(checkouts) == 1
    await _given_back(engine)  # an idle lane gives its connection back
    batches.linger = 30.0
    await peek()
    assert engine.pool.checkedout() == 1 and len(checkouts) == 2
    await close_sessions(sessions)  # at shutdown: given back at once, before the engine is disposed
    assert engine.pool.checkedout() == 0
    await peek()
    await _given_back(engine, within=0.5)  # and no lingering after it
