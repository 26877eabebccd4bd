"""The ``issuer`` command as the end-to-end tests run it: real processes with an environment of their own.

:func:`cli_env` writes ``issuer.toml`` into ``tmp_path`` and returns the environment every
command of a test shares; :func:`issuer` runs one command, :func:`ok` one that must succeed,
:func:`one_line_error` checks a failure is what an operator sees (one ``issuer: error:`` line);
:func:`serve` starts ``issuer serve`` and returns once it says it listens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.harness import PASSPHRASE, new_csr

ISSUER = [sys.executable, "-m", "issuer.cli"]
# One token role whose max_ttl bounds how short a rotated issuing CA may be; replicas re-read
# the CA registry every second, so a running ``issuer serve`` follows ``ca activate`` quickly.
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


def cli_env(
    tmp_path: Path,
    database_url: str,
    *,
    config: str = CONFIG,
    passphrase: str | None = PASSPHRASE,
    aws: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """This process's environment without its ``ISSUER_*`` (and, with ``aws``, ``AWS_*``) variables,
    plus ``config`` written to ``tmp_path/issuer.toml``, state in ``tmp_path/state``, the user's config
    home in ``tmp_path/config`` (where a generated CA passphrase goes), the database, the CA passphrase
    (unless None) and the ``aws`` variables."""
    (tmp_path / "issuer.toml").write_text(config)
    drop = ("ISSUER_",) if aws is None else ("ISSUER_", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env |= {
        "ISSUER_CONFIG": str(tmp_path / "issuer.toml"),
        "ISSUER_STATE_DIR": str(tmp_path / "state"),
        "ISSUER_DATABASE_URL": database_url,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    if passphrase is not None:
        env["ISSUER_CA_PASSPHRASE"] = passphrase
    return env | dict(aws or {})


def issuer(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISSUER, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def ok(*args: str, env: dict[str, str]) -> str:
    """The stdout of a command that must exit 0."""
    result = issuer(*args, env=env)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The failure as an operator sees it: a non-zero exit and exactly one line on stderr."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("issuer: error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def ca_status(env: dict[str, str]) -> dict[str, Any]:
    """``issuer ca status --json``."""
    return dict(json.loads(ok("ca", "status", "--json", env=env)))


def phases(env: dict[str, str]) -> list[tuple[str, str]]:
    """(phase, SHA-256 fingerprint) of every issuing CA, as ``ca status`` lists them."""
    return [(i["phase"], i["fingerprint_sha256"]) for i in ca_status(env)["issuers"]]


def serve(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    """``issuer serve`` on ``port``, once it has said it listens; fails with its output if it never does."""
    proc = subprocess.Popen(
        [*ISSUER, "serve", "--log-format", "text", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if "listening on" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.terminate()
    raise AssertionError("".join(seen))


def issue(env: dict[str, str], port: int, name: str) -> bytes:
    """A join token for ``name`` (``issuer token create``) redeemed at the server on ``port``: the leaf's PEM."""
    token = json.loads(ok("token", "create", "--role", "onprem", "--name", name, "--json", env=env))["token"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/issue/token",
        data=json.dumps({"csr": new_csr()[1], "token": token}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201
        return str(json.loads(resp.read())["certificate"]).encode()
