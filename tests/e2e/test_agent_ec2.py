"""issuer-agent bootstrap --method aws-ec2 against the running service and a local IMDSv2.

The identity document comes from the fake IMDS, signed by a stand-in AWS signer whose
certificate the service pins for the document's region; everything between the two
(agent, HTTP, verification, trust-on-first-use binding, CA, database) is the real thing.
"""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from clients.agent.cli import main as agent_main
from issuer.attest.ec2_certs import AwsCertStore
from issuer.hashing import hash_secret
from issuer.store.models import InstanceBinding
from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign
from tests.support.fake_imds import ImdsConfig, fake_imds
from tests.support.harness import Harness, running_issuer
from tests.support.x509_check import openssl_verify

REGION = "eu-west-1"
ACCOUNT = "123456789012"
INSTANCE = "i-0e2e0000000000001"
URI = f"spiffe://test.example/aws/{ACCOUNT}/{REGION}/ec2/{INSTANCE}"
CONFIG = """
[issuer]
trust_domain = "test.example"

[[roles]]
name = "fleet"
methods = ["aws-ec2"]
account_ids = ["123456789012"]
regions = ["eu-west-1"]
max_instance_age = "10m"
"""


@pytest.fixture(scope="module")
def aws() -> FakeAwsSigner:
    return FakeAwsSigner.create(kind="rsa2048")


@pytest.fixture
def imds_config(aws: FakeAwsSigner) -> ImdsConfig:
    launched = datetime.now(UTC) - timedelta(minutes=3)
    document = build_document(
        account_id=ACCOUNT, instance_id=INSTANCE, region=REGION, pending_time=launched.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    return ImdsConfig(document=document.decode(), rsa2048=sign(document, aws, "rsa2048"))


def bootstrap_argv(h: Harness, out: Path, imds_url: str) -> list[str]:
    server = str(h.client.make_url("")).rstrip("/")
    return ["bootstrap", "--method", "aws-ec2", "--server", server, "--out", str(out), "--imds-endpoint", imds_url]


async def bindings(h: Harness) -> list[InstanceBinding]:
    async with h.service.sessions() as session:
        return list((await session.scalars(select(InstanceBinding))).all())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_agent_bootstraps_from_imds_and_reuses_its_nonce(
    tmp_path: Path,
    pg_url: str,
    aws: FakeAwsSigner,
    imds_config: ImdsConfig,
    capsys: pytest.CaptureFixture[str],
) -> None:
    certs = AwsCertStore.builtin(extra={REGION: [aws.cert]})
    with fake_imds(imds_config) as imds:
        async with running_issuer(tmp_path, pg_url, config=CONFIG, aws_certs=certs) as h:
            out = tmp_path / "agent"
            code = await asyncio.to_thread(agent_main, bootstrap_argv(h, out, imds.url))
            assert code == 0, capsys.readouterr()
            printed = capsys.readouterr().out
            assert URI in printed and "instance-nonce" in printed

            key_path, nonce_path = out / "key.pem", out / "instance-nonce"
            assert (mode(out), mode(key_path), mode(nonce_path)) == (0o700, 0o600, 0o600)
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            leaf = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
            assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
            openssl_verify(
                (out / "cert.pem").read_bytes(), (out / "chain.pem").read_bytes(), (out / "bundle.pem").read_bytes()
            )
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.UniformResourceIdentifier) == [URI]

            # The agent sent its own nonce (written before the request); the issuer bound the instance to it.
            nonce = nonce_path.read_text().strip()
            (binding,) = await bindings(h)
            assert (binding.instance_id, binding.nonce_hash) == (INSTANCE, hash_secret(nonce))
            # IMDSv2: a session token first, and every GET carried it.
            first, *gets = imds.requests
            assert (first.method, first.path, first.status) == ("PUT", "/latest/api/token", 200)
            assert gets and all(
                r.method == "GET" and r.headers["X-aws-ec2-metadata-token"] in imds.tokens for r in gets
            )

            # A second bootstrap into the same directory presents the stored nonce: a new key, a new certificate.
            code = await asyncio.to_thread(agent_main, bootstrap_argv(h, out, imds.url))
            assert code == 0, capsys.readouterr()
            capsys.readouterr()
            assert nonce_path.read_text().strip() == nonce
            second = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
            assert second.serial_number != leaf.serial_number
            assert second.public_key().public_numbers() != leaf.public_key().public_numbers()  # type: ignore[union-attr]
            openssl_verify(
                (out / "cert.pem").read_bytes(), (out / "chain.pem").read_bytes(), (out / "bundle.pem").read_bytes()
            )
            assert [row.serial for row in await h.certificates()] == [
                format(leaf.serial_number, "x"),
                format(second.serial_number, "x"),
            ]

            # Another directory has no nonce: the agent makes a new one, which is not the instance's. Refused.
            fresh = tmp_path / "elsewhere"
            code = await asyncio.to_thread(agent_main, bootstrap_argv(h, fresh, imds.url))
            assert code != 0
            assert "ec2_nonce_mismatch" in capsys.readouterr().err
            assert not (fresh / "key.pem").exists() and not (fresh / "cert.pem").exists()
            assert len(await h.certificates()) == 2
            assert [b.nonce_hash for b in await bindings(h)] == [hash_secret(nonce)]


async def test_agent_refuses_imds_v1(
    tmp_path: Path,
    pg_url: str,
    aws: FakeAwsSigner,
    imds_config: ImdsConfig,
    capsys: pytest.CaptureFixture[str],
) -> None:
    certs = AwsCertStore.builtin(extra={REGION: [aws.cert]})
    v1_only = ImdsConfig(document=imds_config.document, rsa2048=imds_config.rsa2048, mode="v1-only")
    with fake_imds(v1_only) as imds:
        async with running_issuer(tmp_path, pg_url, config=CONFIG, aws_certs=certs) as h:
            out = tmp_path / "agent"
            code = await asyncio.to_thread(agent_main, bootstrap_argv(h, out, imds.url))
            assert code != 0
            err = capsys.readouterr().err
            assert "IMDSv2 is required" in err and "imds_v2_unavailable" in err
            # It never fell back to an unauthenticated GET, and never asked the issuer.
            assert [r.method for r in imds.requests] == ["PUT"]
            assert await h.attestations() == [] and not (out / "key.pem").exists()
