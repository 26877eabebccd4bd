"""Side-by-side root rotation with a root made by ``openssl`` (an independent peer), on Postgres.

add-root → both roots in the bundle and the truststore; rotate --root → an issuing CA under the new
root; old and new leaves both verify leaf-alone against the truststore; the old root cannot be
retired while an issuer under it is in use, and can once they are retired — then only the new root
is trusted. add-root refuses what cannot be a trust anchor.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from issuer.errors import ClientError, IssuerError
from issuer.service.ca.registry import export_bundle, export_truststore
from issuer.service.ca.roots import add_root, retire_root
from issuer.service.ca.rotation import activate, retire, rotate_issuer
from tests.support.harness import PASSPHRASE, Harness, new_csr, running_issuer
from tests.support.x509_check import OpenSSLCheckError, openssl_verify

CONFIG = """
[issuer]
trust_domain = "test.example"
registry_refresh = "1s"

[[roles]]
name = "onprem"
methods = ["token"]
"""
MAX_TTL = timedelta(hours=72)


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def openssl_root(
    directory: Path, *, name: str = "Second Root", days: int = 3650, extra: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """An ECDSA P-384 root made by openssl, its key encrypted PKCS#8 under the CA passphrase."""
    key, cert = directory / f"{name.replace(' ', '-')}.key.pem", directory / f"{name.replace(' ', '-')}.pem"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-aes-256-cbc",
            "-pass", f"pass:{PASSPHRASE}", "-out", str(key))  # fmt: skip
    openssl("req", "-x509", "-new", "-key", str(key), "-passin", f"pass:{PASSPHRASE}", "-sha384",
            "-days", str(days), "-subj", f"/CN={name}", "-out", str(cert),
            *(extra or ("-addext", "basicConstraints=critical,CA:TRUE",
                        "-addext", "keyUsage=critical,keyCertSign,cRLSign")))  # fmt: skip
    return cert, key


def passphrase() -> bytes:
    return PASSPHRASE.encode()


def fingerprint(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


def names(pem: bytes) -> list[str]:
    return [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(pem)]


async def issue(h: Harness, name: str) -> bytes:
    status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name=name)})
    assert status == 201, body
    return str(body["certificate"]).encode()


async def test_side_by_side_root_rotation(tmp_path: Path, pg_url: str) -> None:
    cert, key = openssl_root(tmp_path)
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        sessions, now = h.service.sessions, datetime.now(UTC)
        old_leaf = await issue(h, "old")
        added = await add_root(sessions, certificate_pem=cert.read_bytes(), now=now, ca_dir=h.settings.ca_dir,
                               key_file=key, passphrase=passphrase)  # fmt: skip
        assert added.root.fingerprint_sha256 == fingerprint(cert.read_bytes()) and added.key_ref == f"file:{key}"
        assert names(await export_bundle(sessions)) == ["CN=Issuer Root CA", "CN=Second Root"]
        rotation = await rotate_issuer(
            sessions, ca_dir=h.settings.ca_dir, passphrase=passphrase, now=now, validity=timedelta(days=90),
            min_validity=MAX_TTL, trust_domain="test.example",
        )  # fmt: skip
        # The default root is the newest one with a key: the new root.
        assert rotation.root.fingerprint_sha256 == added.root.fingerprint_sha256
        await activate(sessions, fingerprint=None, now=now, min_validity=MAX_TTL)
        await h.service.registry.refresh()
        new_leaf = await issue(h, "new")
        truststore = await export_truststore(sessions, now=now)
        assert names(truststore) == [rotation.issuer.subject, "CN=Issuer Issuing CA", "CN=Issuer Root CA",
                                     "CN=Second Root"]  # fmt: skip
        for leaf in (old_leaf, new_leaf):
            openssl_verify(leaf, b"", truststore)
        # The new leaf chains to the openssl root alone (plus its issuer), not to the old root.
        only_new = rotation.issuer.certificate_pem.encode() + cert.read_bytes()
        openssl_verify(new_leaf, b"", only_new)
        with pytest.raises(OpenSSLCheckError):
            openssl_verify(old_leaf, b"", only_new)

        # The old root stays while an issuer under it is in use.
        old_root = next(r for r in x509.load_pem_x509_certificates(truststore) if r.subject.rfc4514_string() ==
                        "CN=Issuer Root CA")  # fmt: skip
        old_root_fp = old_root.fingerprint(hashes.SHA256()).hex()
        with pytest.raises(ClientError) as in_use:
            await retire_root(sessions, fingerprint=old_root_fp[:12], now=now)
        assert in_use.value.code == "root_in_use"
        old_issuer_fp = x509.load_pem_x509_certificate(old_leaf).issuer
        previous = (
            next(c for c in x509.load_pem_x509_certificates(truststore) if c.subject == old_issuer_fp)
            .fingerprint(hashes.SHA256())
            .hex()
        )
        await retire(sessions, fingerprint=previous, now=now + timedelta(days=3), settle=timedelta(seconds=2))
        retired = await retire_root(sessions, fingerprint=old_root_fp[:12], now=now)
        assert retired.subject == "CN=Issuer Root CA"
        assert names(await export_bundle(sessions)) == ["CN=Second Root"]
        after = await export_truststore(sessions, now=now)
        assert names(after) == [rotation.issuer.subject, "CN=Second Root"]
        openssl_verify(new_leaf, b"", after)
        # The last root is never retired.
        with pytest.raises(ClientError) as last:
            await retire_root(sessions, fingerprint=added.root.fingerprint_sha256, now=now)
        assert last.value.code == "root_last"
        with pytest.raises(ClientError) as twice:
            await retire_root(sessions, fingerprint=old_root_fp, now=now)
        assert twice.value.code == "root_retired"
        # A fingerprint is named by 4 to 64 hex digits (colons allowed) that start exactly one root's.
        with pytest.raises(IssuerError) as unknown:
            await retire_root(sessions, fingerprint="0" * 64, now=now)
        assert unknown.value.code == "root_not_found"
        with pytest.raises(ClientError) as malformed:
            await retire_root(sessions, fingerprint="xyz", now=now)
        assert malformed.value.code == "fingerprint_invalid"
        spaced = ":".join(old_root_fp[i : i + 2] for i in range(0, 16, 2)).upper()
        with pytest.raises(ClientError) as by_colons:
            await retire_root(sessions, fingerprint=spaced, now=now)
        assert by_colons.value.code == "root_retired"


async def test_add_root_refuses_what_cannot_be_a_trust_anchor(tmp_path: Path, pg_url: str) -> None:
    good, good_key = openssl_root(tmp_path)
    other, other_key = openssl_root(tmp_path, name="Other Root")
    not_ca, _ = openssl_root(tmp_path, name="Not CA", extra=("-addext", "basicConstraints=critical,CA:FALSE"))
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        sessions, now, ca_dir = h.service.sessions, datetime.now(UTC), h.settings.ca_dir
        issuing = (ca_dir / "issuing.pem").read_bytes()
        leaf = await issue(h, "leaf")

        async def refused(pem: bytes, key: Path | None = None, *, at: datetime = now) -> str:
            with pytest.raises(IssuerError) as caught:
                await add_root(sessions, certificate_pem=pem, now=at, ca_dir=ca_dir, key_file=key,
                               passphrase=passphrase)  # fmt: skip
            return f"{caught.value.code}: {caught.value.detail}"

        assert "not self-signed" in await refused(issuing)
        assert "not self-signed" in await refused(leaf)
        assert "CA:TRUE" in await refused(not_ca.read_bytes())
        assert "exactly one PEM certificate, found 2" in await refused(good.read_bytes() + other.read_bytes())
        assert "found 0" in await refused(b"not a certificate")
        assert "expired" in await refused(good.read_bytes(), at=now + timedelta(days=3651))
        assert (await refused(good.read_bytes(), other_key)).startswith("root_key_mismatch")
        # Registered (without a key): a trust anchor that cannot certify issuers here.
        added = await add_root(sessions, certificate_pem=good.read_bytes(), now=now, ca_dir=ca_dir)
        assert added.key_ref is None
        assert (await refused(good.read_bytes())).startswith("root_exists")
        assert (await refused((ca_dir / "root.pem").read_bytes())).startswith("root_exists")
        # rotate --root on a root without a key says so in one line.
        with pytest.raises(IssuerError) as keyless:
            await rotate_issuer(sessions, ca_dir=ca_dir, passphrase=passphrase, now=now, validity=timedelta(days=90),
                                min_validity=MAX_TTL, trust_domain="t", root=added.root.fingerprint_sha256[:8])  # fmt: skip
        assert keyless.value.code == "root_key_unavailable" and "has no key registered" in keyless.value.detail
        assert good_key.exists()
