"""issuer-agent bootstrap and renew --method aws-ec2-role against the running service, a local IMDSv2
serving the instance identity role's credentials, and moto (signatures checked) as STS and EC2.

The credentials IMDS serves are moto's role ``aws:ec2-instance`` assumed with the instance ID
as session name, so STS answers ``…:assumed-role/aws:ec2-instance/i-…`` for the instance moto
runs; the issuer looks the instance up (check_instance) in moto's EC2.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from clients.agent.cli import main as agent_main
from tests.support.fake_imds import INSTANCE_ROLE_PATH, ImdsConfig, fake_imds
from tests.support.harness import Harness, running_issuer
from tests.support.moto_ec2_role import ACCOUNT_ID, REGION, MotoEc2Role, moto_ec2_role
from tests.support.x509_check import openssl_verify

SERVER_ID = "issuer.test.example"


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoEc2Role]:
    with moto_ec2_role() as m:
        yield m


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, aws: MotoEc2Role) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)


def config(aws: MotoEc2Role) -> str:
    sts = {f"sts.{REGION}.amazonaws.com": aws.url, "sts.amazonaws.com": aws.url}
    overrides = ", ".join(f'"{host}" = "{url}"' for host, url in sts.items())
    return f"""
[issuer]
trust_domain = "test.example"
server_id = "{SERVER_ID}"

[aws.sts]
endpoint_overrides = {{ {overrides} }}

[aws.ec2]
endpoint_overrides = {{ "*" = "{aws.url}" }}

[[roles]]
name = "fleet"
methods = ["aws-ec2-role"]
account_ids = ["{ACCOUNT_ID}"]
check_instance = true
regions = ["{REGION}"]
vpc_ids = ["{aws.vpc_id}"]
"""


def bootstrap_argv(h: Harness, out: Path, imds_url: str) -> list[str]:
    server = str(h.client.make_url("")).rstrip("/")
    return [
        "bootstrap",
        "--method",
        "aws-ec2-role",
        "--role",
        "fleet",
        "--server-id",
        SERVER_ID,
        "--server",
        server,
        "--out",
        str(out),
        "--imds-endpoint",
        imds_url,
    ]


def verify(out: Path) -> x509.Certificate:
    openssl_verify((out / "cert.pem").read_bytes(), (out / "chain.pem").read_bytes(), (out / "bundle.pem").read_bytes())
    return x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())


async def test_agent_bootstraps_and_renews_with_the_instance_identity_role(
    tmp_path: Path, pg_url: str, aws: MotoEc2Role, capsys: pytest.CaptureFixture[str]
) -> None:
    instance = aws.launch()
    uri = f"spiffe://test.example/aws/{ACCOUNT_ID}/{REGION}/ec2/{instance}"
    imds_config = ImdsConfig(instance_role=json.dumps(aws.imds_credentials(instance)), expire_first_token=True)
    with fake_imds(imds_config) as imds:
        async with running_issuer(tmp_path, pg_url, config=config(aws)) as h:
            out = tmp_path / "agent"
            code = await asyncio.to_thread(agent_main, bootstrap_argv(h, out, imds.url))
            assert code == 0, capsys.readouterr()
            assert uri in capsys.readouterr().out
            leaf = verify(out)
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
            assert not (out / "instance-nonce").exists()  # no trust on first use for this method

            # IMDSv2: a token first; the first token "expired" (401), a new one was fetched; every GET carried one.
            first, *rest = imds.requests
            assert (first.method, first.path) == ("PUT", "/latest/api/token")
            gets = [r for r in rest if r.method == "GET"]
            assert [(r.path, r.status) for r in gets] == [(INSTANCE_ROLE_PATH, 401), (INSTANCE_ROLE_PATH, 200)]
            assert all(r.headers["X-aws-ec2-metadata-token"] in imds.tokens for r in gets[1:])

            # Renewal re-asks EC2 about the instance: fine while it runs.
            assert await asyncio.to_thread(agent_main, ["renew", "--out", str(out), "--force"]) == 0, (
                capsys.readouterr()
            )
            renewed = verify(out)
            assert renewed.serial_number != leaf.serial_number
            assert [c.method for c in await h.certificates()] == ["aws-ec2-role", "aws-ec2-role"]

            # A stopped instance renews no more.
            aws.client("ec2").stop_instances(InstanceIds=[instance])
            capsys.readouterr()
            assert await asyncio.to_thread(agent_main, ["renew", "--out", str(out), "--force"]) != 0
            assert "ec2_instance_not_running" in capsys.readouterr().err
            assert verify(out).serial_number == renewed.serial_number
