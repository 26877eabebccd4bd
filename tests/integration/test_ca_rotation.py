"""Issuing-CA rotation with overlap, on Postgres, as API Gateway sees it.

rotate → the truststore holds the old and the new issuing CA and the root; activate → new leaves
come from the new issuer; an old and a new leaf both pass ``openssl verify -CAfile truststore.pem``
with no ``-untrusted`` (the leaf alone, as API Gateway checks it); retire is refused while the old
issuer's leaves live and allowed once the last has expired (time moved through ``now=``), after
which the old issuer — and its leaves — are gone from the truststore. Two replicas on one database
follow every step without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import update

from issuer.errors import ClientError
from issuer.service.ca.rotation import activate, retire, rotate_issuer
from issuer.service.ca.signers import KeySigners
from issuer.service.ca.status import ca_status
from issuer.store.models import Certificate
from tests.support.harness import PASSPHRASE, Harness, new_csr, running_issuer
from tests.support.x509_check import OpenSSLCheckError, openssl_verify

CONFIG = """
[issuer]
trust_domain = "test.example"
registry_refresh = "1s"

[[roles]]
name = "onprem"
methods = ["token"]
ttl = "24h"
max_ttl = "72h"
"""
MAX_TTL = timedelta(hours=72)
SETTLE = timedelta(seconds=2)


def signers(h: Harness) -> KeySigners:
    return KeySigners(ca_dir=h.settings.ca_dir, passphrase=lambda: PASSPHRASE.encode())


async def truststore(h: Harness) -> bytes:
    resp = await h.client.get("/v1/truststore")
    assert resp.status == 200
    return await resp.read()


def names(pem: bytes) -> list[str]:
    return [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(pem)]


def fingerprints(pem: bytes) -> set[str]:
    return {c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(pem)}


async def issue(h: Harness, name: str, *, ttl: str | None = None) -> x509.Certificate:
    body: dict[str, str] = {"csr": new_csr()[1], "token": await h.token(name=name)}
    if ttl:
        body["ttl"] = ttl
    status, answer = await h.post("/v1/issue/token", body)
    assert status == 201, answer
    return x509.load_pem_x509_certificate(answer["certificate"].encode())


def leaf_pem(leaf: x509.Certificate) -> bytes:
    return leaf.public_bytes(serialization.Encoding.PEM)


async def eventually(check: Callable[[], Awaitable[None]], *, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            await check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def rotate(h: Harness, *, now: datetime | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    return await rotate_issuer(
        h.service.sessions,
        ca_dir=h.settings.ca_dir,
        passphrase=lambda: PASSPHRASE.encode(),
        now=now or datetime.now(UTC),
        validity=kwargs.pop("validity", timedelta(days=90)),  # type: ignore[arg-type]
        min_validity=MAX_TTL,
        trust_domain="test.example",
        **kwargs,  # type: ignore[arg-type]
    )


async def test_overlap_old_and_new_leaves_verify_leaf_alone_then_retire_after_the_last_expiry(
    tmp_path: Path, pg_url: str
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        old_leaf = await issue(h, "before", ttl="72h")
        old_short = await issue(h, "before-short", ttl="1h")
        old_issuer = old_leaf.issuer.rfc4514_string()
        rotation = await rotate(h)
        new_name = rotation.issuer.subject
        assert new_name.startswith("CN=test.example Issuing CA ") and rotation.issuer.state == "prepared"
        assert rotation.key_path.exists() and rotation.key_path.stat().st_mode & 0o777 == 0o600

        async def trusts_the_new_issuer() -> None:
            assert names(await truststore(h)) == [old_issuer, new_name, "CN=Issuer Root CA"]

        await eventually(trusts_the_new_issuer)
        assert (await issue(h, "prepared-signs-nothing")).issuer.rfc4514_string() == old_issuer

        done = await activate(
            h.service.sessions, fingerprint=None, now=datetime.now(UTC), min_validity=MAX_TTL, load_signer=signers(h)
        )
        assert done.issuer.fingerprint_sha256 == rotation.issuer.fingerprint_sha256
        assert done.previous is not None and done.previous.subject == old_issuer
        assert done.previous_leaves.live == 3 and done.previous_leaves.last_expiry == old_leaf.not_valid_after_utc

        lagging: list[x509.Certificate] = []  # signed by the old issuer until the replica refreshed

        async def signs_with_the_new_issuer() -> None:
            leaf = await issue(h, f"after-{datetime.now(UTC).timestamp()}")
            if leaf.issuer.rfc4514_string() == old_issuer:
                lagging.append(leaf)
            assert leaf.issuer.rfc4514_string() == new_name

        await eventually(signs_with_the_new_issuer)
        new_leaf = await issue(h, "after")
        overlap = await truststore(h)
        assert names(overlap) == [new_name, old_issuer, "CN=Issuer Root CA"]
        for leaf in (old_leaf, new_leaf):
            openssl_verify(leaf_pem(leaf), b"", overlap)  # -CAfile truststore.pem leaf.pem, no -untrusted

        # Retire: refused while the old issuer's leaves live, naming how many and when the last expires.
        with pytest.raises(ClientError) as refused:
            await retire(
                h.service.sessions,
                fingerprint=done.previous.fingerprint_sha256[:12],
                now=datetime.now(UTC),
                settle=SETTLE,
            )
        assert refused.value.code == "issuer_has_live_leaves"
        assert f"{3 + len(lagging)} live leaves" in refused.value.detail
        assert old_leaf.not_valid_after_utc.strftime("%Y-%m-%d %H:%MZ") in refused.value.detail
        # One second before the last leaf expires it is still refused (the 1h leaf no longer counts) ...
        with pytest.raises(ClientError, match="1 live leaf;"):
            await retire(
                h.service.sessions,
                fingerprint=done.previous.fingerprint_sha256[:12],
                now=old_leaf.not_valid_after_utc - timedelta(seconds=1),
                settle=SETTLE,
            )
        assert old_short.not_valid_after_utc < old_leaf.not_valid_after_utc
        # ... and allowed once it has.
        retired = await retire(
            h.service.sessions,
            fingerprint=done.previous.fingerprint_sha256[:12],
            now=old_leaf.not_valid_after_utc + timedelta(seconds=1),
            settle=SETTLE,
        )
        assert retired.overridden is None and retired.leaves.issued == 3 + len(lagging) and retired.leaves.live == 0

        async def old_issuer_gone() -> None:
            assert names(await truststore(h)) == [new_name, "CN=Issuer Root CA"]

        await eventually(old_issuer_gone)
        after = await truststore(h)
        openssl_verify(leaf_pem(new_leaf), b"", after)
        with pytest.raises(OpenSSLCheckError):  # the old issuer's leaves are no longer trusted
            openssl_verify(leaf_pem(old_leaf), b"", after)
        # Retiring twice, or the active issuer, is refused.
        with pytest.raises(ClientError) as twice:
            await retire(
                h.service.sessions, fingerprint=done.previous.fingerprint_sha256, now=datetime.now(UTC), settle=SETTLE
            )
        assert twice.value.code == "issuer_retired"


async def test_retire_force_revoked_leaves_and_the_active_issuer(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        leaf = await issue(h, "live")
        revoked = await issue(h, "revoked")
        rotation = await rotate(h)
        done = await activate(
            h.service.sessions,
            fingerprint=rotation.issuer.fingerprint_sha256[:8],
            now=datetime.now(UTC),
            min_validity=MAX_TTL,
        )
        assert done.previous is not None
        old = done.previous.fingerprint_sha256
        # The active issuer is never retired, not even with --force.
        for force in (False, True):
            with pytest.raises(ClientError) as active:
                await retire(
                    h.service.sessions,
                    fingerprint=rotation.issuer.fingerprint_sha256,
                    now=datetime.now(UTC),
                    settle=SETTLE,
                    force=force,
                )
            assert active.value.code == "issuer_active"
        # A revoked leaf needs no issuer in the truststore; a live one does.
        async with h.service.sessions() as session, session.begin():
            await session.execute(
                update(Certificate)
                .where(Certificate.serial.in_([format(leaf.serial_number, "x")]))
                .values(status="revoked", revoked_at=datetime.now(UTC), revocation_reason="keyCompromise")
            )
        with pytest.raises(ClientError) as one_left:
            await retire(h.service.sessions, fingerprint=old, now=datetime.now(UTC), settle=SETTLE)
        assert one_left.value.code == "issuer_has_live_leaves" and "1 live leaf;" in one_left.value.detail
        async with h.service.sessions() as session, session.begin():
            await session.execute(
                update(Certificate)
                .where(Certificate.serial == format(revoked.serial_number, "x"))
                .values(status="revoked", revoked_at=datetime.now(UTC), revocation_reason="keyCompromise")
            )
        # No live leaves now (revoked ones need no issuer in the truststore), but it signed a moment ago.
        with pytest.raises(ClientError) as settling:
            await retire(h.service.sessions, fingerprint=old, now=datetime.now(UTC), settle=timedelta(minutes=5))
        assert settling.value.code == "issuer_recently_active"
        forced = await retire(
            h.service.sessions, fingerprint=old, now=datetime.now(UTC), settle=timedelta(minutes=5), force=True
        )
        assert forced.overridden is not None and "replicas may still sign" in forced.overridden
        assert old not in fingerprints(await truststore_via_export(h))


async def truststore_via_export(h: Harness) -> bytes:
    from issuer.service.ca.registry import export_truststore

    return await export_truststore(h.service.sessions, now=datetime.now(UTC))


async def test_force_retires_live_leaves_and_says_so(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        leaf = await issue(h, "live")
        rotation = await rotate(h)
        done = await activate(h.service.sessions, fingerprint=None, now=datetime.now(UTC), min_validity=MAX_TTL)
        assert done.previous is not None
        forced = await retire(
            h.service.sessions,
            fingerprint=done.previous.fingerprint_sha256,
            now=datetime.now(UTC) + SETTLE * 2,
            settle=SETTLE,
            force=True,
        )
        assert forced.overridden is not None and "1 live leaf" in forced.overridden
        assert forced.leaves.live == 1
        exported = await truststore_via_export(h)
        status = await ca_status(h.service.sessions, now=datetime.now(UTC), ca_dir=h.settings.ca_dir)
        (root,) = status.roots
        assert fingerprints(exported) == {rotation.issuer.fingerprint_sha256, root.record.fingerprint_sha256}
        with pytest.raises(OpenSSLCheckError):
            openssl_verify(leaf_pem(leaf), b"", exported)


async def test_two_replicas_follow_rotate_activate_and_retire(tmp_path: Path, pg_url: str) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_issuer(tmp_path, pg_url, config=CONFIG))
        b = await stack.enter_async_context(running_issuer(tmp_path, pg_url, config=CONFIG))
        old_leaf = await issue(b, "old")
        rotation = await rotate(a)
        new_fp = rotation.issuer.fingerprint_sha256

        async def both_trust_it() -> None:
            for h in (a, b):
                assert new_fp in fingerprints(await truststore(h))

        await eventually(both_trust_it)
        done = await activate(a.service.sessions, fingerprint=None, now=datetime.now(UTC), min_validity=MAX_TTL)
        assert done.previous is not None

        issued = [old_leaf]

        async def both_sign_with_it() -> None:
            for h in (a, b):
                leaf = await issue(h, f"n-{datetime.now(UTC).timestamp()}")
                issued.append(leaf)
                assert leaf.issuer.rfc4514_string() == rotation.issuer.subject

        await eventually(both_sign_with_it)
        for h in (a, b):
            openssl_verify(leaf_pem(old_leaf), b"", await truststore(h))
        last_old = max(c.not_valid_after_utc for c in issued if c.issuer == old_leaf.issuer)
        await retire(
            b.service.sessions,
            fingerprint=done.previous.fingerprint_sha256,
            now=last_old + timedelta(seconds=1),
            settle=SETTLE,
        )

        async def both_dropped_it() -> None:
            for h in (a, b):
                assert done.previous is not None
                assert done.previous.fingerprint_sha256 not in fingerprints(await truststore(h))

        await eventually(both_dropped_it)


async def test_concurrent_rotations_prepare_exactly_one(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        before = set(h.settings.ca_dir.glob("issuing-*.key.pem"))
        results = await asyncio.gather(rotate(h), rotate(h), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1, results
        assert isinstance(errors[0], ClientError) and errors[0].code == "issuer_prepared_exists"
        status = await ca_status(h.service.sessions, now=datetime.now(UTC), ca_dir=h.settings.ca_dir)
        assert [i.phase for i in status.issuers] == ["prepared", "active"]
        # The loser's key file was removed: every key on disk is one the registry names.
        assert len(set(h.settings.ca_dir.glob("issuing-*.key.pem")) - before) == 1


async def test_an_operator_clock_behind_the_last_change_still_moves_every_replica(tmp_path: Path, pg_url: str) -> None:
    """Replicas notice a change by the newest updated_at. A retirement stamped earlier than the activation
    before it (the operator's clock a minute behind the machine that activated) must still be seen."""
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        rotation = await rotate(h)
        done = await activate(h.service.sessions, fingerprint=None, now=datetime.now(UTC), min_validity=MAX_TTL)
        assert done.previous is not None
        old = done.previous.fingerprint_sha256

        async def saw_the_activation() -> None:
            leaf = await issue(h, f"n-{datetime.now(UTC).timestamp()}")
            assert leaf.issuer.rfc4514_string() == rotation.issuer.subject
            assert old in fingerprints(await truststore(h))

        await eventually(saw_the_activation)
        behind = datetime.now(UTC) - timedelta(minutes=1)
        await retire(h.service.sessions, fingerprint=old, now=behind, settle=timedelta(0), force=True)

        async def dropped_it() -> None:
            assert old not in fingerprints(await truststore(h))

        await eventually(dropped_it)


async def test_the_cycle_on_both_databases(tmp_path: Path, db_url: str) -> None:
    """The embedded SQLite default runs the same commands (no FOR UPDATE there; SQLite serialises writers)."""
    async with running_issuer(tmp_path, db_url, config=CONFIG) as h:
        old = await issue(h, "old")
        rotation = await rotate(h)
        done = await activate(h.service.sessions, fingerprint=None, now=datetime.now(UTC), min_validity=MAX_TTL)
        assert done.previous is not None and done.previous_leaves.live == 1
        assert done.previous_leaves.last_expiry == old.not_valid_after_utc
        with pytest.raises(ClientError, match="1 live leaf"):
            await retire(
                h.service.sessions, fingerprint=done.previous.fingerprint_sha256, now=datetime.now(UTC), settle=SETTLE
            )
        await retire(
            h.service.sessions,
            fingerprint=done.previous.fingerprint_sha256,
            now=old.not_valid_after_utc + timedelta(seconds=1),
            settle=SETTLE,
        )
        status = await ca_status(h.service.sessions, now=datetime.now(UTC), ca_dir=h.settings.ca_dir)
        assert [(i.phase, i.leaves.issued) for i in status.issuers] == [("active", 0), ("retired", 1)]
        assert fingerprints(await truststore_via_export(h)) == {
            rotation.issuer.fingerprint_sha256,
            status.roots[0].record.fingerprint_sha256,
        }
