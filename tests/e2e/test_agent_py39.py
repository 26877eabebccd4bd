"""The agent on Python 3.9, the Python of Amazon Linux 2023 and RHEL 9.

- the base install (`pip install <repo>` into a 3.9 virtualenv) bootstraps over HTTPS against the
  real service, then renews with nothing but `--out` (the CA bundle is remembered), and `status`
  asks the service whether it was revoked;
- `issuer` started on 3.9 says in one line that the service needs 3.11;
- the agent's unit tests pass on 3.9, and `clients/` type-checks for 3.9 (mypy run by 3.9, whose
  typeshed knows what 3.9 lacks: datetime.UTC, dataclass slots, zip(strict=), ...).

Slow: virtualenvs and installs (from the package index or pip's cache). Skipped loudly where no
Python 3.9 is found, failed under CI.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.agent_e2e import REPO, clean_env, make_venv, require_python, run, tls_issuer

pytestmark = pytest.mark.slow

EDGE = """
[issuer]
trust_domain = "test.example"
server_id = "issuer.test.example"

[[roles]]
name = "edge"
methods = ["token"]
ttl = "1h"
"""


@pytest.fixture(scope="module")
def python39() -> str:
    return require_python("3.9")


@pytest.fixture(scope="module")
def agent39(python39: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a 3.9 virtualenv with the base install: the agent, cryptography and botocore."""
    return make_venv(python39, tmp_path_factory.mktemp("py39") / "venv", REPO)


async def agent(bin_dir: Path, *argv: str | Path, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    done = await asyncio.to_thread(run, bin_dir / "issuer-agent", *argv, env=env, cwd=cwd, timeout=120)
    return done.returncode, done.stdout, done.stderr


async def test_the_base_install_on_39_bootstraps_renews_and_checks_status(
    agent39: Path, tmp_path: Path, pg_url: str
) -> None:
    version = run(
        agent39 / "python", "-c", "import sys, cryptography; print(sys.version_info[:2], cryptography.__file__)"
    )
    assert version.stdout.startswith("(3, 9)") and str(agent39.parent) in version.stdout, version
    async with tls_issuer(tmp_path, pg_url, config=EDGE) as tls:
        h = tls.harness
        out = tmp_path / "agent"
        env = clean_env(ISSUER_JOIN_TOKEN=await h.token(role="edge", name="rhel9-box"))
        # Outside the checkout, so nothing of it can leak into the agent's imports.
        code, _, err = await agent(
            agent39, "bootstrap", "--method", "token", "--server", tls.url, "--ca-bundle", tls.ca_bundle,
            "--out", out, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert code == 0, err
        first = json.loads((out / "issuer.json").read_text())["serial"]

        code, printed, err = await agent(agent39, "renew", "--out", out, "--force", env=clean_env(), cwd=tmp_path)
        assert code == 0, err
        second = json.loads((out / "issuer.json").read_text())["serial"]
        assert f"renewed {first} -> {second}" in printed
        assert {c.serial: c.status for c in await h.certificates()} == {first: "superseded", second: "active"}

        code, printed, err = await agent(agent39, "status", "--out", out, "--json", env=clean_env(), cwd=tmp_path)
        assert code == 0, err
        document = json.loads(printed)
        assert (document["state"], document["serial"], document["issuer_checked"]) == ("valid", second, True)


def test_the_service_on_39_says_in_one_line_that_it_needs_311(agent39: Path) -> None:
    service = run(agent39 / "issuer", "serve", env=clean_env())
    assert service.returncode == 1
    assert service.stderr.strip().splitlines() == [service.stderr.strip()]
    assert "needs Python 3.11 or newer, this is 3.9." in service.stderr


@pytest.fixture(scope="module")
def tools39(python39: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a 3.9 virtualenv with the base install and what the agent's tests use."""
    return make_venv(
        python39, tmp_path_factory.mktemp("py39tools") / "venv", REPO,
        "pytest", "aiohttp", "boto3", "moto[server]", "prometheus-client", "mypy",
    )  # fmt: skip


def test_the_agents_unit_tests_pass_on_39(tools39: Path) -> None:
    tests = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests" / "unit").glob("test_agent_*.py"))
    # --noconftest: tests/conftest.py sets up the service's database fixtures (3.11 code).
    done = run(
        tools39 / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest",
        "-o", "addopts=", "-W", "ignore::DeprecationWarning", *tests,
        env=clean_env(), cwd=REPO, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout


def test_the_agent_type_checks_for_39(tools39: Path) -> None:
    done = run(
        tools39 / "python", "-m", "mypy", "--python-version", "3.9", "clients", "pyz/bootstrap.py",
        env=clean_env(), cwd=REPO, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
