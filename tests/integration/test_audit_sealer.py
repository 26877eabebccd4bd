"""The sealer in running services: rows sealed within 5 s of commit, several replicas on one Postgres,
checkpoints refused over a gap or an edit, the last seal on shutdown, and the lag gauges."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from issuer.audit import chain_store as store
from issuer.http.keys import AUDIT
from issuer.service.revocation.revoke import RevocationTarget, revoke
from issuer.store.models import Attestation, AuditChainEntry
from tests.support.audit_trail import as_superuser, issue, refuse, sealed_trail, sessions_of, untriggered, verify
from tests.support.harness import BASE_CONFIG, running_issuer
from tests.support.metrics_scrape import Scrape

FAST_CHECKPOINTS = BASE_CONFIG + '\n[audit]\ncheckpoint_interval = "1s"\ncheckpoint_rows = 25\n'


async def sealed_ids(url: str) -> set[int]:
    async with sessions_of(url) as sessions, sessions() as session:
        return set((await session.scalars(select(AuditChainEntry.attestation_id))).all())


async def test_rows_are_sealed_within_five_seconds_of_commit(tmp_path: Path, db_url: str) -> None:
    async with running_issuer(tmp_path, db_url, config=FAST_CHECKPOINTS) as h:
        committed: dict[str, float] = {}
        latencies: dict[str, float] = {}

        async def watch() -> None:
            async with sessions_of(db_url) as sessions:
                while len(latencies) < 6:
                    async with sessions() as session:
                        rows = await session.execute(
                            select(Attestation.certificate_serial)
                            .join(AuditChainEntry, AuditChainEntry.attestation_id == Attestation.id)
                            .where(Attestation.certificate_serial.is_not(None))
                        )
                        for (serial,) in rows:
                            if serial in committed and serial not in latencies:
                                latencies[serial] = time.monotonic() - committed[serial]
                    await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        for i in range(6):
            body = await issue(h, f"m{i}")  # the response comes after the commit
            committed[body["serial"]] = time.monotonic()
            await asyncio.sleep(0.3)
        await asyncio.wait_for(watcher, timeout=20)
        assert max(latencies.values()) < 5.0, latencies
        deadline = time.monotonic() + 15
        while (report := await verify_now(tmp_path, db_url)).last_checkpoint != report.chain_end:
            assert time.monotonic() < deadline, "no checkpoint covered the head within 15 s"
            await asyncio.sleep(0.3)
        assert report.ok, report.findings


async def verify_now(tmp_path: Path, url: str):  # type: ignore[no-untyped-def]
    from tests.support.audit_trail import Trail

    return await verify(Trail(url=url, state=tmp_path / "state", ids=()))


async def test_busy_database_with_two_replicas(tmp_path: Path, pg_url: str) -> None:
    """Two app instances on one Postgres issue, refuse and revoke concurrently; the chain holds every row."""
    async with (
        running_issuer(tmp_path, pg_url, config=FAST_CHECKPOINTS) as a,
        running_issuer(tmp_path, pg_url, config=FAST_CHECKPOINTS) as b,
    ):
        limit = asyncio.Semaphore(8)

        async def work(h, i: int) -> None:  # type: ignore[no-untyped-def]
            async with limit:
                if i % 5 == 4:
                    await refuse(h)
                else:
                    await issue(h, f"{id(h)}-{i}")

        await asyncio.gather(*(work(h, i) for i in range(40) for h in (a, b)))
        await revoke(
            a.service.sessions,
            RevocationTarget("principal", f"{id(a)}-0"),
            reason="keyCompromise",
            now=datetime.now(UTC),
        )
        async with sessions_of(pg_url) as sessions:
            deadline = time.monotonic() + 20
            while True:
                async with sessions() as session:
                    rows = await session.scalar(select(func.count()).select_from(Attestation))
                    end = await store.chain_end(session)
                    latest = await store.latest_checkpoint(session)
                if rows == end and latest is not None and latest.seq == end:
                    break
                assert time.monotonic() < deadline, (rows, end, latest)
                await asyncio.sleep(0.3)
            async with sessions() as session:
                checkpoints = await store.checkpoints(session)
    assert rows == 81 and len(checkpoints) >= 3
    report = await verify_now(tmp_path, pg_url)
    assert report.ok, report.findings
    assert report.walked == 81


async def test_no_checkpoint_over_deleted_checkpoints(tmp_path: Path, db_url: str) -> None:
    async with running_issuer(tmp_path, db_url, seal_every=None) as h:
        sealer = h.client.app[AUDIT].sealer
        await issue(h, "a")
        await sealer.seal_once()
        assert await sealer.checkpoint_once(force=True) is not None
        await as_superuser(db_url, *untriggered(db_url, "audit_checkpoints"), "DELETE FROM audit_checkpoints")
        await issue(h, "b")
        await sealer.seal_once()
        assert await sealer.checkpoint_once(force=True) is None
        assert sealer.halted is not None and "deleted" in sealer.halted
        scrape = Scrape.parse(await (await h.client.get("/metrics")).text())
        assert scrape.total("issuer_audit_uncheckpointed_rows") == 2
        assert scrape.total("issuer_audit_unsealed_rows") == 0


async def test_no_checkpoint_over_an_edited_row(tmp_path: Path, db_url: str) -> None:
    async with running_issuer(tmp_path, db_url, seal_every=None) as h:
        sealer = h.client.app[AUDIT].sealer
        await issue(h, "a")
        await refuse(h)
        await sealer.seal_once()
        assert await sealer.checkpoint_once(force=True) is not None
        await issue(h, "b")
        await sealer.seal_once()
        edited = (await h.attestations())[-1].id
        await as_superuser(
            db_url, *untriggered(db_url, "attestations"), f"UPDATE attestations SET role = 'edge' WHERE id = {edited}"
        )
        assert await sealer.checkpoint_once(force=True) is None
        assert sealer.halted is None  # an edit is reported each time, not remembered


async def test_the_last_rows_are_sealed_and_checkpointed_on_shutdown(tmp_path: Path, db_url: str) -> None:
    async with running_issuer(tmp_path, db_url, seal_every=None) as h:
        await issue(h, "a")
        await refuse(h)
    assert len(await sealed_ids(db_url)) == 2
    report = await verify_now(tmp_path, db_url)
    assert report.ok and report.last_checkpoint == 2


async def test_rows_written_before_the_chain_are_adopted(tmp_path: Path, db_url: str) -> None:
    """Upgrading a database with history: its rows, however old (and whatever their clocks said), are
    sealed in id order on the first run; the rule against rows written into the past starts after."""
    trail = await sealed_trail(tmp_path, db_url, rows=3)
    back = "created_at - INTERVAL '{}'" if db_url.startswith("postgresql") else "datetime(created_at, '-{}')"
    month_back = f"UPDATE attestations SET created_at = {back.format('30 days')}"
    skewed = f"UPDATE attestations SET created_at = {back.format('2 hours')} WHERE id = {trail.ids[1]}"
    await as_superuser(
        db_url,
        *untriggered(db_url, "attestations", "audit_chain", "audit_checkpoints"),
        "DELETE FROM audit_chain",
        "DELETE FROM audit_checkpoints",
        month_back,
        skewed,  # a row two hours "older" than the one before it: a replica's clock was wrong back then
    )
    async with running_issuer(tmp_path, db_url, seal_every=None) as h:
        sealer = h.client.app[AUDIT].sealer
        await sealer.seal_once()  # (the first background tick at start-up may have done it already)
        assert await sealed_ids(db_url) == set(trail.ids)
        await issue(h, "after-upgrade")
        assert await sealer.seal_once() == 1
        assert await sealer.checkpoint_once(force=True) is not None
    report = await verify_now(tmp_path, db_url)
    assert report.ok and report.walked == 4
