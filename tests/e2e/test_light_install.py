"""The agent installs light: a fresh virtualenv with the base distribution has issuer-agent and
nothing of the service (no aiohttp, SQLAlchemy, asyncpg, Alembic, asn1crypto, boto3); the
agent bootstraps against the real service from it; `issuer` says in one line what to install.

Slow (a virtualenv and a wheel build, dependencies from the package index or pip's cache).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import running_issuer

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("light")
    venv = root / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    installed = _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", REPO)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def test_the_base_install_has_the_agent_and_none_of_the_service(light_venv: Path) -> None:
    python = light_venv / "bin" / "python"
    probe = "import importlib.util as u; print(sorted(m for m in {mods} if u.find_spec(m)))".format(
        mods=repr(("aiohttp", "sqlalchemy", "asyncpg", "alembic", "asn1crypto", "boto3", "cryptography", "botocore"))
    )
    present = _run(python, "-c", probe)
    assert present.stdout.strip() == "['botocore', 'cryptography']", present
    helped = _run(light_venv / "bin" / "issuer-agent", "run", "--help")
    assert helped.returncode == 0 and "--method" in helped.stdout
    service = _run(light_venv / "bin" / "issuer", "serve")
    assert service.returncode == 1
    assert service.stderr.strip().splitlines() == [service.stderr.strip()]  # one line
    assert "pip install 'aws-machine-issuer[server]'" in service.stderr


async def test_the_light_agent_bootstraps_against_the_service(light_venv: Path, tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        server = str(h.client.make_url("")).rstrip("/")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "AWS_", "PYTHON"))}
        env["ISSUER_JOIN_TOKEN"] = await h.token(name="light-box")
        out = tmp_path / "out"
        # The agent runs outside the repository so nothing of the checkout can leak into its imports.
        result = await asyncio.to_thread(
            subprocess.run,
            [
                str(light_venv / "bin" / "issuer-agent"),
                "bootstrap",
                "--method",
                "token",
                "--server",
                server,
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert (out / "cert.pem").exists() and len(await h.certificates()) == 1
