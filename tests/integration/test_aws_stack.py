"""deploy/aws/issuer.yaml: cfn-lint clean, least privilege by reading it, and created in moto's CloudFormation.

moto implements only some resource types; the stack is created from a copy without the others
(Secrets Manager secret, bucket policy, metric filters, alarms, API Gateway domain, authorizer,
security-group egress rules: :data:`NOT_IN_MOTO`), whose references become placeholders. What
moto does not create is checked by reading the template (the CRL parts in
test_aws_stack_crls.py). Then the tasks run as ECS would run them — the task definitions' own
entry point and commands, as moto stored them — against a real Postgres and moto: migrate, ca
init with the stack's two KMS keys, the root CRL signed with the KMS root key, publish of the
truststore and the signed CRLs to the stack's bucket, which the authorizer reads with the
function's own environment, and the scheduled checks, whose JSON lines the metric filters count.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.engine import make_url

from ca.kms import load_kms_signer
from ca.profile import LeafTemplate
from ca.signer import SigningRequest
from clients.authorizer import RevocationCache, authorize
from tests.integration.test_crls_bundle import load_crls
from tests.support.authorizer_pki import make_pki
from tests.support.aws_stack import NOT_IN_MOTO, REGION, MotoStack, json_lines, moto_stack, resolve, run_task
from tests.support.cfn_template import (
    TEMPLATE,
    actions_of,
    load_template,
    matches,
    policy_documents,
    role_actions,
    statements,
)
from tests.unit.test_authorizer import http_event

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


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Iterator[MotoStack]:
    with moto_stack(template) as created:
        yield created


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


@pytest.mark.slow
@pytest.mark.postgres
def test_tasks_run_against_the_stack(stack: MotoStack, template: dict[str, Any], empty_db: str, tmp_path: Path) -> None:
    scratch = tmp_path / "run"
    migrated = run_task(stack, stack.outputs["MigrateTaskDefinition"], empty_db, scratch)
    assert migrated.returncode == 0 and "the newest this release knows" in migrated.stdout, (
        migrated.stdout + migrated.stderr
    )

    # Before ca init there is no root: the root-crl task fails, and says so in the line the alarm counts.
    too_early = run_task(stack, stack.outputs["RootCrlTaskDefinition"], empty_db, scratch)
    (line,) = json_lines(too_early.stdout)
    assert too_early.returncode != 0 and line["task"] == "root_crl" and line["exit"] == too_early.returncode

    initialised = run_task(stack, stack.outputs["CaInitTaskDefinition"], empty_db, scratch)
    assert initialised.returncode == 0, initialised.stdout + initialised.stderr
    assert (
        stack.outputs["IssuingKeyArn"] in initialised.stdout and "registered as the active issuer" in initialised.stdout
    )
    assert not (scratch / "state" / "ca" / "root.key.pem").exists()  # both keys in KMS: nothing to keep from the task

    signed = run_task(stack, stack.outputs["RootCrlTaskDefinition"], empty_db, scratch)
    assert signed.returncode == 0 and json_lines(signed.stdout) == [{"task": "root_crl", "exit": 0}], (
        signed.stdout + signed.stderr
    )
    assert "Signed CRL 2 of the root" in signed.stdout  # ca init signed the first (7 days), this one 30 days

    published = run_task(stack, stack.outputs["PublishTaskDefinition"], empty_db, scratch)
    assert published.returncode == 0, published.stdout + published.stderr
    s3 = stack.client("s3")
    versions = s3.list_object_versions(Bucket=stack.bucket)["Versions"]
    assert {v["Key"] for v in versions} == {"truststore.pem", "crls.pem"}  # no unsigned JSON list any more
    truststore = s3.get_object(Bucket=stack.bucket, Key="truststore.pem")["Body"].read()
    issuing, root = x509.load_pem_x509_certificates(truststore)
    kms = stack.client("kms")
    for certificate, output in ((issuing, "IssuingKeyArn"), (root, "RootKeyArn")):
        der = kms.get_public_key(KeyId=stack.outputs[output])["PublicKey"]
        assert certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == der  # fmt: skip
    _check_crls(s3.get_object(Bucket=stack.bucket, Key="crls.pem")["Body"].read(), truststore, tmp_path)

    _authorizer_reads_the_stack(stack, template, issuing, root, empty_db, scratch)

    checks_family = stack.outputs["PublishTaskDefinition"].replace("-publish:", "-checks:")
    checked = run_task(stack, checks_family, empty_db, scratch)
    assert json_lines(checked.stdout) == [{"check": "ca_expiry", "exit": 0}, {"check": "certs_stale", "exit": 0}], (
        checked.stdout + checked.stderr
    )


def _check_crls(bundle: bytes, truststore: bytes, tmp_path: Path) -> None:
    """crls.pem holds the issuing CA's CRL and the root's (the 30-day one), each verified by openssl
    with the truststore API Gateway uses."""
    issuing, root = x509.load_pem_x509_certificates(truststore)
    issuing_crl, root_crl = load_crls(bundle)
    assert (issuing_crl.issuer, root_crl.issuer) == (issuing.subject, root.subject)
    assert issuing_crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]  # ECDSA CA keys
    assert root_crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    assert root_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert root_crl.next_update_utc and root_crl.next_update_utc - root_crl.last_update_utc == timedelta(days=30)
    (tmp_path / "truststore.pem").write_bytes(truststore)
    for name, crl in (("issuing", issuing_crl), ("root", root_crl)):
        path = tmp_path / f"{name}.crl.pem"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        checked = subprocess.run(
            ["openssl", "crl", "-in", str(path), "-CAfile", str(tmp_path / "truststore.pem"), "-noout"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr, (name, checked.stderr)


def _authorizer_reads_the_stack(
    stack: MotoStack, template: dict[str, Any], issuing: x509.Certificate, root: x509.Certificate,
    database_url: str, scratch: Path,
) -> None:  # fmt: skip
    """The authorizer with the function's environment as the template sets it (moto's Lambda cannot be
    invoked: it refuses its own SigV4 check) reads the stack's bucket: a leaf of the stack's KMS issuing
    key is allowed, a foreign one denied; without crls.pem it fails closed, until publish puts it back."""
    variables = template["Resources"]["AuthorizerFunction"]["Properties"]["Environment"]["Variables"]
    names = {
        "TruststoreBucket": stack.bucket,
        "AuthorizerPolicy": template["Parameters"]["AuthorizerPolicy"]["Default"],
    }
    env = {name: resolve(value, names) for name, value in variables.items()}
    env |= {"AWS_REGION": REGION, "AWS_ENDPOINT_URL_S3": stack.server.url, **stack.env}

    def decide(leaf: x509.Certificate) -> dict[str, Any]:  # a fresh Lambda environment each time
        return authorize(http_event(leaf), env=env, cache=RevocationCache(), now=datetime.now(UTC), log=lambda _: None)

    leaf = asyncio.run(_leaf_of_the_issuing_key(stack, issuing, root))
    assert decide(leaf)["isAuthorized"] is True
    foreign = decide(make_pki("Foreign").leaf())
    assert foreign["isAuthorized"] is False and foreign["context"]["reason"] == "issuer_unknown"

    stack.client("s3").delete_object(Bucket=stack.bucket, Key="crls.pem")
    missing = decide(leaf)
    assert missing["isAuthorized"] is False and missing["context"]["reason"] == "crl_source_unavailable", missing
    republished = run_task(stack, stack.outputs["PublishTaskDefinition"], database_url, scratch)
    assert republished.returncode == 0, republished.stdout + republished.stderr
    assert decide(leaf)["isAuthorized"] is True


async def _leaf_of_the_issuing_key(
    stack: MotoStack, issuing: x509.Certificate, root: x509.Certificate
) -> x509.Certificate:
    signer = await load_kms_signer(
        stack.client("kms"), stack.outputs["IssuingKeyArn"], issuer_certificate=issuing, roots=[root]
    )
    now = datetime.now(UTC)
    template = LeafTemplate(
        common_name="web-1", uri_sans=("spiffe://example.org/stack/web-1",), organizational_unit="onprem",
        not_before=now - timedelta(minutes=1), not_after=now + timedelta(hours=1),
    )  # fmt: skip
    request = SigningRequest(template=template, public_key=ec.generate_private_key(ec.SECP256R1()).public_key())
    return (await signer.issue(request)).certificate


@pytest.fixture
def empty_db(pg_template: str) -> Iterator[str]:
    import secrets

    from tests.conftest import PG_URL, _pg_execute

    name = f"issuer_stack_{secrets.token_hex(4)}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
