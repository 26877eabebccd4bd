"""The refusals of CA rotation, each both ways, and `ca status` with an injected ``now``.

rotate: a validity under the longest role max_ttl, a second prepared issuer, a taken name, a root
that expires too soon, a root key that is offline. activate: no/ambiguous prepared issuers, an
issuer that expires within the max TTL (refused, then --force, and its leaves are clamped to it),
a missing issuing key, a retired issuer, a roll-back. status: leaf counts, phases, the 30-day warning.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from ca.errors import CAStateError
from ca.files import init_ca
from issuer.errors import ClientError, ConfigError, IssuerError, NotFound
from issuer.service.ca.lifecycle import EXPIRY_WARNING
from issuer.service.ca.rotation import activate, retire, rotate_issuer
from issuer.service.ca.signers import KeySigners
from issuer.service.ca.status import ca_status
from tests.support.ca_registry import prepare_file_issuer
from tests.support.harness import PASSPHRASE, Harness, new_csr, running_issuer

CONFIG = """
[issuer]
trust_domain = "test.example"
registry_refresh = "1s"

[[roles]]
name = "onprem"
methods = ["token"]
ttl = "24h"
max_ttl = "72h"

[[roles]]
name = "long"
methods = ["token"]
ttl = "24h"
max_ttl = "5d"
"""
MAX_TTL = timedelta(days=5)  # the longest role max_ttl above


def passphrase() -> bytes:
    return PASSPHRASE.encode()


async def rotate(h: Harness, *, now: datetime | None = None, validity: timedelta = timedelta(days=90), **kw: object):  # type: ignore[no-untyped-def]
    return await rotate_issuer(
        h.service.sessions,
        ca_dir=h.settings.ca_dir,
        passphrase=passphrase,
        now=now or datetime.now(UTC),
        validity=validity,
        min_validity=MAX_TTL,
        trust_domain="test.example",
        **kw,  # type: ignore[arg-type]
    )


async def codes(work) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(IssuerError) as caught:
        await work
    return caught.value.code


async def test_rotate_refusals_and_force(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        # Shorter than the longest role max_ttl (5d): refused; exactly 5d: accepted.
        with pytest.raises(ClientError, match=r"shorter than the longest role max_ttl \(5d\)") as short:
            await rotate(h, validity=timedelta(days=4))
        assert short.value.code == "validity_too_short"
        first = await rotate(h, validity=MAX_TTL)
        assert first.issuer.not_after - first.issuer.not_before >= MAX_TTL
        # A second prepared issuer is refused ...
        assert await codes(rotate(h)) == "issuer_prepared_exists"
        # ... unless forced: the one that never signed is retired in the same transaction.
        second = await rotate(h, force=True)
        assert [r.fingerprint_sha256 for r in second.replaced] == [first.issuer.fingerprint_sha256]
        assert second.issuer.subject == f"{first.issuer.subject} (2)"  # the default name is never reused
        status = await ca_status(h.service.sessions, now=datetime.now(UTC), ca_dir=h.settings.ca_dir)
        assert [(i.phase, i.in_truststore) for i in status.issuers] == [
            ("prepared", True),
            ("retired", False),
            ("active", True),
        ]
        # A name in use is refused: two live issuers with one name would confuse chain building.
        await activate(h.service.sessions, fingerprint=None, now=datetime.now(UTC), min_validity=MAX_TTL)
        taken = second.issuer.subject.removeprefix("CN=")
        assert await codes(rotate(h, common_name=taken)) == "issuer_name_taken"
        named = await rotate(h, common_name="Issuing CA 2027")
        assert named.issuer.subject == "CN=Issuing CA 2027"


async def test_rotate_needs_the_root_key_and_a_root_that_outlives_max_ttl(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        root_key = h.settings.ca_dir / "root.key.pem"
        offline = tmp_path / "vault" / "root.key.pem"
        offline.parent.mkdir()
        root_key.rename(offline)
        with pytest.raises(ConfigError) as missing:
            await rotate(h)
        assert missing.value.code == "root_key_unavailable"
        assert f"the root key is needed to prepare a new issuing CA and is not at {root_key}" in missing.value.detail
        assert list(h.settings.ca_dir.glob("issuing-*")) == []  # nothing written
        offline.rename(root_key)
        assert (await rotate(h)).issuer.state == "prepared"


async def test_a_root_expiring_within_max_ttl_refuses_rotation(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    init_ca(tmp_path / "state" / "ca", passphrase=passphrase(), now=datetime.now(UTC), root_validity=timedelta(days=30))
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        assert (await rotate(h, validity=timedelta(days=365))).issuer.not_after <= datetime.now(UTC) + timedelta(
            days=30
        )
        with pytest.raises(ClientError) as late:
            await rotate(h, now=datetime.now(UTC) + timedelta(days=26), force=True)
        assert late.value.code == "root_expires_too_soon" and "rotate the root first" in late.value.detail


async def test_activation_choice_checks_and_roll_back(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        sessions, now = h.service.sessions, datetime.now(UTC)
        signers = KeySigners(ca_dir=h.settings.ca_dir, passphrase=passphrase)
        assert await codes(activate(sessions, fingerprint=None, now=now, min_validity=MAX_TTL)) == "no_prepared_issuer"
        # Two prepared issuers (made with the low-level call that does not refuse): name one.
        a = await prepare_file_issuer(sessions, ca_dir=h.settings.ca_dir, passphrase=passphrase(), now=now,
                                      validity=timedelta(days=3), common_name="Short")  # fmt: skip
        b = await prepare_file_issuer(sessions, ca_dir=h.settings.ca_dir, passphrase=passphrase(), now=now,
                                      validity=timedelta(days=90), common_name="Long")  # fmt: skip
        with pytest.raises(ClientError) as ambiguous:
            await activate(sessions, fingerprint=None, now=now, min_validity=MAX_TTL)
        assert ambiguous.value.code == "issuer_ambiguous"
        assert (
            a.fingerprint_sha256[:16] in ambiguous.value.detail and b.fingerprint_sha256[:16] in ambiguous.value.detail
        )
        assert await codes(activate(sessions, fingerprint="zz", now=now, min_validity=MAX_TTL)) == "fingerprint_invalid"
        unknown = a.fingerprint_sha256[:15] + ("0" if a.fingerprint_sha256[15] != "0" else "1")
        assert await codes(activate(sessions, fingerprint=unknown, now=now, min_validity=MAX_TTL)) == "issuer_not_found"
        # 'Short' expires within the 5-day max TTL: refused, then forced — and its leaves never outlive it.
        with pytest.raises(ClientError) as too_soon:
            await activate(sessions, fingerprint=a.fingerprint_sha256[:10], now=now, min_validity=MAX_TTL)
        assert too_soon.value.code == "issuer_expires_too_soon"
        forced = await activate(sessions, fingerprint=a.fingerprint_sha256[:10], now=now, min_validity=MAX_TTL,
                                load_signer=signers, force=True)  # fmt: skip
        assert any("expires" in w for w in forced.warnings)
        await _refresh(h)
        status, body = await h.post(
            "/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(role="long", name="m"), "ttl": "5d"}
        )
        assert status == 201, body
        leaf = x509.load_pem_x509_certificate(body["certificate"].encode())
        assert leaf.issuer.rfc4514_string() == "CN=Short"
        assert leaf.not_valid_after_utc == forced.issuer.not_after  # clamped: never past its issuer
        # The issuing key must load here before anything switches.
        key = h.settings.ca_dir / f"issuing-{b.fingerprint_sha256[:16]}.key.pem"
        key.rename(tmp_path / "elsewhere.key.pem")
        with pytest.raises(CAStateError, match="is missing"):
            await activate(
                sessions, fingerprint=b.fingerprint_sha256, now=now, min_validity=MAX_TTL, load_signer=signers
            )
        assert await _active(h) == a.fingerprint_sha256
        (tmp_path / "elsewhere.key.pem").rename(key)
        done = await activate(sessions, fingerprint=b.fingerprint_sha256, now=now, min_validity=MAX_TTL,
                              load_signer=signers)  # fmt: skip
        assert done.previous is not None and done.previous.fingerprint_sha256 == a.fingerprint_sha256
        assert await codes(activate(sessions, fingerprint=b.fingerprint_sha256, now=now, min_validity=MAX_TTL)) == (
            "issuer_already_active"
        )
        # Roll back: the original issuer (previous, never retired) may be named and activated again.
        original = (await ca_status(sessions, now=now, ca_dir=h.settings.ca_dir)).issuers[-1]
        assert original.phase == "previous"
        await activate(sessions, fingerprint=original.record.fingerprint_sha256, now=now, min_validity=MAX_TTL)
        assert await _active(h) == original.record.fingerprint_sha256
        # A retired issuer never comes back; an expired one is refused.
        await retire(sessions, fingerprint=b.fingerprint_sha256, now=now, settle=timedelta(0), force=True)
        assert await codes(activate(sessions, fingerprint=b.fingerprint_sha256, now=now, min_validity=MAX_TTL)) == (
            "issuer_retired"
        )
        later = now + timedelta(days=4)
        assert await codes(activate(sessions, fingerprint=a.fingerprint_sha256, now=later, min_validity=MAX_TTL)) == (
            "issuer_expired"
        )


async def _refresh(h: Harness) -> None:
    await h.service.registry.refresh()


async def _active(h: Harness) -> str:
    status = await ca_status(h.service.sessions, now=datetime.now(UTC), ca_dir=h.settings.ca_dir)
    return next(i.record.fingerprint_sha256 for i in status.issuers if i.phase == "active")


async def test_status_counts_leaves_and_warns_thirty_days_before_the_active_issuer_expires(
    tmp_path: Path, pg_url: str
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        for name in ("m1", "m2"):
            status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name=name)})
            assert status == 201, body
        now = datetime.now(UTC)
        report = await ca_status(h.service.sessions, now=now, ca_dir=h.settings.ca_dir)
        (issuer,) = report.issuers
        assert issuer.phase == "active" and issuer.in_truststore
        assert (issuer.leaves.issued, issuer.leaves.live) == (2, 2)
        assert issuer.leaves.last_expiry is not None and issuer.leaves.last_expiry > now
        (root,) = report.roots
        assert root.key == "here" and root.issuers == 1 and issuer.root_fingerprint == root.record.fingerprint_sha256
        assert report.warnings == () and not report.expiring
        # 31 days before expiry: quiet; 29 days before: one warning naming the next step.
        quiet = issuer.record.not_after - EXPIRY_WARNING - timedelta(days=1)
        assert not (await ca_status(h.service.sessions, now=quiet, ca_dir=h.settings.ca_dir)).expiring
        close = issuer.record.not_after - timedelta(days=29)
        warned = await ca_status(h.service.sessions, now=close, ca_dir=h.settings.ca_dir)
        assert warned.expiring
        (line,) = warned.warnings
        assert "the active issuing CA CN=Issuer Issuing CA expires" in line and "in 29 days" in line
        assert "issuer ca rotate" in line
        # The leaves have expired by then: issued 2, live 0.
        assert (warned.issuers[0].leaves.issued, warned.issuers[0].leaves.live) == (2, 0)
        # With a successor prepared the warning says to activate it instead.
        successor = await rotate(h, now=close)
        line = (await ca_status(h.service.sessions, now=close, ca_dir=h.settings.ca_dir)).warnings[0]
        assert f"activate the prepared {successor.issuer.fingerprint_sha256[:16]}" in line
        # Root key offline is visible.
        (h.settings.ca_dir / "root.key.pem").rename(tmp_path / "root.key.pem")
        offline = await ca_status(h.service.sessions, now=now, ca_dir=h.settings.ca_dir)
        assert offline.roots[0].key == "offline"
        assert any("is prepared" in note for note in offline.notes)


async def test_unknown_fingerprints_are_not_found(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        with pytest.raises(NotFound):
            await retire(h.service.sessions, fingerprint="ffff" * 4, now=datetime.now(UTC), settle=timedelta(0))
