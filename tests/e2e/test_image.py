"""The container image, built with podman and run as an operator would: migrate, ca init, serve, an agent outside.

The Dockerfile is built on a Debian bookworm base made here with debootstrap (no image can be
pulled on these machines; cached as a local image after the first run), then, in containers
on the host's network: ``issuer migrate`` on a fresh, empty Postgres database, ``issuer ca
init`` (file keys, in a named volume at the state directory), ``issuer serve``; the repo's
``issuer-agent`` outside gets a certificate with a join token made by ``issuer token create``
inside the serving container, and openssl verifies it against the served truststore. The
root filesystem is read-only throughout: only the state volume and /tmp are writable.

Without podman, runc or debootstrap these tests skip with a loud reason, except under CI,
where they fail (``.ci/run`` installs them).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from issuer.store.migrate import current_revision, head
from tests.conftest import PG_URL, _dsn, _pg_execute
from tests.support.moto_server import free_port
from tests.support.podman import BASE_IMAGE, Podman, ensure_base_image, missing_tools
from tests.support.x509_check import openssl_verify

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
# A tag of this run's own: two suites on one machine each test the image they built.
TAG = f"localhost/aws-machine-issuer:e2e-{secrets.token_hex(4)}"
AGENT = Path(sys.executable).parent / "issuer-agent"
UID = "10001"
CONFIG = """
[issuer]
trust_domain = "image.example"

[[roles]]
name = "onprem"
methods = ["token"]
ttl = "2h"
"""


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    missing = missing_tools()
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install podman runc debootstrap)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI requires the container image test", pytrace=False)
        pytest.skip(f"SKIPPING THE CONTAINER IMAGE TEST: {message}")
    return Podman.here(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def image(podman: Podman) -> Iterator[str]:
    """The image built from the repo's Dockerfile on the Debian base (made once, then cached); untagged after."""
    started = time.monotonic()
    base_seconds = ensure_base_image(podman)
    podman.build(ROOT, tag=TAG, base_image=BASE_IMAGE)
    print(f"\nimage: base {base_seconds:.0f}s, total {time.monotonic() - started:.0f}s", file=sys.stderr)
    try:
        yield TAG
    finally:
        podman.run("rmi", "--force", TAG, check=False)


@pytest.fixture
def empty_db(pg_template: str) -> Iterator[str]:
    """A new Postgres database with no schema at all: the container's ``issuer migrate`` makes it."""
    name = f"issuer_image_{secrets.token_hex(4)}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def state_volume(podman: Podman) -> Iterator[str]:
    name = f"issuer-e2e-{secrets.token_hex(4)}"
    podman.run("volume", "create", name)
    try:
        yield name
    finally:
        podman.run("volume", "rm", "--force", name, check=False)


def test_image_runs_issuer_as_non_root_without_dev_tools(podman: Podman, image: str) -> None:
    config = json.loads(podman.run("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["issuer"]
    assert config["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["ISSUER_CONFIG"] == "/etc/issuer/issuer.toml" and env["ISSUER_STATE_DIR"] == "/var/lib/issuer"

    listing = podman.run(
        "run", "--rm", "--network", "none", "--entrypoint", "/opt/issuer/bin/python", image, "-c",
        "import importlib.metadata as m, json; print(json.dumps(sorted({d.metadata['Name'].lower().replace('_', '-') "
        "for d in m.distributions()})))",
    )  # fmt: skip
    installed = set(json.loads(listing.stdout))
    assert {"aws-machine-issuer", "aiohttp", "asyncpg", "cryptography", "boto3", "prometheus-client"} <= installed
    # No test runner, linter, type checker or test double; no pip or setuptools in the service's venv.
    assert not installed & {"pytest", "pytest-asyncio", "ruff", "mypy", "moto", "pip", "setuptools"}, installed
    tools = podman.run(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
        "for t in pytest ruff mypy gcc cc c++ make; do command -v $t || true; done; id -u; id -g",
    )  # fmt: skip
    assert tools.stdout.split() == [UID, UID], f"dev tools in the image or wrong user: {tools.stdout}"


def test_image_migrates_initialises_serves_and_issues_to_an_agent(
    podman: Podman, image: str, empty_db: str, state_volume: str, tmp_path: Path
) -> None:
    config = tmp_path / "issuer.toml"
    config.write_text(CONFIG)
    config.chmod(0o644)
    # The CA passphrase is a secret mounted apart from the state volume (never generated into it).
    passphrase = tmp_path / "ca-passphrase"
    passphrase.write_text(secrets.token_urlsafe(32))
    passphrase.chmod(0o644)  # readable by the image's user (uid 10001) through the bind mount
    common = [
        "--network", "host", "--read-only",
        "-v", f"{config}:/etc/issuer/issuer.toml:ro", "-v", f"{state_volume}:/var/lib/issuer",
        "-v", f"{passphrase}:/run/secrets/ca-passphrase:ro",
        "-e", f"ISSUER_DATABASE_URL={empty_db}", "-e", "ISSUER_CA_PASSPHRASE_FILE=/run/secrets/ca-passphrase",
    ]  # fmt: skip

    migrated = podman.run("run", "--rm", *common, image, "migrate")
    assert "the newest this release knows" in migrated.stdout, migrated.stdout + migrated.stderr
    assert asyncio.run(current_revision(empty_db)) == head()

    initialised = podman.run("run", "--rm", *common, image, "ca", "init", "--organization", "Image Test")
    assert "registered as the active issuer" in initialised.stdout, initialised.stdout + initialised.stderr
    assert "/var/lib/issuer/ca" in initialised.stdout

    port = free_port()
    name = f"issuer-e2e-{secrets.token_hex(4)}"
    podman.run("run", "-d", "--name", name, *common, image, "serve", "--host", "127.0.0.1", "--port", str(port))
    try:
        _wait_ready(podman, name, port)
        _check_serving_as_non_root(podman, name)
        made = podman.run("exec", name, "issuer", "token", "create", "--role", "onprem", "--name", "box-7", "--json")
        token = json.loads(made.stdout)["token"]
        _agent_gets_a_certificate(tmp_path / "agent", port, token)
        assert asyncio.run(_certificate_rows(empty_db)) == 1

        podman.run("stop", "--time", "40", name, timeout=90)
        state = podman.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert state == "0", podman.run("logs", name, check=False).stderr[-3000:]
    finally:
        podman.run("rm", "--force", name, check=False)


def _wait_ready(podman: Podman, name: str, port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        running = podman.run("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
        logs = podman.run("logs", name, check=False)
        if running != "true" or time.monotonic() > deadline:
            raise AssertionError(f"the container never became ready (running={running}):\n{logs.stderr[-4000:]}")
        time.sleep(0.5)


def _check_serving_as_non_root(podman: Podman, name: str) -> None:
    """Every process of the container runs as the image's user, as the host's kernel sees it."""
    rows = podman.run("top", name, "huser", "user", "args").stdout.splitlines()[1:]
    assert rows, "podman top listed no process"
    for row in rows:
        huser, user = row.split()[:2]
        assert (huser, user) == (UID, "issuer"), rows
    workers = os.cpu_count() or 1
    # The supervisor and one worker per CPU (the default on Postgres), unless one CPU: then one process.
    assert len(rows) == (1 if workers == 1 else workers + 1), rows
    logs = podman.run("logs", name).stderr
    assert "listening on http://127.0.0.1:" in logs, logs[-3000:]


def _agent_gets_a_certificate(out: Path, port: int, token: str) -> None:
    server = f"http://127.0.0.1:{port}"
    result = subprocess.run(
        [str(AGENT), "bootstrap", "--method", "token", "--server", server, "--out", str(out)],
        env={**os.environ, "ISSUER_JOIN_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "spiffe://image.example/onprem/box-7" in result.stdout
    with urllib.request.urlopen(f"{server}/v1/truststore", timeout=10) as reply:
        truststore = reply.read()
    leaf = (out / "cert.pem").read_bytes()
    # As API Gateway checks it: the leaf alone against the truststore; and as a client with its chain.
    openssl_verify(leaf, b"", truststore)
    openssl_verify(leaf, (out / "chain.pem").read_bytes(), (out / "bundle.pem").read_bytes())


async def _certificate_rows(url: str) -> int:
    conn = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM certificates"))
    finally:
        await conn.close()
