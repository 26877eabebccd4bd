"""GET /v1/crls and the roots' CRLs (issue 20 §2): chain checkers accept the CRLs.

Leaves are token-issued by the real app on a migrated database; ``openssl verify -crl_check_all``
is the independent checker. Before root CRLs existed, a chain checker refused every client
(``unable to get certificate CRL`` for the root): the test shows that too.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select

from ca.files import load_key_file
from ca.signer import LocalFileSigner
from issuer.errors import ClientError
from issuer.http.keys import CRLS, REGISTRY
from issuer.service.ca.register import activate_issuer
from issuer.service.ca.rotation import retire
from issuer.service.ca.signers import KeySigners
from issuer.service.revocation.bundle import export_crls
from issuer.service.revocation.root_crls import RootCrls
from issuer.store.models import CaRootCrl
from tests.integration.test_revocation import Clock, crl_number, crl_serials, issue, truststore
from tests.integration.test_revocation_crl import revoke_serial
from tests.support.ca_registry import prepare_file_issuer
from tests.support.harness import PASSPHRASE, Harness, running_issuer
from tests.support.x509_check import openssl_verify_crl_check_all


async def get_crls(h: Harness) -> tuple[list[x509.CertificateRevocationList], bytes, str]:
    resp = await h.client.get("/v1/crls")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/x-pem-file"
    body = await resp.read()
    return load_crls(body), body, resp.headers["ETag"]


def load_crls(body: bytes) -> list[x509.CertificateRevocationList]:
    end = b"-----END X509 CRL-----\n"
    blocks = [block + end for block in body.split(end) if block.strip()]
    assert b"".join(blocks) == body, "nothing but X509 CRL blocks"
    return [x509.load_pem_x509_crl(block) for block in blocks]


def root_of(h: Harness) -> x509.Certificate:
    return h.client.app[REGISTRY].snapshot.roots[0]


def by_issuer(crls: list[x509.CertificateRevocationList]) -> dict[str, x509.CertificateRevocationList]:
    return {c.issuer.rfc4514_string(): c for c in crls}


async def test_the_bundle_holds_every_issuing_ca_and_the_root_with_a_strong_etag(tmp_path: Path, db_url: str) -> None:
    async with running_issuer(tmp_path, db_url) as h:
        crls, body, etag = await get_crls(h)
        names = [c.issuer.rfc4514_string() for c in crls]
        assert names == ["CN=Issuer Issuing CA", "CN=Issuer Root CA"]
        root = root_of(h)
        root_crl = crls[1]
        assert root_crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
        assert root_crl.next_update_utc is not None
        assert root_crl.next_update_utc - root_crl.last_update_utc == timedelta(days=7)
        assert list(root_crl) == []
        aki = root_crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        assert aki == root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        assert etag.startswith('"') and not etag.startswith("W/")
        again = await h.client.get("/v1/crls", headers={"If-None-Match": etag})
        assert again.status == 304 and again.headers["ETag"] == etag
        _, same, _ = await get_crls(h)
        assert same == body  # nothing was due: the stored CRLs, not new ones
        # GET /v1/crl?issuer= takes a root's fingerprint too (it answered 404 before).
        fingerprint = root.fingerprint(hashes.SHA256()).hex()
        single = await h.client.get(f"/v1/crl?issuer={fingerprint[:12]}")
        assert single.status == 200 and single.headers["Content-Type"] == "application/pkix-crl"
        assert await single.read() == root_crl.public_bytes(serialization.Encoding.DER)
        unknown = await h.client.get(f"/v1/crl?issuer={'0' * 16}")
        assert unknown.status == 404 and (await unknown.json(content_type=None))["code"] == "issuer_not_found"


async def test_replicas_serve_the_same_bundle(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as a, running_issuer(tmp_path, pg_url) as b:
        _, from_a, etag = await get_crls(a)
        _, from_b, etag_b = await get_crls(b)
        assert from_a == from_b and etag == etag_b
        concurrent = await asyncio.gather(*(h.client.get("/v1/crls") for h in (a, b) for _ in range(6)))
        assert {await r.read() for r in concurrent} == {from_a}


async def test_openssl_crl_check_all_accepts_a_good_leaf_and_refuses_a_revoked_one(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        good, bad = await issue(h, "good"), await issue(h, "bad")
        await revoke_serial(h, bad["serial"])
        trust = await truststore(h)
        crls, body, _ = await get_crls(h)
        passed, output = openssl_verify_crl_check_all(good["certificate"].encode(), trust, body)
        assert passed, output
        passed, output = openssl_verify_crl_check_all(bad["certificate"].encode(), trust, body)
        assert not passed and "certificate revoked" in output
        # Without the root's CRL (all there was before), a chain checker refuses even the good leaf.
        issuing_only = crls[0].public_bytes(serialization.Encoding.PEM)
        passed, output = openssl_verify_crl_check_all(good["certificate"].encode(), trust, issuing_only)
        assert not passed and "unable to get certificate CRL" in output


async def test_the_root_crl_is_signed_again_when_half_its_validity_is_left(tmp_path: Path, pg_url: str) -> None:
    clock = Clock()
    async with running_issuer(tmp_path, pg_url, clock=clock) as h:
        root_name = "CN=Issuer Root CA"
        first = by_issuer((await get_crls(h))[0])[root_name]
        clock.offset = timedelta(days=3, hours=12) - timedelta(minutes=5)
        assert crl_number(by_issuer((await get_crls(h))[0])[root_name]) == crl_number(first)
        clock.offset = timedelta(days=3, hours=12, minutes=5)
        later = by_issuer((await get_crls(h))[0])[root_name]
        assert crl_number(later) == crl_number(first) + 1
        assert later.next_update_utc is not None and later.next_update_utc > datetime.now(UTC) + timedelta(days=10)
        async with h.service.sessions() as session:
            rows = (await session.scalars(select(CaRootCrl))).all()
        assert [(r.crl_number, r.source) for r in rows] == [(crl_number(later), "signed")]  # only the current one


async def test_a_retired_issuing_ca_goes_on_its_root_crl(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        old_leaf = await issue(h, "old")
        old_issuer = x509.load_pem_x509_certificate(old_leaf["chain"].encode())
        prepared = await prepare_file_issuer(
            h.service.sessions,
            ca_dir=h.settings.ca_dir,
            passphrase=PASSPHRASE.encode(),
            now=datetime.now(UTC),
            validity=timedelta(days=30),
            common_name="Issuer Issuing CA 2",
        )
        await activate_issuer(h.service.sessions, fingerprint_prefix=prepared.fingerprint_sha256, now=datetime.now(UTC))
        fingerprint = old_issuer.fingerprint(hashes.SHA256()).hex()
        await retire(
            h.service.sessions, fingerprint=fingerprint, now=datetime.now(UTC), settle=timedelta(0), force=True
        )
        await h.client.app[REGISTRY].refresh()
        crls, body, _ = await get_crls(h)
        named = by_issuer(crls)
        assert "CN=Issuer Issuing CA" not in named  # out of the truststore: no CRL of its own
        root_crl = named["CN=Issuer Root CA"]
        assert crl_serials(root_crl) == {format(old_issuer.serial_number, "x"): x509.ReasonFlags.cessation_of_operation}
        # A relying party trusting only the root, given the old issuing CA by the client (and that CA's own
        # CRL), refuses the leaf: its issuing CA is revoked.
        root_pem = root_of(h).public_bytes(serialization.Encoding.PEM)
        own = await h.client.get(f"/v1/crl?issuer={fingerprint}")
        assert own.status == 200
        with_own = body + x509.load_der_x509_crl(await own.read()).public_bytes(serialization.Encoding.PEM)
        passed, output = openssl_verify_crl_check_all(
            old_leaf["certificate"].encode(), root_pem, with_own, untrusted_pem=old_leaf["chain"].encode()
        )
        assert not passed and "error 23 at 1 depth lookup: certificate revoked" in output
        new_leaf = await issue(h, "new")
        passed, output = openssl_verify_crl_check_all(new_leaf["certificate"].encode(), await truststore(h), body)
        assert passed, output


async def test_an_offline_root_is_served_once_its_crl_is_imported(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url):
        pass  # creates and registers the CA; its root key is then taken offline
    vault = tmp_path / "vault"
    vault.mkdir()
    (tmp_path / "state" / "ca" / "root.key.pem").rename(vault / "root.key.pem")
    async with running_issuer(tmp_path, pg_url) as h:
        crls, _, _ = await get_crls(h)
        assert [c.issuer.rfc4514_string() for c in crls] == ["CN=Issuer Issuing CA"]  # no root CRL yet

        # The ceremony where the key is: sign a long-lived CRL, then import it on the service side.
        root = root_of(h)
        key = load_key_file(vault / "root.key.pem", passphrase=PASSPHRASE.encode())
        signer = LocalFileSigner(issuer_certificate=root, issuer_key=key, roots=[root])
        now = datetime.now(UTC)
        made = await signer.sign_crl([], now=now, next_update=now + timedelta(days=180), crl_number=41)
        roots = RootCrls(h.service.sessions, load_signer=None, clock=lambda: datetime.now(UTC))
        imported = await roots.import_crl(made.public_bytes(serialization.Encoding.PEM), now=now)
        assert (imported.crl_number, imported.source) == (41, "imported")
        crls, body, _ = await get_crls(h)
        assert crl_number(by_issuer(crls)["CN=Issuer Root CA"]) == 41
        good = await issue(h, "good")
        passed, output = openssl_verify_crl_check_all(good["certificate"].encode(), await truststore(h), body)
        assert passed, output

        # Not signed again in time: publishing refuses the expired CRL rather than upload it.
        keys = KeySigners(ca_dir=h.settings.ca_dir, passphrase=lambda: PASSPHRASE.encode())
        later = datetime.now(UTC) + timedelta(days=181)
        with pytest.raises(ClientError) as refused:
            await export_crls(h.service.sessions, load_signer=keys, load_root_signer=keys.root, clock=lambda: later)
        assert refused.value.code == "crls_incomplete" and "Root CA: its CRL expired" in refused.value.detail


async def test_the_background_task_keeps_the_crls_current_without_requests(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, crls_every=0.2) as h:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            async with h.service.sessions() as session:
                stored = (await session.scalars(select(CaRootCrl))).all()
            if stored or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert len(stored) == 1 and stored[0].source == "signed"
        assert h.client.app[CRLS] is not None
