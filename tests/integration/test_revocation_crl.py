"""GET /v1/crl across replicas and issuers: stored once, served as the same bytes, crlNumber only ever grows.

Two ``running_issuer`` apps on one Postgres are two replicas. Every CRL is checked by openssl
against the truststore (which holds the issuing CAs), and its signer is checked against the
issuing CA named in the request.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from issuer.http.keys import REGISTRY
from issuer.service.ca.register import activate_issuer
from issuer.service.revocation.revoke import RevocationTarget, revoke
from issuer.store import revocations as store
from issuer.store.engine import make_session_factory
from issuer.store.models import CaCrl, CaIssuer
from issuer.store.revocations import CrlRecord
from tests.integration.test_revocation import Clock, crl_number, crl_serials, get_crl, issue, truststore
from tests.support.ca_registry import prepare_file_issuer
from tests.support.harness import PASSPHRASE, Harness, running_issuer
from tests.support.x509_check import openssl_verify_crl


async def revoke_serial(h: Harness, serial: str) -> None:
    await revoke(h.service.sessions, RevocationTarget("serial", serial), reason="keyCompromise", now=datetime.now(UTC))


async def issuer_rows(h: Harness) -> list[tuple[str, int]]:
    async with h.service.sessions() as session:
        return [(r.state, r.crl_number) for r in (await session.scalars(select(CaIssuer).order_by(CaIssuer.id))).all()]


async def crl_rows(h: Harness) -> list[tuple[int, int]]:
    async with h.service.sessions() as session:
        return [(r.issuer_id, r.crl_number) for r in (await session.scalars(select(CaCrl).order_by(CaCrl.id))).all()]


async def test_the_crl_is_stored_once_and_every_replica_serves_the_same_bytes(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as a, running_issuer(tmp_path, pg_url) as b:
        first = await a.client.get("/v1/crl")
        der, etag = await first.read(), first.headers["ETag"]
        from_b = await b.client.get("/v1/crl")
        assert await from_b.read() == der and from_b.headers["ETag"] == etag
        assert crl_number(x509.load_der_x509_crl(der)) == 1
        for h in (a, b):
            resp = await h.client.get("/v1/crl", headers={"If-None-Match": etag})
            assert resp.status == 304 and resp.headers["ETag"] == etag
        assert (await a.client.get("/v1/crl", headers={"If-None-Match": '"stale"'})).status == 200

        # A revocation on one replica: the other builds the next CRL, the first serves it, never an older one.
        body = await issue(a, "m1")
        await revoke_serial(a, body["serial"])
        on_b = await get_crl(b)
        assert crl_number(on_b) == 2 and set(crl_serials(on_b)) == {body["serial"]}
        on_a = await get_crl(a)
        assert crl_number(on_a) == 2 and on_a.public_bytes(serialization.Encoding.DER) == on_b.public_bytes(
            serialization.Encoding.DER
        )
        assert (await a.client.get("/v1/crl", headers={"If-None-Match": etag})).status == 200

        second = await issue(b, "m2")
        await revoke_serial(b, second["serial"])
        third = await get_crl(a)
        assert crl_number(third) == 3 and set(crl_serials(third)) == {body["serial"], second["serial"]}
        openssl_verify_crl(third, await truststore(b))
        # Only the current CRL is kept; the issuer row holds the last number used.
        assert await crl_rows(a) == [(1, 3)]
        assert await issuer_rows(a) == [("active", 3)]


async def test_concurrent_rebuilds_on_two_replicas_make_one_crl(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as a, running_issuer(tmp_path, pg_url) as b:
        await get_crl(a)
        body = await issue(a, "m1")
        await revoke_serial(a, body["serial"])
        responses = await asyncio.gather(*(h.client.get("/v1/crl") for h in (a, b) for _ in range(10)))
        assert {r.status for r in responses} == {200}
        bodies = {await r.read() for r in responses}
        assert len(bodies) == 1  # every request of both replicas got the same CRL
        crl = x509.load_der_x509_crl(bodies.pop())
        assert crl_number(crl) == 2 and set(crl_serials(crl)) == {body["serial"]}
        # The replicas that waited for the issuer's row lock found the new CRL: no number was used twice or wasted.
        assert await issuer_rows(a) == [("active", 2)]


async def test_a_crl_is_rebuilt_when_older_than_an_hour_and_not_before(tmp_path: Path, pg_url: str) -> None:
    clock = Clock()
    async with running_issuer(tmp_path, pg_url, clock=clock) as h:
        first = await get_crl(h)
        assert first.next_update_utc is not None
        assert first.next_update_utc - first.last_update_utc == timedelta(hours=24)
        clock.offset = timedelta(minutes=59)
        assert crl_number(await get_crl(h)) == crl_number(first)
        clock.offset = timedelta(hours=1, minutes=1)
        later = await get_crl(h)
        assert crl_number(later) == crl_number(first) + 1
        assert later.last_update_utc > first.last_update_utc
        openssl_verify_crl(later, await truststore(h))


async def test_each_registered_issuer_has_its_own_crl(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        old_leaf = await issue(h, "old")
        old_issuer = x509.load_pem_x509_certificate(old_leaf["chain"].encode())
        old_fp = old_issuer.fingerprint(hashes.SHA256()).hex()
        prepared = await prepare_file_issuer(
            h.service.sessions,
            ca_dir=h.settings.ca_dir,
            passphrase=PASSPHRASE.encode(),
            now=datetime.now(UTC),
            validity=timedelta(days=30),
            common_name="Issuer Issuing CA 2",
        )
        await activate_issuer(
            h.service.sessions, fingerprint_prefix=prepared.fingerprint_sha256[:12], now=datetime.now(UTC)
        )
        await h.client.app[REGISTRY].refresh()
        new_leaf = await issue(h, "new")
        assert new_leaf["chain"] != old_leaf["chain"]
        for body in (old_leaf, new_leaf):
            await revoke_serial(h, body["serial"])
        bundle = await truststore(h)

        active = await get_crl(h)  # the default: the active issuer, now the new one
        assert active.issuer.rfc4514_string() == "CN=Issuer Issuing CA 2"
        assert set(crl_serials(active)) == {new_leaf["serial"]}
        openssl_verify_crl(active, bundle)
        # The old issuer (prepared again) still has live leaves: its CRL is signed by its own key.
        spelled = ":".join(old_fp[i : i + 2] for i in range(0, 16, 2)).upper()
        for prefix in (old_fp[:8], spelled):
            old = await get_crl(h, f"?issuer={prefix}")
            assert old.issuer == old_issuer.subject
            public_key = old_issuer.public_key()
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            assert old.is_signature_valid(public_key)
            assert set(crl_serials(old)) == {old_leaf["serial"]}
            openssl_verify_crl(old, bundle)
        assert crl_number(old) == 1 and crl_number(active) == 1  # numbered per issuer

        for query, status, code in (
            ("?issuer=xyz", 400, "issuer_invalid"),
            ("?issuer=ab", 400, "issuer_invalid"),
            (f"?issuer={'0' * 64}", 404, "issuer_not_found"),
        ):
            resp = await h.client.get("/v1/crl" + query)
            problem = await resp.json(content_type=None)
            assert (resp.status, problem["code"]) == (status, code), problem


async def test_without_a_usable_key_a_stored_crl_is_served_until_its_next_update(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        prepared = await prepare_file_issuer(
            h.service.sessions,
            ca_dir=h.settings.ca_dir,
            passphrase=PASSPHRASE.encode(),
            now=datetime.now(UTC),
            validity=timedelta(days=30),
            common_name="Issuer Issuing CA 2",
        )
        await h.client.app[REGISTRY].refresh()
        query = f"?issuer={prepared.fingerprint_sha256[:16]}"
        key_file = next(h.settings.ca_dir.glob(f"issuing-{prepared.fingerprint_sha256[:16]}*.key.pem"))
        saved = key_file.read_bytes()
        key_file.unlink()
        # No key and nothing stored: 503, nothing stored, the number not used up.
        resp = await h.client.get("/v1/crl" + query)
        problem = await resp.json(content_type=None)
        assert (resp.status, problem["code"]) == (503, "crl_unavailable") and resp.headers["Retry-After"]
        assert await crl_rows(h) == []
        key_file.write_bytes(saved)
        stored = await get_crl(h, query)
        assert crl_number(stored) == 1
        key_file.unlink()

    for offset, expected in ((timedelta(hours=2), 200), (timedelta(hours=25), 503)):
        clock = Clock()
        clock.offset = offset
        # A fresh replica, which has not loaded that key: due for a rebuild, but it cannot sign.
        async with running_issuer(tmp_path, pg_url, clock=clock) as replica:
            resp = await replica.client.get("/v1/crl" + query)
            assert resp.status == expected, await resp.text()
            if expected == 200:
                assert await resp.read() == stored.public_bytes(serialization.Encoding.DER)


async def test_crl_numbers_only_grow_and_the_database_refuses_one_twice(pg_url: str, engine_for) -> None:  # type: ignore[no-untyped-def]
    sessions = make_session_factory(engine_for(pg_url))
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        issuer = CaIssuer(
            fingerprint_sha256="f" * 64,
            subject="CN=t",
            serial="1",
            certificate_pem="",
            chain_pem="",
            key_ref="file:x",
            state="prepared",
            not_before=now,
            not_after=now,
            created_at=now,
            updated_at=now,
        )
        session.add(issuer)
        await session.flush()
        issuer_id = issuer.id
    async with sessions() as session, session.begin():
        assert [await store.take_crl_number(session, issuer_id=issuer_id) for _ in range(2)] == [1, 2]
        with pytest.raises(LookupError):
            await store.take_crl_number(session, issuer_id=issuer_id + 1)
        record = CrlRecord(issuer_id, 2, now, now + timedelta(hours=1), "0" * 64, 0)
        await store.store_crl(session, record, der=b"x", now=now)
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await store.store_crl(session, record, der=b"y", now=now)
    async with sessions() as session:
        assert await store.crl_der(session, issuer_id=issuer_id, crl_number=2) == b"x"
