"""issuer-agent bootstrap --method aws-iam against the running service and moto's STS.

The agent finds its credentials the way it would in production, through botocore's chain:
environment variables, a named profile in a shared credentials file, and ECS container
credentials served on 127.0.0.1. It signs; the service forwards the request to moto, which
checks the signature. No developer's AWS configuration can take part: every ``AWS_*``
variable is removed and the config files point at empty temporary files.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from clients.agent.cli import main as agent_main
from tests.support.harness import Harness, running_issuer
from tests.support.moto_iam import ACCOUNT_ID, BUILDER_AND_TASK_ROLES, MotoIam, moto_iam
from tests.support.x509_check import openssl_verify

SERVER_ID = "issuer.test.example"
USER_URI = f"spiffe://test.example/aws/{ACCOUNT_ID}/iam/user/builder-1"
ROLE_URI = f"spiffe://test.example/aws/{ACCOUNT_ID}/iam/ecs-task-web/task-42"


def config(moto_url: str) -> str:
    return f"""
[issuer]
trust_domain = "test.example"
server_id = "{SERVER_ID}"

[aws.sts]
endpoint_overrides = {{ "sts.amazonaws.com" = "{moto_url}", "sts.us-east-1.amazonaws.com" = "{moto_url}" }}

{BUILDER_AND_TASK_ROLES}"""


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoIam]:
    with moto_iam() as m:
        yield m


@pytest.fixture(autouse=True)
def no_real_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing of the developer's or the CI machine's AWS setup; empty config files; no IMDS."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("ISSUER_SERVER_ID", raising=False)
    home = tmp_path / "aws"
    home.mkdir()
    (home / "config").write_text("")
    (home / "credentials").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return home


@pytest.fixture
async def issuer(tmp_path: Path, pg_url: str, aws: MotoIam) -> AsyncIterator[Harness]:
    async with running_issuer(tmp_path, pg_url, config=config(aws.url)) as h:
        yield h


@dataclass(frozen=True, slots=True)
class Run:
    status: int
    out: str
    err: str


async def bootstrap(h: Harness, out: Path, capsys: pytest.CaptureFixture[str], *options: str) -> Run:
    """Run ``issuer-agent bootstrap --method aws-iam`` in a thread (it blocks; the servers run here)."""
    server = str(h.client.make_url("")).rstrip("/")
    argv = ["bootstrap", "--method", "aws-iam", "--server", server, "--out", str(out), *options]
    status = await asyncio.to_thread(agent_main, argv)
    captured = capsys.readouterr()
    return Run(status, captured.out, captured.err)


async def check_bootstrapped(h: Harness, out: Path, run: Run, *, principal: str, uri: str, role: str) -> None:
    """Exit 0, a 0600 key matching a certificate openssl accepts, issued to ``principal`` and recorded."""
    assert run.status == 0, run.err
    key_path = out / "key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert_pem, chain_pem, bundle_pem = ((out / name).read_bytes() for name in ("cert.pem", "chain.pem", "bundle.pem"))
    openssl_verify(cert_pem, chain_pem, bundle_pem)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    leaf = x509.load_pem_x509_certificate(cert_pem)
    assert leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]

    assert f"identity aws-iam {principal} ({uri})" in run.out
    (row,) = await h.certificates()
    assert (row.serial, row.method, row.role) == (format(leaf.serial_number, "x"), "aws-iam", role)
    (audit,) = await h.attestations()
    assert (audit.outcome, audit.principal, audit.certificate_serial) == ("success", principal, row.serial)


async def test_credentials_from_the_environment(
    issuer: Harness, aws: MotoIam, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws.user.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws.user.secret_access_key)
    out = tmp_path / "agent"
    # No --sts-region and no region configured: the agent signs for sts.us-east-1.amazonaws.com.
    run = await bootstrap(issuer, out, capsys, "--server-id", SERVER_ID, "--role", "builders")
    await check_bootstrapped(issuer, out, run, principal=aws.user_arn, uri=USER_URI, role="builders")
    assert "sts.us-east-1.amazonaws.com" in run.err


async def test_credentials_from_a_named_profile(
    issuer: Harness, aws: MotoIam, no_real_aws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A default profile that STS would refuse: only --profile makes this work.
    (no_real_aws / "credentials").write_text(
        "[default]\naws_access_key_id = AKIADECOYDECOYDECOY0\naws_secret_access_key = decoy\n\n"
        f"[builder]\naws_access_key_id = {aws.user.access_key_id}\n"
        f"aws_secret_access_key = {aws.user.secret_access_key}\n"
    )
    out = tmp_path / "agent"
    run = await bootstrap(
        issuer,
        out,
        capsys,
        "--server-id",
        SERVER_ID,
        "--role",
        "builders",
        "--profile",
        "builder",
        "--sts-region",
        "us-east-1",
    )
    await check_bootstrapped(issuer, out, run, principal=aws.user_arn, uri=USER_URI, role="builders")


@pytest.fixture
async def container_credentials(aws: MotoIam) -> AsyncIterator[tuple[str, list[str]]]:
    """An ECS-style credentials endpoint on 127.0.0.1 serving the role session moto issued."""
    seen: list[str] = []

    async def creds(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "ecs-task-token":
            return web.json_response({"message": "not authorised"}, status=401)
        return web.json_response(
            {
                "AccessKeyId": aws.role.access_key_id,
                "SecretAccessKey": aws.role.secret_access_key,
                "Token": aws.role.session_token,
                "Expiration": aws.role_expiration.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    app = web.Application()
    app.router.add_get("/creds", creds)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/creds")), seen
    finally:
        await server.close()


async def test_ecs_container_credentials(
    issuer: Harness,
    aws: MotoIam,
    container_credentials: tuple[str, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, seen = container_credentials
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ecs-task-token")
    out = tmp_path / "agent"
    run = await bootstrap(
        issuer, out, capsys, "--server-id", SERVER_ID, "--role", "ecs-tasks", "--sts-endpoint-host", "sts.amazonaws.com"
    )
    await check_bootstrapped(issuer, out, run, principal=aws.canonical_role_arn, uri=ROLE_URI, role="ecs-tasks")
    assert seen == ["ecs-task-token"]
    assert "https://sts.amazonaws.com/" in run.err


async def test_a_proof_for_another_issuer_is_refused_and_nothing_is_written(
    issuer: Harness, aws: MotoIam, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws.user.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws.user.secret_access_key)
    out = tmp_path / "agent"
    run = await bootstrap(issuer, out, capsys, "--server-id", "issuer.other.example", "--role", "builders")
    assert run.status == 1, run
    assert "sts_server_id_mismatch" in run.err
    assert not (out / "key.pem").exists() and not (out / "cert.pem").exists()
    assert await issuer.certificates() == []
    (audit,) = await issuer.attestations()
    assert (audit.outcome, audit.code) == ("failure", "sts_server_id_mismatch")
