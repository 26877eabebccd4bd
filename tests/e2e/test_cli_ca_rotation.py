"""``issuer ca rotate | activate | retire | status | add-root | retire-root`` as an operator meets them.

Real processes on a real Postgres; every failure is one line ``issuer: error: ...``. The root key
goes offline (moved out of the CA directory) and ``issuer serve``, issuing, activate, retire and
status all keep working; only ``ca rotate`` fails, saying it needs the root key and where it looked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.integration.test_ca_rotation_roots import openssl_root
from tests.support.cli import CONFIG, ca_status, cli_env, issue, issuer, ok, one_line_error, phases, serve
from tests.support.harness import new_csr, running_issuer
from tests.support.moto_server import free_port
from tests.support.x509_check import openssl_verify


@pytest.fixture
def env(tmp_path: Path, pg_url: str) -> dict[str, str]:
    return cli_env(tmp_path, pg_url)


async def test_rotate_activate_retire_status_round_trip(tmp_path: Path, env: dict[str, str]) -> None:
    ok("ca", "init", env=env)
    shown = ok("ca", "status", env=env)
    assert "active" in shown and "here" in shown and "warning" not in shown
    ((_, old_fp),) = phases(env)

    assert "shorter than the longest role max_ttl (3d)" in one_line_error(
        issuer("ca", "rotate", "--validity", "2d", env=env)
    )
    assert "not a duration" in one_line_error(issuer("ca", "rotate", "--validity", "soon", env=env))
    rotated = ok("ca", "rotate", "--validity", "90d", env=env)
    new_fp = next(line.split()[-1] for line in rotated.splitlines() if line.strip().startswith("fingerprint:"))
    assert "(in the truststore now, not signing yet)" in rotated and "(90 days)" in rotated
    assert f"issuer ca activate {new_fp[:16]}" in rotated and "take it offline" in rotated
    assert "already prepared" in one_line_error(issuer("ca", "rotate", env=env))
    assert phases(env) == [("prepared", new_fp), ("active", old_fp)]

    async with running_issuer(tmp_path, env["ISSUER_DATABASE_URL"], config=CONFIG) as h:
        status_code, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name="old")})
        assert status_code == 201, body
    old_leaf = body["certificate"].encode()

    assert "no issuing CA has a fingerprint starting" in one_line_error(issuer("ca", "activate", "abcd" * 4, env=env))
    activated = ok("ca", "activate", env=env)
    new_subject = next(i["subject"] for i in ca_status(env)["issuers"] if i["phase"] == "active")
    assert new_subject.startswith("CN=test.example Issuing CA 2")  # the default name carries the date
    assert f"Activated {new_subject} ({new_fp[:16]})" in activated and "Reminder: API Gateway" in activated
    assert "its 1 live leaves expire by" in activated and f"issuer ca retire {old_fp[:16]}" in activated
    assert "already the active one" in one_line_error(issuer("ca", "activate", new_fp[:12], env=env))

    line = one_line_error(issuer("ca", "retire", old_fp[:12], env=env))
    assert "still has 1 live leaf; the last expires" in line
    assert "is the active issuer" in one_line_error(issuer("ca", "retire", new_fp[:12], env=env))
    assert "is the active issuer" in one_line_error(issuer("ca", "retire", new_fp[:12], "--force", env=env))
    assert "is not a fingerprint" in one_line_error(issuer("ca", "retire", "xyz", env=env))

    truststore = tmp_path / "truststore.pem"
    ok("truststore", "export", "--out", str(truststore), env=env)
    openssl_verify(old_leaf, b"", truststore.read_bytes())

    forced = ok("ca", "retire", old_fp[:12], "--force", env=env)
    assert "warning: forced past: issuer" in forced and f"Retired CN=test.example Issuing CA ({old_fp[:16]})" in forced
    report = ca_status(env)
    assert [(i["phase"], i["leaves"]["issued"], i["leaves"]["live"]) for i in report["issuers"]] == [
        ("active", 0, 0),
        ("retired", 1, 1),
    ]
    assert report["warnings"] == [] and report["expiring"] is False
    ok("truststore", "export", "--out", str(truststore), env=env)
    assert new_fp in {
        c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(truststore.read_bytes())
    }
    assert old_fp not in truststore.read_text() and len(x509.load_pem_x509_certificates(truststore.read_bytes())) == 2

    # Monitoring: exit 0 with a warning line; --check exits 1 within the window (90 days < 400d).
    warned = issuer("ca", "status", "--warn-within", "400d", env=env)
    assert warned.returncode == 0 and "warning: the active issuing CA" in warned.stdout
    checked = issuer("ca", "status", "--check", "--warn-within", "400d", env=env)
    assert checked.returncode == 1 and "warning: the active issuing CA" in checked.stdout
    assert issuer("ca", "status", "--check", env=env).returncode == 0

    # Every change, and every refused attempt at one, is on the record as this OS user's.
    trail = list(reversed(json.loads(ok("audit", "--action", "ca.*", "--json", env=env))))
    assert [e["action"] for e in trail if e["outcome"] == "success"] == ["ca.rotate", "ca.activate", "ca.retire"]
    assert len([e for e in trail if e["outcome"] == "failure"]) == 8
    assert {e["actor"].split("@")[0].split(":")[0] for e in trail} == {"local"}
    retired = next(e for e in trail if e["action"] == "ca.retire" and e["outcome"] == "success")
    assert retired["arguments"] == {"fingerprint": old_fp[:12], "force": True}


def issuer_name(leaf: bytes) -> str:
    return x509.load_pem_x509_certificate(leaf).issuer.rfc4514_string()


def test_everything_but_rotate_works_with_the_root_key_offline(tmp_path: Path, env: dict[str, str]) -> None:
    ok("ca", "init", env=env)
    ok("ca", "rotate", env=env)  # the root key is still here for this one
    ((_, new_fp), (_, old_fp)) = phases(env)
    root_key = tmp_path / "state" / "ca" / "root.key.pem"
    vault = tmp_path / "vault"
    vault.mkdir()
    root_key.rename(vault / "root.key.pem")

    assert "root key absent" in ok("ca", "show", env=env)
    port = free_port()
    server = serve(env, port)
    try:
        old_name = "CN=test.example Issuing CA"
        assert issuer_name(issue(env, port, "before")) == old_name
        ok("ca", "activate", new_fp[:16], env=env)
        deadline = time.monotonic() + 30
        while issuer_name(leaf := issue(env, port, f"after-{time.monotonic()}")) == old_name:
            assert time.monotonic() < deadline, "the server never switched to the new issuer"
            time.sleep(0.3)
        truststore = tmp_path / "ts.pem"
        ok("truststore", "export", "--out", str(truststore), env=env)
        openssl_verify(leaf, b"", truststore.read_bytes())
        shown = ok("ca", "status", env=env)
        assert "offline" in shown
        ok("ca", "retire", old_fp[:16], "--force", env=env)
        line = one_line_error(issuer("ca", "rotate", "--force", env=env))
        assert f"the root key is needed to prepare a new issuing CA and is not at {root_key}" in line
        assert list((tmp_path / "state" / "ca").glob("issuing-*.key.pem")) == [
            tmp_path / "state" / "ca" / f"issuing-{new_fp[:16]}.key.pem"
        ]
        # Back from the vault for one command, rotation works again.
        (vault / "root.key.pem").rename(root_key)
        assert "Prepared a new issuing CA" in ok("ca", "rotate", env=env)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_add_root_and_retire_root(tmp_path: Path, env: dict[str, str]) -> None:
    ok("ca", "init", env=env)
    cert, key = openssl_root(tmp_path)
    added = ok("ca", "add-root", str(cert), "--key", str(key), env=env)
    assert "Registered the root CN=Second Root" in added
    new_root = x509.load_pem_x509_certificate(cert.read_bytes()).fingerprint(hashes.SHA256()).hex()
    assert "registered already" in one_line_error(issuer("ca", "add-root", str(cert), env=env))
    assert "cannot read" in one_line_error(issuer("ca", "add-root", str(tmp_path / "absent.pem"), env=env))
    rotated = ok("ca", "rotate", "--root", new_root[:12], env=env)
    assert f"CN=Second Root ({new_root[:16]})" in rotated
    report = ca_status(env)
    roots = {r["subject"]: r for r in report["roots"]}
    assert roots["CN=Second Root"]["issuers"] == 1 and roots["CN=test.example Root CA"]["issuers"] == 1
    old_root = roots["CN=test.example Root CA"]["fingerprint_sha256"]
    assert "still in use" in one_line_error(issuer("ca", "retire-root", old_root[:12], env=env))
    ok("ca", "activate", env=env)
    ((_, _), (_, old_issuer)) = phases(env)
    ok("ca", "retire", old_issuer[:16], "--force", env=env)
    assert "Retired the root CN=test.example Root CA" in ok("ca", "retire-root", old_root[:12], env=env)
    assert "only active root" in one_line_error(issuer("ca", "retire-root", new_root[:12], env=env))
    bundle = tmp_path / "ts.pem"
    ok("truststore", "export", "--out", str(bundle), env=env)
    assert [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(bundle.read_bytes())][
        -1
    ] == "CN=Second Root"


def test_help_texts(env: dict[str, str]) -> None:
    for action in ("rotate", "activate", "retire", "status", "add-root", "retire-root"):
        shown = ok("ca", action, "--help", env=env)
        assert f"usage: issuer ca {action}" in shown
