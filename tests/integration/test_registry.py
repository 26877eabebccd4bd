"""The CA issuer registry: the database is the source of truth, and every replica follows it within seconds.

Two apps share one Postgres (two replicas). A new issuing CA prepared on the database is in
both truststores within a refresh; activating it switches signing on both without a restart;
leaves of the old and the new issuer both verify *leaf alone* against the truststore, as API
Gateway verifies them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from issuer.service.ca.register import activate_issuer
from issuer.service.janitor import Janitor
from issuer.store import replay_guards
from tests.support.ca_registry import prepare_file_issuer
from tests.support.harness import PASSPHRASE, Harness, new_csr, running_issuer
from tests.support.x509_check import openssl_verify

CONFIG = """
[issuer]
trust_domain = "test.example"
registry_refresh = "1s"

[[roles]]
name = "onprem"
methods = ["token"]
"""


async def truststore(h: Harness) -> bytes:
    resp = await h.client.get("/v1/truststore")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/x-pem-file")
    return await resp.read()


async def issue(h: Harness, name: str) -> x509.Certificate:
    status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name=name)})
    assert status == 201, body
    return x509.load_pem_x509_certificate(body["certificate"].encode())


async def eventually(check, *, seconds: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            await check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


def subjects(pem: bytes) -> list[str]:
    return [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(pem)]


async def test_the_truststore_holds_the_issuing_ca_and_the_root_and_verifies_a_leaf_alone(
    tmp_path: Path, pg_url: str
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        pem = await truststore(h)
        assert subjects(pem) == ["CN=Issuer Issuing CA", "CN=Issuer Root CA"]  # issuing first, root last
        leaf_pem = (await issue(h, "m1")).public_bytes(serialization.Encoding.PEM)
        openssl_verify(leaf_pem, b"", pem)  # no -untrusted: the leaf alone, as API Gateway does
        bundle = await (await h.client.get("/v1/bundle")).read()
        assert subjects(bundle) == ["CN=Issuer Root CA"]
        # With the roots alone, a leaf-only check fails: why the truststore must hold the issuing CA.
        try:
            openssl_verify(leaf_pem, b"", bundle)
        except AssertionError:
            pass
        else:
            raise AssertionError("a leaf verified against the roots alone")
        etag = (await h.client.get("/v1/truststore")).headers["ETag"]
        resp = await h.client.get("/v1/truststore", headers={"If-None-Match": etag})
        assert resp.status == 304


async def test_replicas_follow_prepare_and_activate_without_a_restart(tmp_path: Path, pg_url: str) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_issuer(tmp_path, pg_url, config=CONFIG))
        b = await stack.enter_async_context(running_issuer(tmp_path, pg_url, config=CONFIG))
        old_leaf = await issue(b, "before")
        prepared = await prepare_file_issuer(
            a.service.sessions,
            ca_dir=a.settings.ca_dir,
            passphrase=PASSPHRASE.encode(),
            now=datetime.now(UTC),
            validity=timedelta(days=30),
            common_name="Issuer Issuing CA 2",
        )

        async def both_trust_the_new_issuer() -> None:
            for h in (a, b):
                assert "CN=Issuer Issuing CA 2" in subjects(await truststore(h))

        await eventually(both_trust_the_new_issuer)
        # Prepared: trusted, not yet signing.
        assert (await issue(b, "still-old")).issuer == old_leaf.issuer
        await activate_issuer(
            a.service.sessions, fingerprint_prefix=prepared.fingerprint_sha256[:12], now=datetime.now(UTC)
        )

        async def b_signs_with_the_new_issuer() -> None:
            leaf = await issue(b, f"after-{datetime.now(UTC).timestamp()}")
            assert leaf.issuer.rfc4514_string() == "CN=Issuer Issuing CA 2"

        await eventually(b_signs_with_the_new_issuer)
        pem = await truststore(b)
        assert subjects(pem) == ["CN=Issuer Issuing CA 2", "CN=Issuer Issuing CA", "CN=Issuer Root CA"]
        new_leaf = await issue(a, "new")
        for leaf in (old_leaf, new_leaf):
            openssl_verify(leaf.public_bytes(serialization.Encoding.PEM), b"", pem)


async def test_expired_replay_guards_are_tidied_and_live_ones_kept(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        now = datetime.now(UTC)
        async with h.service.sessions() as session, session.begin():
            for i in range(7):
                await replay_guards.add_replay_guard(
                    session, kind="sts", digest=f"{i:064x}", expires_at=now - timedelta(minutes=1), now=now
                )
            await replay_guards.add_replay_guard(
                session, kind="sts", digest="f" * 64, expires_at=now + timedelta(minutes=10), now=now
            )
        janitor = Janitor(h.service.sessions, clock=lambda: now, refusals=Counter())
        assert await janitor.tidy() == 7
        async with h.service.sessions() as session:
            assert await replay_guards.count_replay_guards(session) == 1
            # The live guard still refuses its replay.
            assert not await replay_guards.add_replay_guard(
                session, kind="sts", digest="f" * 64, expires_at=now + timedelta(minutes=10), now=now
            )


def test_the_janitor_reports_refused_sts_proofs_once(caplog) -> None:  # type: ignore[no-untyped-def]
    from collections import Counter

    refusals: Counter[tuple[str, str]] = Counter({("aws-iam", "sts_rejected"): 3, ("token", "token_used"): 9})
    janitor = Janitor(None, clock=lambda: datetime.now(UTC), refusals=refusals)  # type: ignore[arg-type]
    caplog.set_level("INFO", logger="issuer.janitor")
    janitor.report()
    refusals[("aws-iam", "sts_replayed")] += 2
    janitor.report()
    janitor.report()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refused STS proofs since the last report: 3 (sts_rejected=3)",
        "refused STS proofs since the last report: 2 (sts_replayed=2)",
    ]


async def test_two_processes_registering_one_ca_at_once_do_not_fail(tmp_path: Path, pg_url: str) -> None:
    # `issuer serve --workers N` on an empty registry: every worker may try to register the CA on disk.
    from issuer.service.ca.register import register_file_ca
    from issuer.store.engine import make_engine, make_session_factory
    from tests.support.harness import write_ca

    write_ca(tmp_path)
    engines = [make_engine(pg_url) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(register_file_ca(make_session_factory(e), ca_dir=tmp_path / "ca", now=datetime.now(UTC)) for e in engines)
        )
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(r is not None for r in results) == 1


async def test_a_replica_that_cannot_follow_keeps_signing_and_says_so_in_readyz(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        before = await issue(h, "before")
        prepared = await prepare_file_issuer(
            h.service.sessions,
            ca_dir=h.settings.ca_dir,
            passphrase=PASSPHRASE.encode(),
            now=datetime.now(UTC),
            validity=timedelta(days=30),
            common_name="Issuer Issuing CA 2",
        )
        key_file = h.settings.ca_dir / f"issuing-{prepared.fingerprint_sha256[:16]}.key.pem"
        hidden = key_file.rename(tmp_path / "elsewhere.key.pem")  # the key never reached this replica
        await activate_issuer(
            h.service.sessions, fingerprint_prefix=prepared.fingerprint_sha256[:12], now=datetime.now(UTC)
        )

        async def not_ready() -> None:
            resp = await h.client.get("/readyz")
            assert resp.status == 503
            assert "registry: stale" in (await resp.json())["detail"]

        await eventually(not_ready)
        # Still serving, with the issuer it could load.
        assert (await issue(h, "meanwhile")).issuer == before.issuer
        hidden.rename(key_file)

        async def following() -> None:
            assert (await h.client.get("/readyz")).status == 200
            assert (await issue(h, f"after-{datetime.now(UTC).timestamp()}")).issuer.rfc4514_string() == (
                "CN=Issuer Issuing CA 2"
            )

        await eventually(following)
