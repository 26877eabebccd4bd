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

import boto3
from cryptography.hazmat.primitives import serialization

from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign
from tests.support.fake_imds import ImdsConfig, fake_imds
from tests.support.moto_server import moto_server

ACCOUNT = "123456789012"  # moto's account
REGION = "eu-west-1"
INSTANCE = "i-0de70c0ffee123456"
# moto lets this many requests through unauthenticated (the IAM setup below); after that
# every request must carry a valid SigV4 signature from a key moto issued.
SETUP_REQUESTS = 4


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


@contextmanager
def demo_aws(workdir: Path) -> Iterator[DemoAws]:
    with ExitStack() as stack:
        moto = stack.enter_context(moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}))
        setup = {
            "endpoint_url": moto.url,
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **setup)
        user = iam.create_user(UserName="build-server")["User"]
        key = iam.create_access_key(UserName="build-server")["AccessKey"]
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": user["Arn"]}, "Action": "sts:AssumeRole"}],
        }
        role = iam.create_role(RoleName="ecs-task-payments", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        iam.put_user_policy(
            UserName="build-server",
            PolicyName="assume",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        user_creds = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        sts = boto3.client(
            "sts",
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id=user_creds.access_key_id,
            aws_secret_access_key=user_creds.secret_access_key,
        )
        assumed = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="task-7f3a9c")["Credentials"]

        signer = FakeAwsSigner.create()
        cert_path = workdir / f"demo-aws-{REGION}.pem"
        cert_path.write_bytes(signer.cert.public_bytes(serialization.Encoding.PEM))
        pending = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        document = build_document(account_id=ACCOUNT, instance_id=INSTANCE, region=REGION, pending_time=pending)
        imds = stack.enter_context(
            fake_imds(ImdsConfig(document=document.decode(), rsa2048=sign(document, signer, "rsa2048")))
        )
        yield DemoAws(
            sts_url=moto.url,
            imds_url=imds.url,
            aws_cert_path=cert_path,
            user_arn=user["Arn"],
            user=user_creds,
            role_arn=role["Arn"],
            task=Credentials(assumed["AccessKeyId"], assumed["SecretAccessKey"], assumed["SessionToken"]),
        )
