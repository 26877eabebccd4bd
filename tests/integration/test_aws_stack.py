"""deploy/aws/issuer.yaml: cfn-lint clean, least privilege by reading it, and created in moto's CloudFormation.

moto implements only some resource types; the stack is created from a copy without the others
(Secrets Manager secret, bucket policy, metric filters, alarms, API Gateway domain, authorizer,
security-group egress rules: :data:`NOT_IN_MOTO`), whose references become placeholders. What
moto does not create is checked by reading the template. Then the one-off tasks run as ECS would
run them — the task definitions' own entry point and commands, as moto stored them — against
a real Postgres and moto: migrate, ca init with the stack's two KMS keys, publish to the stack's
bucket, and the scheduled checks, whose JSON lines the metric filters count.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.engine import make_url

from tests.support.cfn_template import (
    TEMPLATE,
    actions_of,
    load_template,
    matches,
    moto_supported_types,
    policy_documents,
    role_actions,
    statements,
    trim_for_moto,
)
from tests.support.moto_server import MotoServer, moto_server

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
TASK_ROLE_ACTIONS = {
    "ec2:DescribeInstances",
    "kms:Sign",
    "kms:GetPublicKey",
    "kms:DescribeKey",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "s3:GetBucketVersioning",
    "s3:ListBucket",
    "apigateway:GET",
    "apigateway:PATCH",
    "events:PutEvents",
}
# IAM user, access key, user policy: then moto checks every request's signature and the policy.
SETUP_REQUESTS = 3


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def test_cfn_lint_reports_nothing() -> None:
    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    if cfn_lint is None:
        if os.environ.get("CI"):
            pytest.fail("cfn-lint is not installed (the dev extra has it)", pytrace=False)
        pytest.skip("SKIPPING: cfn-lint is not installed (pip install -e '.[dev]')")
    result = subprocess.run(
        [cfn_lint, "--regions", "us-east-1", "eu-west-1", "--", str(TEMPLATE)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_no_policy_grants_a_wildcard_action(template: dict[str, Any]) -> None:
    seen = 0
    for name, where, document in policy_documents(template):
        for statement in statements(document):
            seen += 1
            assert "NotAction" not in statement and "NotResource" not in statement, (name, where)
            for action in actions_of(statement):
                assert action != "*", (name, where, statement)
                if statement["Effect"] == "Allow" or not action.endswith(":*"):
                    assert not action.endswith(":*"), (name, where, statement)
                else:  # a Deny takes away, so it may be broad: only the bucket's TLS-only statement is
                    assert action == "s3:*" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert seen > 20


def test_task_role_has_exactly_the_service_actions(template: dict[str, Any]) -> None:
    assert role_actions(template, "TaskRole") == TASK_ROLE_ACTIONS
    resources = template["Resources"]
    serve = resources["ServeTaskDefinition"]["Properties"]
    assert serve["TaskRoleArn"] == {"Fn::GetAtt": ["TaskRole", "Arn"]}
    # The tasks that need no AWS access get no task role at all.
    for quiet in ("MigrateTaskDefinition", "ChecksTaskDefinition"):
        assert "TaskRoleArn" not in resources[quiet]["Properties"], quiet
    assert role_actions(template, "CaAdminRole") == {"kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"}


@pytest.mark.parametrize(("key", "spec", "signer"), [("IssuingKey", "ECC_NIST_P256", "TaskRole"), ("RootKey", "ECC_NIST_P384", "CaAdminRole")])  # fmt: skip
def test_only_one_role_may_sign_with_each_key(template: dict[str, Any], key: str, spec: str, signer: str) -> None:
    props = template["Resources"][key]["Properties"]
    assert (props["KeySpec"], props["KeyUsage"]) == (spec, "SIGN_VERIFY")
    signer_arn = {"Fn::GetAtt": [signer, "Arn"]}
    allows_sign, denies_others = [], []
    for statement in statements(props["KeyPolicy"]):
        signs = any(matches(action, "kms:Sign") for action in actions_of(statement))
        if statement["Effect"] == "Allow" and signs:
            allows_sign.append(statement["Principal"])
        if statement["Effect"] == "Deny" and signs:
            denies_others.append(statement)
        if statement["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}:
            assert not signs and "kms:PutKeyPolicy" in actions_of(statement)  # administers, never signs
    assert allows_sign == [{"AWS": signer_arn}]
    (deny,) = denies_others
    assert deny["Principal"] == "*" and deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": signer_arn}}


def test_truststore_bucket_domain_and_authorizer(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    bucket = resources["TruststoreBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["PublicAccessBlockConfiguration"].values()) and len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    policy = statements(resources["TruststoreBucketPolicy"]["Properties"]["PolicyDocument"])
    (tls_only,) = [s for s in policy if s["Effect"] == "Deny"]
    assert tls_only["Principal"] == "*" and tls_only["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    (apigw,) = [s for s in policy if s["Effect"] == "Allow"]
    assert apigw["Principal"] == {"Service": "apigateway.amazonaws.com"} and set(apigw["Action"]) == {
        "s3:GetObject", "s3:GetObjectVersion"}  # fmt: skip
    mtls = resources["ApiDomain"]["Properties"]["MutualTlsAuthentication"]
    assert mtls["TruststoreUri"] == {"Fn::Sub": "s3://${TruststoreBucket}/truststore.pem"}
    authorizer = resources["RestAuthorizer"]["Properties"]
    assert "${AuthorizerFunction.Arn}" in authorizer["AuthorizerUri"]["Fn::Sub"]
    assert authorizer["Type"] == "REQUEST" and authorizer["AuthorizerResultTtlInSeconds"] == 0
    code = resources["AuthorizerFunction"]["Properties"]["Code"]
    assert code == {"S3Bucket": {"Ref": "AuthorizerCodeBucket"}, "S3Key": {"Ref": "AuthorizerCodeKey"}}
    assert template["Parameters"]["AuthorizerCodeKey"]["Default"] == "authorizer-x86_64.zip"
    assert resources["AuthorizerInvokePermission"]["Properties"]["Principal"] == "apigateway.amazonaws.com"
    listener = resources["HttpsListener"]["Properties"]
    assert listener["Protocol"] == "HTTPS" and listener["Certificates"] == [
        {"CertificateArn": {"Ref": "IssuerCertificateArn"}}
    ]
    for name in ("VpcId", "ServiceSubnetIds", "LoadBalancerSubnetIds", "IssuerDomainName", "ApiDomainName", "ImageUri"):
        assert name in template["Parameters"], name


def test_alarms_cover_the_service_metrics(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    filters = {r["Properties"]["MetricTransformations"][0]["MetricName"]: r["Properties"] for r in resources.values()
               if r["Type"] == "AWS::Logs::MetricFilter"}  # fmt: skip
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    alarmed = {a["MetricName"] for a in alarms}
    assert {"Refusals", "ServiceUnavailableTotal", "CaExpiring", "CertificatesExpiringUnrenewed"} <= alarmed
    assert filters["RefusalsByReason"]["MetricTransformations"][0]["Dimensions"] == [{"Key": "code", "Value": "$.code"}]
    assert all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms)
    for alarm in alarms:  # every alarm on our namespace has a filter that feeds it
        if alarm["Namespace"] != "AWS/ApplicationELB":
            assert alarm["MetricName"] in filters, alarm["MetricName"]


def test_first_deployment_and_upgrades_keep_the_order(template: dict[str, Any]) -> None:
    """No replica before migrate has run; one-off tasks can take a new image before the service does."""
    resources, parameters = template["Resources"], template["Parameters"]
    assert parameters["DesiredCount"]["Default"] == 0
    assert resources["ServeTaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Image"] == {"Ref": "ImageUri"}
    separate = {"Fn::If": ["SeparateTaskImage", {"Ref": "TaskImageUri"}, {"Ref": "ImageUri"}]}
    for task in ("MigrateTaskDefinition", "CaInitTaskDefinition", "PublishTaskDefinition", "ChecksTaskDefinition"):
        assert resources[task]["Properties"]["ContainerDefinitions"][0]["Image"] == separate, task
    deployment = resources["Service"]["Properties"]["DeploymentConfiguration"]
    assert deployment["MinimumHealthyPercent"] == 100 and deployment["DeploymentCircuitBreaker"]["Rollback"]


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


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Iterator[MotoStack]:
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
        # template above): apply the template's own values through the S3 API, as AWS would have.
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


@pytest.mark.slow
def test_stack_creates_in_moto(stack: MotoStack, template: dict[str, Any]) -> None:
    dropped_types = {template["Resources"][name]["Type"] for name in stack.dropped}
    assert dropped_types == NOT_IN_MOTO | {"AWS::KMS::Key"}
    kept = [n for n, r in template["Resources"].items() if n not in stack.dropped and "Condition" not in r]
    assert set(kept) <= set(stack.resources) and len(kept) >= 30

    kms = stack.client("kms")
    for alias, spec in (("issuing", "ECC_NIST_P256"), ("root", "ECC_NIST_P384")):
        metadata = kms.describe_key(KeyId=f"alias/issuer-{alias}")["KeyMetadata"]  # the stack's aliases
        assert (metadata["KeySpec"], metadata["KeyUsage"]) == (spec, "SIGN_VERIFY")

    s3 = stack.client("s3")
    bucket = stack.outputs["TruststoreUri"].removeprefix("s3://").split("/")[0]
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    iam = stack.client("iam")
    role = stack.outputs["TaskRoleArn"].rsplit("/", 1)[1]
    (policy_name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
    granted = {
        a for s in document["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert granted == TASK_ROLE_ACTIONS

    ecs = stack.client("ecs")
    service = ecs.describe_services(cluster=stack.outputs["ClusterName"], services=[stack.outputs["ServiceName"]])
    # moto keeps neither launch type nor load balancers from CloudFormation (both checked in the template).
    (running,) = service["services"]
    assert running["desiredCount"] == 2
    assert running["taskDefinition"].split("/")[-1] == "issuer-serve:1"
    # moto's Lambda refuses its own SigV4 check on every call, so the function is only seen created here.
    assert stack.resources["AuthorizerFunction"] == "issuer-authorizer"
    (db,) = stack.client("rds").describe_db_instances()["DBInstances"]
    assert db["Engine"] == "postgres" and db["StorageEncrypted"] and not db["PubliclyAccessible"]


def _run_task(
    stack: MotoStack, family_output: str, database_url: str, scratch: Path
) -> subprocess.CompletedProcess[str]:
    """Run a task definition's container as ECS would (entry point + command), here, on a real Postgres."""
    ecs = stack.client("ecs")
    (container,) = ecs.describe_task_definition(taskDefinition=family_output)["taskDefinition"]["containerDefinitions"]
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


@pytest.mark.slow
@pytest.mark.postgres
def test_one_off_tasks_run_against_the_stack(stack: MotoStack, empty_db: str, tmp_path: Path) -> None:
    scratch = tmp_path / "run"
    migrated = _run_task(stack, stack.outputs["MigrateTaskDefinition"], empty_db, scratch)
    assert migrated.returncode == 0 and "Schema is at head" in migrated.stdout, migrated.stdout + migrated.stderr

    initialised = _run_task(stack, stack.outputs["CaInitTaskDefinition"], empty_db, scratch)
    assert initialised.returncode == 0, initialised.stdout + initialised.stderr
    assert (
        stack.outputs["IssuingKeyArn"] in initialised.stdout and "registered as the active issuer" in initialised.stdout
    )
    assert not (scratch / "state" / "ca" / "root.key.pem").exists()  # both keys in KMS: nothing to keep from the task

    published = _run_task(stack, stack.outputs["PublishTaskDefinition"], empty_db, scratch)
    assert published.returncode == 0, published.stdout + published.stderr
    bucket, key = stack.outputs["TruststoreUri"].removeprefix("s3://").split("/", 1)
    body = stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    issuing, root = x509.load_pem_x509_certificates(body)
    kms = stack.client("kms")
    for certificate, output in ((issuing, "IssuingKeyArn"), (root, "RootKeyArn")):
        der = kms.get_public_key(KeyId=stack.outputs[output])["PublicKey"]
        assert certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == der  # fmt: skip
    assert stack.client("s3").get_object(Bucket=bucket, Key="revoked.json")["Body"].read().startswith(b"{")

    checks_family = stack.outputs["PublishTaskDefinition"].replace("-publish:", "-checks:")
    checked = _run_task(stack, checks_family, empty_db, scratch)
    lines = [json.loads(line) for line in checked.stdout.splitlines() if line.startswith("{")]
    assert lines == [{"check": "ca_expiry", "exit": 0}, {"check": "certs_stale", "exit": 0}], (
        checked.stdout + checked.stderr
    )


@pytest.fixture
def empty_db(pg_template: str) -> Iterator[str]:
    import asyncio
    import secrets

    from tests.conftest import PG_URL, _pg_execute

    name = f"issuer_stack_{secrets.token_hex(4)}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
