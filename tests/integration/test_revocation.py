"""Revocation end to end: revoke by serial, principal and EC2 instance, then see it on the CRL and /v1/revoked.

The real app on a migrated Postgres (and SQLite where it is cheap), real certificates issued
through the API, openssl checking every CRL, and the Lambda authorizer's own parser reading
``/v1/revoked`` (the contract between the two).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from clients.authorizer import SourceError, parse_revocation_document
from issuer.errors import ClientError, NotFound
from issuer.service.revocation.lists import export_revoked
from issuer.service.revocation.revoke import RevocationTarget, revoke
from issuer.store import certificates
from issuer.store.models import Attestation
from tests.support.harness import Harness, check_issued, new_csr, running_issuer
from tests.support.x509_check import openssl_verify_crl

EC2_CONFIG = """
[issuer]
trust_domain = "test.example"

[[roles]]
name = "onprem"
methods = ["token"]
ttl = "24h"

[[roles]]
name = "short"
methods = ["token"]
ttl = "1h"

[[roles]]
name = "fleet"
methods = ["aws-ec2"]
allow_unbounded_documents = true
"""


class Clock:
    """The app's clock: real time plus an offset a test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def openssl_style(serial: str) -> str:
    """A serial as ``openssl x509 -serial`` shows it (upper case, colon pairs, a 00 when the high bit is set)."""
    padded = serial if len(serial) % 2 == 0 else "0" + serial
    text = ":".join(padded[i : i + 2] for i in range(0, len(padded), 2)).upper()
    return "00:" + text if int(padded[0], 16) >= 8 else text


async def issue(h: Harness, name: str, *, role: str = "onprem") -> dict[str, Any]:
    status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name=name, role=role)})
    assert status == 201, body
    check_issued(body)
    return body


async def get_crl(h: Harness, query: str = "") -> x509.CertificateRevocationList:
    resp = await h.client.get("/v1/crl" + query)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(await resp.read())


async def get_revoked(h: Harness) -> dict[str, Any]:
    resp = await h.client.get("/v1/revoked")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    body = await resp.read()
    parse_revocation_document(body)  # the authorizer accepts every document we serve
    document: dict[str, Any] = json.loads(body)
    return document


async def truststore(h: Harness) -> bytes:
    return await (await h.client.get("/v1/truststore")).read()


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def crl_serials(crl: x509.CertificateRevocationList) -> dict[str, x509.ReasonFlags | None]:
    out: dict[str, x509.ReasonFlags | None] = {}
    for entry in crl:
        try:
            out[format(entry.serial_number, "x")] = entry.extensions.get_extension_for_class(
                x509.CRLReason
            ).value.reason
        except x509.ExtensionNotFound:
            out[format(entry.serial_number, "x")] = None
    return out


async def audit_rows(h: Harness, **where: Any) -> list[Attestation]:
    return [
        a for a in await h.attestations() if a.method == "revoke" and all(getattr(a, k) == v for k, v in where.items())
    ]


# -- by serial ------------------------------------------------------------------------------


async def test_revoke_by_serial_lists_it_on_the_crl_and_the_revoked_list(tmp_path: Path, db_url: str) -> None:
    async with running_issuer(tmp_path, db_url) as h:
        kept, gone = await issue(h, "m1"), await issue(h, "m2")
        before = await get_crl(h)
        assert list(before) == []
        openssl_verify_crl(before, await truststore(h))

        done = await revoke(
            h.service.sessions,
            RevocationTarget("serial", openssl_style(gone["serial"])),
            reason="KEY-compromise",
            now=datetime.now(UTC),
            note="disk sold",
            actor="alice@ops",
        )
        assert done.reason == "keyCompromise"
        assert [(c.serial, c.status, c.principal) for c in done.revoked] == [(gone["serial"], "active", "m2")]
        assert done.already_revoked == () and done.binding is None

        rows = {c.serial: c for c in await h.certificates()}
        assert rows[gone["serial"]].status == "revoked" and rows[gone["serial"]].revocation_reason == "keyCompromise"
        assert rows[gone["serial"]].revoked_at is not None
        assert rows[kept["serial"]].status == "active" and rows[kept["serial"]].revoked_at is None
        (audit,) = await audit_rows(h)
        assert (audit.outcome, audit.code, audit.certificate_serial, audit.principal, audit.role) == (
            "success",
            "certificate_revoked",
            gone["serial"],
            "m2",
            "onprem",
        )
        assert audit.reason == "keyCompromise by alice@ops: disk sold"
        assert audit.request_id == done.request_id

        crl = await get_crl(h)
        openssl_verify_crl(crl, await truststore(h))
        assert crl_serials(crl) == {gone["serial"]: x509.ReasonFlags.key_compromise}
        assert crl_number(crl) > crl_number(before)
        document = await get_revoked(h)
        assert document["serials"] == [gone["serial"]]
        (entry,) = document["entries"]
        leaf = x509.load_pem_x509_certificate(gone["certificate"].encode())
        assert entry["serial"] == gone["serial"] and entry["reason"] == "keyCompromise"
        assert datetime.fromisoformat(entry["not_after"]) == leaf.not_valid_after_utc
        issuing = x509.load_pem_x509_certificate(gone["chain"].encode())
        assert entry["issuer_fingerprint"] == issuing.fingerprint(hashes.SHA256()).hex()

        # Revoking it again changes nothing: the first reason and time stand.
        again = await revoke(
            h.service.sessions, RevocationTarget("serial", gone["serial"]), reason="superseded", now=datetime.now(UTC)
        )
        assert again.revoked == () and [c.reason for c in again.already_revoked] == ["keyCompromise"]
        assert (await h.certificates())[1].revocation_reason == "keyCompromise"
        assert len(await audit_rows(h)) == 1


async def test_revoke_refuses_unknown_serials_and_reasons(tmp_path: Path, db_url: str) -> None:
    async with running_issuer(tmp_path, db_url) as h:
        body = await issue(h, "m1")
        now = datetime.now(UTC)
        with pytest.raises(NotFound) as missing:
            await revoke(h.service.sessions, RevocationTarget("serial", "00:ab:cd"), reason="unspecified", now=now)
        assert missing.value.code == "certificate_not_found"
        for bad_serial in ("xyz", "12:zz"):
            with pytest.raises(ClientError) as invalid:
                await revoke(h.service.sessions, RevocationTarget("serial", bad_serial), reason="unspecified", now=now)
            assert invalid.value.code == "serial_invalid"
        for bad_reason in ("removeFromCRL", "compromised", ""):
            with pytest.raises(ClientError) as reason:
                await revoke(h.service.sessions, RevocationTarget("serial", body["serial"]), reason=bad_reason, now=now)
            assert reason.value.code == "reason_invalid"
        with pytest.raises(ClientError) as reset:
            await revoke(
                h.service.sessions,
                RevocationTarget("serial", body["serial"]),
                reason="unspecified",
                now=now,
                reset_binding=True,
            )
        assert reset.value.code == "reset_binding_needs_instance"
        with pytest.raises(NotFound) as nobody:
            await revoke(h.service.sessions, RevocationTarget("principal", "m9"), reason="unspecified", now=now)
        assert nobody.value.code == "principal_not_found"
        # None of that changed anything.
        assert [c.status for c in await h.certificates()] == ["active"]
        assert await audit_rows(h) == []


# -- by principal -----------------------------------------------------------------------------


async def supersede(h: Harness, serial: str) -> None:
    """Mark ``serial`` superseded, as a renewal does (the repository function renewal uses)."""
    async with h.service.sessions() as session, session.begin():
        record = await certificates.get_certificate(session, serial)
        assert record is not None
        assert await certificates.supersede_certificate(session, certificate_id=record.id)


async def test_revoke_by_principal_takes_active_and_superseded_unexpired_certificates(
    tmp_path: Path, db_url: str
) -> None:
    async with running_issuer(tmp_path, db_url, config=EC2_CONFIG) as h:
        old = await issue(h, "web-1")  # replaced by a renewal, but still valid for 24 h
        short = await issue(h, "web-1", role="short")  # 1 h: expired when we revoke below
        current = await issue(h, "web-1")
        other = await issue(h, "web-2")
        await supersede(h, old["serial"])

        later = datetime.now(UTC) + timedelta(hours=2)
        preview = await revoke(
            h.service.sessions,
            RevocationTarget("principal", "web-1"),
            reason="affiliation_changed",
            now=later,
            dry_run=True,
        )
        assert preview.dry_run and preview.reason == "affiliationChanged"
        assert sorted((c.serial, c.status) for c in preview.revoked) == sorted(
            [(old["serial"], "superseded"), (current["serial"], "active")]
        )
        assert {c.serial: c.status for c in await h.certificates()}[current["serial"]] == "active"
        assert await audit_rows(h) == []

        done = await revoke(
            h.service.sessions, RevocationTarget("principal", "web-1"), reason="affiliationChanged", now=later
        )
        assert sorted(c.serial for c in done.revoked) == sorted([old["serial"], current["serial"]])
        statuses = {c.serial: c.status for c in await h.certificates()}
        assert statuses == {
            old["serial"]: "revoked",
            short["serial"]: "active",  # expired at `later`: nothing to revoke
            current["serial"]: "revoked",
            other["serial"]: "active",
        }
        assert sorted(str(a.certificate_serial) for a in await audit_rows(h, request_id=done.request_id)) == sorted(
            [old["serial"], current["serial"]]
        )
        document = await get_revoked(h)
        assert document["serials"] == sorted([old["serial"], current["serial"]], key=lambda s: int(s, 16))
        assert set(crl_serials(await get_crl(h))) == {old["serial"], current["serial"]}

        # Once revoked, a second run finds nothing live and says what was revoked before.
        again = await revoke(
            h.service.sessions, RevocationTarget("principal", "web-1"), reason="unspecified", now=later
        )
        assert again.revoked == ()
        assert sorted(c.serial for c in again.already_revoked) == sorted([old["serial"], current["serial"]])


# -- the JSON list -----------------------------------------------------------------------------


async def test_revoked_list_etag_304_and_the_authorizer_contract(tmp_path: Path, db_url: str) -> None:
    async with running_issuer(tmp_path, db_url) as h:
        body = await issue(h, "m1")
        empty = await h.client.get("/v1/revoked")
        raw = await empty.read()
        assert parse_revocation_document(raw).serials == frozenset()
        etag = empty.headers["ETag"]
        assert etag.startswith('"') and not etag.startswith("W/")
        same = await h.client.get("/v1/revoked")
        assert await same.read() == raw and same.headers["ETag"] == etag  # same content, same bytes, same tag
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            resp = await h.client.get("/v1/revoked", headers={"If-None-Match": header})
            assert resp.status == 304 and await resp.read() == b"" and resp.headers["ETag"] == etag
        resp = await h.client.get("/v1/revoked", headers={"If-None-Match": '"other"'})
        assert resp.status == 200

        await revoke(
            h.service.sessions, RevocationTarget("serial", body["serial"]), reason="unspecified", now=datetime.now(UTC)
        )
        changed = await h.client.get("/v1/revoked", headers={"If-None-Match": etag})
        assert changed.status == 200 and changed.headers["ETag"] != etag
        parsed = parse_revocation_document(await changed.read())
        assert parsed.serials == frozenset({body["serial"]})
        document = json.loads(await (await h.client.get("/v1/revoked")).read())
        assert list(document) == ["version", "generated_at", "serials", "entries"]
        assert list(document["entries"][0]) == ["serial", "issuer_fingerprint", "revoked_at", "reason", "not_after"]
        assert document["entries"][0]["reason"] == "unspecified"
        # The contract is real: the authorizer refuses a document that breaks it.
        broken = {**document, "serials": [s.upper() for s in document["serials"]]}
        with pytest.raises(SourceError):
            parse_revocation_document(json.dumps(broken).encode())


async def test_expired_revoked_certificates_drop_off_both_lists(tmp_path: Path, db_url: str) -> None:
    clock = Clock()
    async with running_issuer(tmp_path, db_url, config=EC2_CONFIG, clock=clock) as h:
        short, long = await issue(h, "a", role="short"), await issue(h, "b")
        for body in (short, long):
            await revoke(
                h.service.sessions, RevocationTarget("serial", body["serial"]), reason="superseded", now=clock()
            )
        assert (await get_revoked(h))["serials"] == sorted([short["serial"], long["serial"]], key=lambda s: int(s, 16))
        assert set(crl_serials(await get_crl(h))) == {short["serial"], long["serial"]}
        before = await get_revoked(h)

        clock.offset = timedelta(hours=1, minutes=5)  # the 1 h certificate has expired, the 24 h one has not
        after = await get_revoked(h)
        assert after["serials"] == [long["serial"]]
        leaf = x509.load_pem_x509_certificate(short["certificate"].encode())
        # generated_at is when the content last changed: here, the expiry that took a serial off.
        assert datetime.fromisoformat(after["generated_at"]) == leaf.not_valid_after_utc
        assert after["generated_at"] != before["generated_at"]
        crl = await get_crl(h)
        assert set(crl_serials(crl)) == {long["serial"]}
        openssl_verify_crl(crl, await truststore(h))


async def test_two_replicas_serve_the_same_revoked_list(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as a, running_issuer(tmp_path, pg_url) as b:
        body = await issue(a, "m1")
        await revoke(
            a.service.sessions, RevocationTarget("serial", body["serial"]), reason="unspecified", now=datetime.now(UTC)
        )
        first, second = await a.client.get("/v1/revoked"), await b.client.get("/v1/revoked")
        body_a = await first.read()
        assert body_a == await second.read()
        # What `issuer truststore publish --revoked-key` uploads is the same document.
        assert (await export_revoked(a.service.sessions, now=datetime.now(UTC))).body == body_a
        assert first.headers["ETag"] == second.headers["ETag"]
        resp = await b.client.get("/v1/revoked", headers={"If-None-Match": first.headers["ETag"]})
        assert resp.status == 304
