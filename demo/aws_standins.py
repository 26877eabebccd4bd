"""Local stand-ins for AWS, for the demo: STS + IAM (moto's server, signatures checked),
an instance metadata service, and an "AWS" key that signs identity documents.

They reuse the test suite's peers (``tests/support``), so the demo and the tests
exercise the issuer against the same programs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from cryptography.hazmat.primitives import serialization

from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign
from tests.support.fake_imds import ImdsConfig, fake_imds
from tests.support.moto_ec2_role import moto_ec2_role
from tests.support.moto_iam import moto_iam
from tests.support.moto_server import moto_server

ACCOUNT = "123456789012"  # moto's account
REGION = "eu-west-1"
INSTANCE = "i-0de70c0ffee123456"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def env(self) -> dict[str, str]:
        out = {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}
        if self.session_token:
            out["AWS_SESSION_TOKEN"] = self.session_token
        return out


@dataclass(frozen=True, slots=True)
class DemoAws:
    sts_url: str
    imds_url: str
    aws_cert_path: Path
    user_arn: str
    user: Credentials
    role_arn: str
    task: Credentials  # an assumed-role session, like an ECS task role's
    s3_url: str  # moto's server as S3 (no request authentication), for truststore publishing
    operator_arn: str  # an IAM user [[admins]] names: the operator who signs in to the admin API
    operator: Credentials
    # moto as the STS that answers for the EC2 instance identity role (aws-ec2-role); IMDS serves its credentials.
    instance_role_sts_url: str

    def s3_env(self) -> dict[str, str]:
        """What an operator's shell would hold to publish to this S3: an endpoint, keys, a region."""
        return {
            "AWS_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def s3_client(self) -> Any:
        return self.client("s3")

    def client(self, service: str) -> Any:
        """A client of the second moto server (S3, KMS, EventBridge, SQS) with the operator's keys."""
        env = self.s3_env()
        return boto3.client(
            service,
            endpoint_url=self.s3_url,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )


@contextmanager
def demo_aws(workdir: Path) -> Iterator[DemoAws]:
    with ExitStack() as stack:
        iam = stack.enter_context(
            moto_iam(
                user_name="build-server",
                user_path="/",
                role_name="ecs-task-payments",
                role_path="/",
                session_name="task-7f3a9c",
                operators=("ops-alice",),
            )
        )
        signer = FakeAwsSigner.create()
        cert_path = workdir / f"demo-aws-{REGION}.pem"
        cert_path.write_bytes(signer.cert.public_bytes(serialization.Encoding.PEM))
        pending = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        document = build_document(account_id=ACCOUNT, instance_id=INSTANCE, region=REGION, pending_time=pending)
        # moto allows the role name "aws:ec2-instance" (real IAM does not: that is why the form cannot be
        # forged); assumed with the instance ID as the session, it is what EC2 gives every instance.
        instance_role = stack.enter_context(moto_ec2_role())
        imds = stack.enter_context(
            fake_imds(
                ImdsConfig(
                    document=document.decode(),
                    rsa2048=sign(document, signer, "rsa2048"),
                    instance_role=json.dumps(instance_role.imds_credentials(INSTANCE)),
                )
            )
        )
        s3 = stack.enter_context(moto_server())
        yield DemoAws(
            sts_url=iam.server.url,
            imds_url=imds.url,
            aws_cert_path=cert_path,
            user_arn=iam.user_arn,
            user=Credentials(iam.user.access_key_id, iam.user.secret_access_key),
            role_arn=iam.role_arn,
            task=Credentials(iam.role.access_key_id, iam.role.secret_access_key, iam.role.session_token),
            s3_url=s3.url,
            operator_arn=f"arn:aws:iam::{ACCOUNT}:user/ops-alice",
            operator=Credentials(
                iam.operators["ops-alice"].access_key_id, iam.operators["ops-alice"].secret_access_key
            ),
            instance_role_sts_url=instance_role.url,
        )
