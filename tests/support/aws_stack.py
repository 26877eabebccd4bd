"""The reference stack created in moto's CloudFormation, and its task definitions run as ECS would.

:func:`moto_stack` creates ``deploy/aws/issuer.yaml`` (trimmed to what moto implements, see
:mod:`tests.support.cfn_template`) on a moto server with signature checking on; :func:`run_task`
runs one of the stack's task definitions — its own entry point and command, as moto stored them —
here, against a real Postgres and moto.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from sqlalchemy.engine import make_url

from tests.support.cfn_template import moto_supported_types, trim_for_moto
from tests.support.moto_server import MotoServer, moto_server

__all__ = ["NOT_IN_MOTO", "REGION", "MotoStack", "json_lines", "moto_stack", "resolve", "run_task"]

REGION = "eu-west-1"
ROOT = Path(__file__).resolve().parents[2]
NOT_IN_MOTO = {
    "AWS::SecretsManager::Secret",
    "AWS::SecretsManager::SecretTargetAttachment",
    "AWS::S3::BucketPolicy",
    "AWS::Logs::MetricFilter",
    "AWS::CloudWatch::Alarm",
    "AWS::ApiGateway::DomainName",
    "AWS::ApiGateway::BasePathMapping",
    "AWS::ApiGateway::Authorizer",
    "AWS::EC2::SecurityGroupEgress",
}
# IAM user, access key, user policy: then moto checks every request's signature and the policy.
SETUP_REQUESTS = 3


@dataclass(frozen=True, slots=True)
class MotoStack:
    server: MotoServer
    env: dict[str, str]  # AWS_* for a client signing as the deployer
    outputs: dict[str, str]
    resources: dict[str, str]  # logical id -> physical id
    dropped: list[str]

    def client(self, service: str) -> Any:
        return boto3.client(
            service, endpoint_url=self.server.url, region_name=REGION,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip

    @property
    def bucket(self) -> str:
        return self.resources["TruststoreBucket"]


@contextmanager
def moto_stack(template: dict[str, Any]) -> Iterator[MotoStack]:
    """The stack created in moto's CloudFormation as an IAM user ``deployer``; raises AssertionError
    when moto does not complete it."""
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}) as server:
        setup = {"endpoint_url": server.url, "region_name": REGION}
        iam = boto3.client("iam", aws_access_key_id="AKIASETUP", aws_secret_access_key="setup", **setup)
        iam.create_user(UserName="deployer")
        key = iam.create_access_key(UserName="deployer")["AccessKey"]
        services = ["cloudformation", "ec2", "s3", "acm", "kms", "iam", "ecs", "lambda", "rds", "elasticloadbalancing"]
        deployer = {"Effect": "Allow", "Action": [f"{s}:*" for s in services], "Resource": "*"}  # the test's own user
        iam.put_user_policy(UserName="deployer", PolicyName="deploy",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [deployer]}))  # fmt: skip
        creds = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"], **setup}
        ec2 = boto3.client("ec2", **creds)
        vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        subnets = ",".join(
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"][
                "SubnetId"
            ]
            for i, az in enumerate("abc")
        )
        s3 = boto3.client("s3", **creds)
        s3.create_bucket(Bucket="artefacts", CreateBucketConfiguration={"LocationConstraint": REGION})
        package = io.BytesIO()
        with zipfile.ZipFile(package, "w") as archive:  # what `make authorizer-zip` packages
            archive.write(ROOT / "clients" / "authorizer" / "lambda_function.py", "lambda_function.py")
        # No AuthorizerCodeKey parameter: the stack takes the zip named for AuthorizerArchitecture (x86_64).
        s3.put_object(Bucket="artefacts", Key="authorizer-x86_64.zip", Body=package.getvalue())
        certificate = boto3.client("acm", **creds).request_certificate(DomainName="issuer.example.org")
        parameters = {
            "VpcId": vpc, "LoadBalancerSubnetIds": subnets, "ServiceSubnetIds": subnets,
            "ImageUri": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/aws-machine-issuer:0.1.0",
            "IssuerDomainName": "issuer.example.org", "IssuerCertificateArn": certificate["CertificateArn"],
            "AuthorizerCodeBucket": "artefacts", "DesiredCount": "2",
        }  # fmt: skip
        # moto's CloudFormation makes every AWS::KMS::Key symmetric whatever its KeySpec: the two CA
        # keys are made through the KMS API with the template's own properties and stand in for them.
        kms = boto3.client("kms", **creds)
        stand_ins = {}
        for name in ("IssuingKey", "RootKey"):
            props = template["Resources"][name]["Properties"]
            made = kms.create_key(KeySpec=props["KeySpec"], KeyUsage=props["KeyUsage"], Description=name)["KeyMetadata"]
            stand_ins[name] = {"Ref": made["KeyId"], "Arn": made["Arn"]}
        trimmed, dropped = trim_for_moto(template, moto_supported_types(), stand_ins=stand_ins)
        cfn = boto3.client("cloudformation", **creds)
        cfn.create_stack(
            StackName="issuer", TemplateBody=json.dumps(trimmed), Capabilities=["CAPABILITY_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )  # fmt: skip
        described = cfn.describe_stacks(StackName="issuer")["Stacks"][0]
        assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
        summaries = cfn.list_stack_resources(StackName="issuer")["StackResourceSummaries"]
        # moto's CloudFormation ignores a bucket's versioning and public access block (checked in the
        # template): apply the template's own values through the S3 API, as AWS would have.
        bucket_props = template["Resources"]["TruststoreBucket"]["Properties"]
        (bucket,) = [s["PhysicalResourceId"] for s in summaries if s["LogicalResourceId"] == "TruststoreBucket"]
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=bucket_props["VersioningConfiguration"])
        s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=bucket_props["PublicAccessBlockConfiguration"]
        )
        yield MotoStack(
            server=server,
            env={"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]},
            outputs={o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])},
            resources={s["LogicalResourceId"]: s["PhysicalResourceId"] for s in summaries},
            dropped=dropped,
        )


def run_task(stack: MotoStack, family: str, database_url: str, scratch: Path) -> subprocess.CompletedProcess[str]:
    """Run a task definition's container as ECS would (entry point + command), here, on a real Postgres."""
    ecs = stack.client("ecs")
    (container,) = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["containerDefinitions"]
    entry = [part.replace("/run/issuer", str(scratch)) for part in container["entryPoint"]]
    # The one change for this machine: the test Postgres has no TLS (the stack insists on it).
    entry = [part.replace("?ssl=require", "?ssl=disable") for part in entry]
    url = make_url(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "AWS_"))}
    env |= {e["name"]: e["value"].replace("/run/issuer", str(scratch)) for e in container["environment"]}
    env |= {"ISSUER_DB_HOST": url.host or "127.0.0.1", "ISSUER_DB_PORT": str(url.port or 5432),
            "ISSUER_DB_NAME": url.database or "", "ISSUER_DB_USER": url.username or "postgres",
            "ISSUER_DB_PASSWORD": url.password or "", "AWS_ENDPOINT_URL": stack.server.url,
            "AWS_EC2_METADATA_DISABLED": "true", "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            **stack.env}  # fmt: skip
    assert {s["name"] for s in container["secrets"]} == {"ISSUER_DB_USER", "ISSUER_DB_PASSWORD"}
    assert container["user"] == "10001:10001" and container["readonlyRootFilesystem"]
    scratch.mkdir(exist_ok=True)
    return subprocess.run(
        [*entry, *container["command"]], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def json_lines(output: str) -> list[dict[str, Any]]:
    """The one-line JSON objects a task printed (what the stack's metric filters count)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and line.endswith("}")]


def resolve(value: Any, names: Mapping[str, str]) -> str:
    """A template value (a string, ``Ref`` or a ``Fn::Sub`` string) with ``names`` for its references.

    Raises KeyError for a reference ``names`` does not give.
    """
    if isinstance(value, str):
        return value
    if set(value) == {"Ref"}:
        return names[value["Ref"]]
    text = value["Fn::Sub"]
    assert isinstance(text, str), value
    for name in [part.split("}", 1)[0] for part in text.split("${")[1:]]:
        text = text.replace("${" + name + "}", names[name])
    return text
