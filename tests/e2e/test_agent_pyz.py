"""`make agent-pyz`'s file, built here and run by a stock Python 3.9 against the real service:
bootstrap over HTTPS, renew with nothing but --out, status; aws-iam signed by the file's own
(pruned) botocore against moto's STS with signature checks on; and the same file on every other
Python found (3.10 to 3.13). A Python older than 3.9.2 and the wrong CPU get one line and 78.

Slow: the build downloads wheels for the target (from the package index or pip's cache).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyz.build import build
from tests.e2e.test_agent_iam import SERVER_ID, USER_URI, config
from tests.support.agent_e2e import clean_env, find_python, require_python, run, tls_issuer
from tests.support.harness import running_issuer
from tests.support.moto_iam import MotoIam, moto_iam

pytestmark = pytest.mark.slow

ARCH = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
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
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if ARCH not in ("x86_64", "aarch64"):
        pytest.skip(f"SKIPPING: no issuer-agent.pyz for {ARCH}")
    output = tmp_path_factory.mktemp("dist") / "issuer-agent.pyz"
    build(ARCH, output, say=lambda _: None)
    return output


@pytest.fixture(scope="module")
def python39() -> str:
    return require_python("3.9")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def listing(path: Path) -> list[Path]:
    return sorted(path.iterdir())


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def agent(python: str, pyz: Path, *argv: str | Path, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    done = await asyncio.to_thread(run, python, pyz, *argv, env=env, cwd=cwd, timeout=180)
    return done.returncode, done.stdout, done.stderr


def test_the_file_is_small_and_has_one_backend_per_python(pyz: Path) -> None:
    size = pyz.stat().st_size
    assert 3_000_000 < size < 12_000_000, size  # the README gives the size
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n") and os.access(pyz, os.X_OK)
    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
    backends = sorted(n.split(".")[1] for n in names if n.startswith("site/_cffi_backend."))
    assert backends == [f"cpython-3{m}-{ARCH}-linux-gnu" for m in (10, 11, 12, 13, 14, 9)]
    assert "site/clients/agent/cli.py" in names and not any(n.startswith("site/clients/authorizer/") for n in names)
    services = {n.split("/")[3] for n in names if n.startswith("site/botocore/data/") and n.count("/") > 3}
    assert services == {"sts", "sso", "sso-oidc", "signin"}


async def test_39_bootstraps_renews_and_checks_status_from_the_file(
    pyz: Path, python39: str, cache: Path, tmp_path: Path, pg_url: str
) -> None:
    async with tls_issuer(tmp_path, pg_url, config=EDGE) as tls:
        h = tls.harness
        out = tmp_path / "agent"
        env = clean_env(ISSUER_AGENT_CACHE=str(cache), ISSUER_JOIN_TOKEN=await h.token(role="edge", name="al2023"))
        code, _, err = await agent(
            python39, pyz, "bootstrap", "--method", "token", "--server", tls.url, "--ca-bundle", tls.ca_bundle,
            "--out", out, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert code == 0, err
        (unpacked,) = listing(cache)
        assert mode(unpacked) == mode(cache) == 0o700

        env = clean_env(ISSUER_AGENT_CACHE=str(cache))
        code, printed, err = await agent(python39, pyz, "renew", "--out", out, "--force", env=env, cwd=tmp_path)
        assert code == 0, err
        assert [c.status for c in await h.certificates()] == ["superseded", "active"]
        code, printed, err = await agent(python39, pyz, "status", "--out", out, "--json", env=env, cwd=tmp_path)
        assert (code, json.loads(printed)["state"], json.loads(printed)["issuer_checked"]) == (0, "valid", True), err
        assert listing(cache) == [unpacked]  # unpacked once, reused


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoIam]:
    with moto_iam() as m:
        yield m


async def test_aws_iam_from_the_file_is_signed_by_its_own_botocore(
    pyz: Path, python39: str, aws: MotoIam, cache: Path, tmp_path: Path, pg_url: str
) -> None:
    home = tmp_path / "aws"
    home.mkdir()
    (home / "config").write_text("")
    (home / "credentials").write_text(
        f"[builder]\naws_access_key_id = {aws.user.access_key_id}\naws_secret_access_key = {aws.user.secret_access_key}\n"
    )
    async with running_issuer(tmp_path, pg_url, config=config(aws.url)) as h:
        env = clean_env(
            ISSUER_AGENT_CACHE=str(cache),
            AWS_CONFIG_FILE=str(home / "config"),
            AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
            AWS_EC2_METADATA_DISABLED="true",
        )
        server = str(h.client.make_url("")).rstrip("/")
        code, printed, err = await agent(
            python39, pyz, "bootstrap", "--method", "aws-iam", "--profile", "builder", "--server-id", SERVER_ID,
            "--role", "builders", "--server", server, "--out", tmp_path / "agent", env=env, cwd=tmp_path,
        )  # fmt: skip
        assert code == 0, err
        assert f"identity aws-iam {aws.user_arn} ({USER_URI})" in printed
        (audit,) = await h.attestations()
        assert (audit.outcome, audit.principal) == ("success", aws.user_arn)  # moto checked the signature


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_every_later_python_runs_the_same_file(pyz: Path, version: str, cache: Path, tmp_path: Path) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip(f"SKIPPING: no Python {version} here")
    done = run(python, pyz, "status", "--out", tmp_path / "none", env=clean_env(ISSUER_AGENT_CACHE=str(cache)))
    assert (done.returncode, done.stdout) == (3, f"no certificate in {tmp_path / 'none'}\n"), done.stderr


def test_an_older_python_gets_one_line(pyz: Path, cache: Path, tmp_path: Path) -> None:
    python = find_python("3.8")
    if python is None:
        pytest.skip("SKIPPING: no Python 3.8 here")
    done = run(python, pyz, "status", "--out", tmp_path, env=clean_env(ISSUER_AGENT_CACHE=str(cache)))
    assert done.returncode == 78 and not cache.exists()
    assert done.stderr.startswith("issuer-agent: error: issuer-agent needs Python 3.9.2 or newer, this is 3.8.")
    assert done.stderr.count("\n") == 1
