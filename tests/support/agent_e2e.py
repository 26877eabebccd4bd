"""What the end-to-end tests of the agent on other Pythons share: finding an interpreter, a virtualenv
made with it, the real service behind TLS, and running the agent as a separate process.

Python 3.9 is what Amazon Linux 2023 and RHEL 9 ship; CI machines have it through pyenv
(``~/.pyenv/versions/3.9.*``). Where none is found the tests skip, loudly, except under ``CI``,
where they fail: a green run must have run them.
"""

from __future__ import annotations

import glob
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.harness import Harness, running_issuer, write_ca

__all__ = ["REPO", "TlsIssuer", "clean_env", "find_python", "make_venv", "require_python", "run", "tls_issuer"]

REPO = Path(__file__).resolve().parents[2]


def _reports(candidate: str, version: str) -> bool:
    try:
        done = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def find_python(version: str) -> str | None:
    """An interpreter that really is Python ``version`` ("3.9"), or None. A pyenv shim on the PATH
    may name one that is not selected, so each candidate is asked."""
    candidates = [
        os.environ.get("ISSUER_TEST_PYTHON" + version.replace(".", "")),
        shutil.which(f"python{version}"),
        *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")), reverse=True),
    ]
    return next((c for c in candidates if c and _reports(c, version)), None)


def require_python(version: str) -> str:
    found = find_python(version)
    if found is None:
        message = f"no Python {version} interpreter (python{version} on the PATH or ~/.pyenv/versions/{version}.*)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(f"SKIPPING PYTHON {version} TESTS: {message}")
    return found


def run(
    *argv: str | Path, env: Mapping[str, str] | None = None, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
    )


def make_venv(python: str, where: Path, *requirements: str | Path) -> Path:
    """A virtualenv of ``python`` at ``where`` with ``requirements`` pip-installed; its bin directory."""
    made = run(python, "-m", "venv", where)
    assert made.returncode == 0, made.stderr
    installed = run(where / "bin" / "python", "-m", "pip", "install", "--quiet", *requirements)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return where / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's AWS, issuer and Python settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "AWS_", "PYTHON"))}
    env.update(extra)
    return env


@dataclass(frozen=True)
class TlsIssuer:
    harness: Harness
    url: str  # https://localhost:PORT
    ca_bundle: Path  # the server's own certificate: the only trust the agent gets


@asynccontextmanager
async def tls_issuer(tmp_path: Path, pg_url: str, **kwargs: object) -> AsyncIterator[TlsIssuer]:
    """The real service over HTTPS (a self-signed ``localhost`` certificate) on a loopback port."""
    from demo.mtls_endpoint import make_server_certificate

    server_cert, server_key = make_server_certificate(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    write_ca(state)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert, server_key)
    async with running_issuer(tmp_path, pg_url, ssl_context=context, **kwargs) as h:  # type: ignore[arg-type]
        port = h.client.make_url("").port
        yield TlsIssuer(harness=h, url=f"https://localhost:{port}", ca_bundle=server_cert)
