"""The ``issuer`` command as an operator meets it: real processes, a real Postgres, one-line failures."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, _pg_execute
from tests.support.cli import ISSUER, cli_env, issuer, one_line_error
from tests.support.harness import new_csr, running_issuer
from tests.support.moto_server import free_port
from tests.support.x509_check import openssl_verify

CONFIG = """
[issuer]
trust_domain = "test.example"

[[roles]]
name = "onprem"
methods = ["token"]
"""


@pytest.fixture
def env(tmp_path: Path, pg_url: str) -> dict[str, str]:
    return cli_env(tmp_path, pg_url, config=CONFIG)


@pytest.fixture
def empty_db(pg_template: str) -> Iterator[str]:
    name = f"issuer_empty_{secrets.token_hex(4)}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_operator_round_trip(tmp_path: Path, env: dict[str, str]) -> None:
    init = issuer("ca", "init", env=env)
    assert init.returncode == 0, init.stderr
    assert "registered as the active issuer" in init.stdout
    again = issuer("ca", "init", env=env)
    assert "already has an issuing CA" in one_line_error(again)

    created = json.loads(issuer("token", "create", "--role", "onprem", "--name", "box-1", "--json", env=env).stdout)
    assert created["token"].startswith("ijt_")
    async with running_issuer(tmp_path, env["ISSUER_DATABASE_URL"], config=CONFIG) as h:
        status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": created["token"]})
        assert status == 201, body
    leaf = x509.load_pem_x509_certificate(body["certificate"].encode())

    # The serial as openssl prints it (colons, upper case, a leading 00 when the high bit is set).
    hex_serial = format(leaf.serial_number, "x")
    padded = hex_serial if len(hex_serial) % 2 == 0 else "0" + hex_serial
    openssl_style = ":".join(padded[i : i + 2] for i in range(0, len(padded), 2)).upper()
    if int(padded[0], 16) >= 8:
        openssl_style = "00:" + openssl_style
    shown = issuer("certs", "show", openssl_style, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["serial"] == body["serial"]
    listed = json.loads(issuer("certs", "list", "--json", env=env).stdout)
    assert [c["serial"] for c in listed] == [body["serial"]]

    out = tmp_path / "truststore.pem"
    exported = issuer("truststore", "export", "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    openssl_verify(body["certificate"].encode(), b"", out.read_bytes())

    issuer("token", "create", "--role", "onprem", "--name", "leaked", env=env)
    revoked = issuer("token", "revoke", "leaked", env=env)
    assert revoked.returncode == 0 and "Revoked 1" in revoked.stdout
    assert "no unused" in one_line_error(issuer("token", "revoke", "leaked", env=env))
    tokens = json.loads(issuer("token", "list", "--all", "--json", env=env).stdout)
    assert sorted(t["name"] for t in tokens) == ["box-1", "leaked"]
    # The token names the certificate it got (found by the request that used it).
    assert {t["name"]: t["certificate_serial"] for t in tokens} == {"box-1": body["serial"], "leaked": None}


def test_an_unreachable_database_is_named(env: dict[str, str]) -> None:
    port = free_port()  # nothing listens there
    env["ISSUER_DATABASE_URL"] = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/issuer"
    line = one_line_error(issuer("certs", "list", env=env))
    assert f"database 'issuer' on 127.0.0.1:{port} as user 'postgres'" in line and "ISSUER_DATABASE_URL" in line


def test_an_unmigrated_database_says_run_migrate(env: dict[str, str], empty_db: str) -> None:
    env["ISSUER_DATABASE_URL"] = empty_db
    for command in (["certs", "list"], ["serve"], ["ca", "init"]):
        line = one_line_error(issuer(*command, env=env))
        assert "run `issuer migrate`" in line, line
    migrated = issuer("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert issuer("certs", "list", env=env).returncode == 0


def _serve(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*ISSUER, "serve", "--log-format", "text", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_start_up_failures_are_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    assert issuer("ca", "init", env=env).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = issuer("serve", "--port", str(port), env=env)
        assert result.returncode != 0
        assert f"127.0.0.1:{port}" in result.stderr.splitlines()[-1]
        assert "listening on" not in result.stderr and "Traceback" not in result.stderr
    missing = tmp_path / "absent.pem"
    line = one_line_error(issuer("serve", "--tls-cert", str(missing), "--tls-key", str(missing), env=env))
    assert str(missing) in line
    bad_level = issuer("serve", "--log-level", "loud", env=env)
    assert bad_level.returncode == 2 and "invalid choice" in bad_level.stderr
    wrong = issuer("serve", "--port", str(free_port()), env={**env, "ISSUER_CA_PASSPHRASE": "not-the-passphrase-123"})
    assert wrong.returncode != 0
    last = wrong.stderr.strip().splitlines()[-1]
    assert "passphrase" in last and "Traceback" not in wrong.stderr and "listening on" not in wrong.stderr


def test_listening_is_said_once_the_port_serves(env: dict[str, str]) -> None:
    import urllib.request

    assert issuer("ca", "init", env=env).returncode == 0
    port = free_port()
    proc = _serve(env, "--port", str(port))
    try:
        deadline = time.monotonic() + 30
        lines: list[str] = []
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "listening on" in line:
                break
        else:
            raise AssertionError("".join(lines))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            assert resp.status == 200
        assert not any("alembic" in line.lower() for line in lines)  # no migration noise on a start
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


async def test_stale_certificates_and_a_principals_history(tmp_path: Path, env: dict[str, str]) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.support.renewal_token import renewal_token
    from tests.support.x509_check import make_csr

    config = CONFIG.replace('methods = ["token"]', 'methods = ["token"]\nttl = "1h"')
    (tmp_path / "issuer.toml").write_text(config)
    assert issuer("ca", "init", env=env).returncode == 0
    # edge-9 attested 50 minutes ago and renewed 45 minutes ago: its 1 h certificate was due
    # (2/3 of its lifetime) 5 minutes ago. edge-1 got a healthy 1 h certificate just now.
    clock = [datetime.now(UTC) - timedelta(minutes=50)]
    async with running_issuer(tmp_path, env["ISSUER_DATABASE_URL"], config=config, clock=lambda: clock[0]) as h:
        key, csr = new_csr()
        _, first = await h.post("/v1/issue/token", {"csr": csr, "token": await h.token(name="edge-9")})
        clock[0] += timedelta(minutes=5)
        new_key = ec.generate_private_key(ec.SECP256R1())
        new_csr_pem = make_csr(new_key).decode()
        token = renewal_token(
            key,
            x509.load_pem_x509_certificate(first["certificate"].encode()),
            csr_pem=new_csr_pem,
            audience=h.settings.audience,
            now=clock[0].timestamp(),
        )
        resp = await h.client.post("/v1/renew", json={"csr": new_csr_pem}, headers={"Authorization": f"Bearer {token}"})
        second = await resp.json()
        assert resp.status == 201, second
        clock[0] = datetime.now(UTC)
        status, healthy = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name="edge-1")})
        assert status == 201, healthy

    stale = issuer("certs", "stale", "--json", env=env)
    assert stale.returncode == 1  # something to act on: monitoring can alert
    (row,) = json.loads(stale.stdout)  # the healthy short-lived certificate is not listed
    assert (row["serial"], row["principal"]) == (second["serial"], "edge-9")  # the head of the chain only
    assert 4 * 60 < row["seconds_late"] < 7 * 60 and 9 * 60 < row["seconds_left"] <= 15 * 60
    table = issuer("certs", "stale", env=env)
    assert table.returncode == 1 and second["serial"] in table.stdout and healthy["serial"] not in table.stdout
    quiet = issuer("certs", "stale", "--late", "10m", env=env)
    assert quiet.returncode == 0 and "No certificate is past its renewal point by more than 10m" in quiet.stdout
    gone = issuer("certs", "stale", "--within", "2h", env=env)
    assert gone.returncode == 2 and "--within is gone" in one_line_error(gone)
    history = issuer("certs", "history", "edge-9", env=env)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert first["serial"] in lines[1] and "superseded" in lines[1] and "attested (token)" in lines[1]
    assert second["serial"] in lines[2] and f"renewed {first['serial']}" in lines[2]
    assert "no certificates" in one_line_error(issuer("certs", "history", "nobody", env=env))
