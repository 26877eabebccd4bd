"""A sealed, checkpointed audit trail to tamper with, and SQL run the way a database superuser would."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from cryptography import x509
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.audit.chain_store import CheckpointRecord
from issuer.audit.sealer import Sealer
from issuer.audit.verifier import KeyTrust, VerifyOptions, VerifyReport, verify_chain
from issuer.http.keys import AUDIT
from issuer.store.engine import make_engine, make_session_factory
from tests.support.harness import Harness, new_csr, running_issuer


@dataclass(frozen=True, slots=True)
class Trail:
    url: str
    state: Path
    ids: tuple[int, ...]  # attestation ids in seal order

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return tuple(x509.load_pem_x509_certificates((self.state / "ca" / "root.pem").read_bytes()))


async def issue(h: Harness, name: str) -> dict[str, Any]:
    token = await h.token(name=name)
    _, csr = new_csr()
    status, body = await h.post("/v1/issue/token", {"csr": csr, "token": token})
    assert status == 201, body
    return body


async def refuse(h: Harness) -> None:
    _, csr = new_csr()
    status, _ = await h.post("/v1/issue/token", {"csr": csr, "token": "ijt_not-a-token"})
    assert status == 401


async def sealed_trail(tmp_path: Path, url: str, *, rows: int = 8, config: str | None = None) -> Trail:
    """Two rows checkpointed at seq 2, then ``rows - 2`` more checkpointed at the end; the app then stops."""
    kwargs: dict[str, Any] = {"seal_every": None}  # the test seals by hand, at known points
    if config is not None:
        kwargs["config"] = config
    async with running_issuer(tmp_path, url, **kwargs) as h:
        sealer = h.client.app[AUDIT].sealer
        await issue(h, "first")
        await refuse(h)
        assert await sealer.seal_once() == 2
        assert (await sealer.checkpoint_once(force=True)) is not None
        for i in range(rows - 2):
            if i % 3 == 2:
                await refuse(h)
            else:
                await issue(h, f"m{i}")
        assert await sealer.seal_once() == rows - 2
        assert (await sealer.checkpoint_once(force=True)) is not None
        ids = tuple(a.id for a in await h.attestations())
    assert len(ids) == rows
    return Trail(url=url, state=tmp_path / "state", ids=ids)


@asynccontextmanager
async def sessions_of(url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(url, pool_size=3)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def verify(
    trail: Trail,
    *,
    now: datetime | None = None,
    trusted_roots: bool = True,
    anchors: Mapping[int, CheckpointRecord] | None = None,
    **options: Any,
) -> VerifyReport:
    async with sessions_of(trail.url) as sessions:
        return await verify_chain(
            sessions,
            now=now or datetime.now(UTC),
            trust=KeyTrust(roots=trail.roots if trusted_roots else None),
            options=VerifyOptions(**options),
            anchors=anchors,
        )


async def seal_now(trail: Trail) -> int:
    """What a running replica's sealer would do now (no checkpoint key: sealing only)."""
    async with sessions_of(trail.url) as sessions:
        return await Sealer(sessions, clock=lambda: datetime.now(UTC), keys=None).seal_once()


async def as_superuser(url: str, *statements: str) -> None:
    """Run SQL directly, outside the application, with every privilege (Postgres: the postgres role)."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):

        def run() -> None:
            connection = sqlite3.connect(str(parsed.database))
            try:
                for statement in statements:
                    connection.execute(statement)
                connection.commit()
            finally:
                connection.close()

        await asyncio.to_thread(run)
        return
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        async with connection.transaction():
            for statement in statements:
                await connection.execute(statement)
    finally:
        await connection.close()


def sql_time(url: str, moment: datetime) -> str:
    """A timestamp literal as a superuser's SQL would write it (SQLite keeps naive UTC text)."""
    naive = moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return f"'{naive}'" if url.startswith("sqlite") else f"'{naive}+00'::timestamptz"


def untriggered(url: str, *tables: str) -> list[str]:
    """What a superuser types first on Postgres: switch off the append-only triggers (no-op on SQLite)."""
    if url.startswith("sqlite"):
        return []
    return [f"ALTER TABLE {t} DISABLE TRIGGER USER" for t in tables]


HOUR = timedelta(hours=1)
