"""deploy/aws/issuer.yaml, the signed-CRL parts, by reading the template (moto runs them in test_aws_stack.py).

- the Lambda authorizer enforces the signed CRLs (``ISSUER_CRLS_URL`` + ``ISSUER_TRUSTSTORE_URL``,
  the same objects publish writes and API Gateway uses), with settings the authorizer itself
  accepts, and may read exactly those two objects;
- the publish task publishes ``crls.pem`` and may write exactly it and the truststore; the unsigned
  JSON list is gone from the stack;
- the root's CRL is signed by a daily task running as the CA admin role — the one role the root
  key's policy lets sign (test_aws_stack.py) — which only a schedule role of its own may pass; its
  validity leaves the service nothing to re-sign, and an alarm fires long before it expires;
- the function's runtime and architecture are those of the zips ``make authorizer-zip`` builds.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from clients.authorizer.settings import load_settings
from issuer.durations import parse_duration
from issuer.service.revocation.root_crls import ROOT_CRL_VALIDITY
from tests.support.authorizer_zip import build_zip
from tests.support.aws_stack import resolve
from tests.support.cfn_template import load_template, role_actions, statements

ROOT = Path(__file__).resolve().parents[2]
BUCKET_ARN = "${TruststoreBucket.Arn}"
CRLS, TRUSTSTORE = {"Fn::Sub": f"{BUCKET_ARN}/crls.pem"}, {"Fn::Sub": f"{BUCKET_ARN}/truststore.pem"}
ADMIN = {"Fn::GetAtt": ["CaAdminRole", "Arn"]}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _resources(template: dict[str, Any]) -> dict[str, Any]:
    resources: dict[str, Any] = template["Resources"]
    return resources


def _sid(document: dict[str, Any], sid: str) -> dict[str, Any]:
    (found,) = [s for s in statements(document) if s.get("Sid") == sid]
    return found


def _inline(template: dict[str, Any], role: str) -> dict[str, Any]:
    (policy,) = _resources(template)[role]["Properties"]["Policies"]
    document: dict[str, Any] = policy["PolicyDocument"]
    return document


def _days(rate: str) -> float:
    """``rate(N unit)`` of an EventBridge schedule, in days."""
    match = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", rate)
    assert match, rate
    return int(match[1]) * {"minute": 1 / 1440, "hour": 1 / 24, "day": 1.0}[match[2]]


def test_authorizer_enforces_the_published_signed_crls(template: dict[str, Any]) -> None:
    resources = _resources(template)
    function = resources["AuthorizerFunction"]["Properties"]
    variables = function["Environment"]["Variables"]
    assert set(variables) == {
        "ISSUER_CRLS_URL", "ISSUER_TRUSTSTORE_URL", "ISSUER_CRLS_TTL", "ISSUER_CRLS_MAX_STALE",
        "ISSUER_CRLS_TIMEOUT", "ISSUER_AUTHZ_POLICY",
    }  # fmt: skip  # no ISSUER_REVOKED_*, no ISSUER_FAIL_CLOSED=false
    assert variables["ISSUER_CRLS_URL"] == {"Fn::Sub": "s3://${TruststoreBucket}/crls.pem"}
    # The CRLs are verified with the very truststore API Gateway's mutual TLS uses.
    truststore_uri = resources["ApiDomain"]["Properties"]["MutualTlsAuthentication"]["TruststoreUri"]
    assert variables["ISSUER_TRUSTSTORE_URL"] == truststore_uri

    names = {"TruststoreBucket": "issuer-truststore", "AuthorizerPolicy": template["Parameters"]["AuthorizerPolicy"]["Default"]}  # fmt: skip
    lambda_sets = {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "ASIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x"}
    settings = load_settings({name: resolve(value, names) for name, value in variables.items()} | lambda_sets)
    assert settings.revoked is None and settings.crls is not None and settings.truststore is not None
    assert (settings.crls.source.scheme, settings.crls.source.bucket, settings.crls.source.key) == (
        "s3", "issuer-truststore", "crls.pem")  # fmt: skip
    assert (settings.truststore.source.bucket, settings.truststore.source.key) == (
        "issuer-truststore",
        "truststore.pem",
    )
    # A revocation reaches API Gateway within the publish interval plus the TTL; a source that cannot
    # be read is served for a few publish intervals, then every certificate is denied.
    publish_seconds = _days(template["Parameters"]["PublishSchedule"]["Default"]) * 86400
    assert 0 < settings.crls.ttl <= 120 and publish_seconds + settings.crls.ttl <= 600
    assert publish_seconds < settings.crls.max_stale <= 3600
    assert function["Timeout"] > 2 * settings.crls.timeout  # the bundle and the truststore in one invocation


def test_authorizer_role_reads_exactly_the_crls_and_the_truststore(template: dict[str, Any]) -> None:
    assert role_actions(template, "AuthorizerRole") == {"s3:GetObject", "logs:CreateLogStream", "logs:PutLogEvents"}
    document = _inline(template, "AuthorizerRole")
    read = _sid(document, "ReadCrlsAndTruststore")
    assert read["Action"] == "s3:GetObject" and sorted(map(json.dumps, read["Resource"])) == sorted(
        map(json.dumps, [CRLS, TRUSTSTORE]))  # fmt: skip
    logs = _sid(document, "WriteLogs")
    assert logs["Resource"] == {"Fn::Sub": "${AuthorizerLogGroup.Arn}:*"}


def test_publish_task_publishes_the_crls_and_may_write_them(template: dict[str, Any]) -> None:
    resources = _resources(template)
    (container,) = resources["PublishTaskDefinition"]["Properties"]["ContainerDefinitions"]
    condition, with_domain, without_domain = container["Command"]["Fn::If"]
    assert condition == "WithApiDomain"
    for command in (with_domain, without_domain):
        assert command[:4] == [
            "issuer",
            "truststore",
            "publish",
            {"Fn::Sub": "s3://${TruststoreBucket}/truststore.pem"},
        ]
        assert command[command.index("--crls-key") + 1] == "crls.pem" and "--revoked-key" not in command
    policy = resources["TaskPolicy"]["Properties"]["PolicyDocument"]
    objects = _sid(policy, "TruststoreObjects")
    assert sorted(map(json.dumps, objects["Resource"])) == sorted(map(json.dumps, [CRLS, TRUSTSTORE]))
    assert set(objects["Action"]) == {"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"}
    listing = _sid(policy, "SeeMissingObjects")
    assert listing["Condition"] == {"StringEquals": {"s3:prefix": ["truststore.pem", "crls.pem"]}}
    # The service's role never touches the root key; the unsigned JSON list is nowhere in the stack.
    assert "RootKey" not in json.dumps(policy)
    assert "revoked.json" not in json.dumps(template) and "ISSUER_REVOKED" not in json.dumps(template)


def test_root_crl_task_signs_as_the_ca_admin_role_only(template: dict[str, Any]) -> None:
    resources = _resources(template)
    task = resources["RootCrlTaskDefinition"]["Properties"]
    assert task["TaskRoleArn"] == ADMIN
    with_admin = {n for n, r in resources.items() if r["Properties"].get("TaskRoleArn") == ADMIN}
    assert with_admin == {"CaInitTaskDefinition", "RootCrlTaskDefinition"}
    (container,) = task["ContainerDefinitions"]
    assert container["Command"] == ["/bin/sh", "-c", {"Fn::FindInMap": ["Container", "Launch", "RootCrl"]}]
    script = template["Mappings"]["Container"]["Launch"]["RootCrl"]
    assert script.startswith("issuer ca root-crl --next-update 30d;") and script.endswith('exit "$status"')
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "LogGroup"}
    # The admin role may sign with the root key only, and only ECDSA with SHA-384 (the root's P-384).
    sign = _sid(resources["CaAdminPolicy"]["Properties"]["PolicyDocument"], "SignWithRootKey")
    assert sign["Action"] == "kms:Sign" and sign["Resource"] == {"Fn::GetAtt": ["RootKey", "Arn"]}
    assert sign["Condition"] == {"StringEquals": {"kms:SigningAlgorithm": "ECDSA_SHA_384"}}


def test_only_the_root_crl_schedule_passes_the_admin_role(template: dict[str, Any]) -> None:
    resources = _resources(template)
    (target,) = resources["RootCrlRule"]["Properties"]["Targets"]
    assert target["RoleArn"] == {"Fn::GetAtt": ["RootCrlScheduleRole", "Arn"]}
    assert target["EcsParameters"]["TaskDefinitionArn"] == {"Ref": "RootCrlTaskDefinition"}
    assert role_actions(template, "RootCrlScheduleRole") == {"ecs:RunTask", "iam:PassRole"}
    own = _inline(template, "RootCrlScheduleRole")
    run = _sid(own, "RunRootCrlTask")
    assert run["Resource"]["Fn::Sub"].endswith(":task-definition/${AWS::StackName}-root-crl:*")
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}}
    assert _sid(own, "PassItsRoles")["Resource"] == [{"Fn::GetAtt": ["ExecutionRole", "Arn"]}, ADMIN]
    # Every other role: no PassRole of the admin role, no RunTask of the root-crl task.
    for name, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role" or name == "RootCrlScheduleRole":
            continue
        for policy in resource["Properties"].get("Policies", []):
            text = json.dumps(policy["PolicyDocument"])
            assert "CaAdminRole" not in text and "-root-crl" not in text, name


def test_root_crl_outlives_its_schedule_and_its_alarm(template: dict[str, Any]) -> None:
    resources = _resources(template)
    every = _days(resources["RootCrlRule"]["Properties"]["ScheduleExpression"])
    script = template["Mappings"]["Container"]["Launch"]["RootCrl"]
    validity = parse_duration(re.search(r"--next-update (\S+);", script)[1])  # type: ignore[index]
    # The service (which may not use the root key) re-signs a CRL with less than half its own
    # validity left: a CRL from this task must never get there between two runs.
    assert validity - timedelta(days=every) > ROOT_CRL_VALIDITY / 2
    (transform,) = resources["RootCrlSignedFilter"]["Properties"]["MetricTransformations"]
    pattern = resources["RootCrlSignedFilter"]["Properties"]["FilterPattern"]
    assert pattern == '{ $.task = "root_crl" && $.exit = 0 }' and 'printf \'{"task": "root_crl", "exit": %d}' in script
    alarm = resources["RootCrlNotSignedAlarm"]["Properties"]
    assert (alarm["MetricName"], alarm["Namespace"]) == (transform["MetricName"], transform["MetricNamespace"])
    assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["Threshold"] == 1
    assert alarm["TreatMissingData"] == "breaching" and alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    window = timedelta(seconds=alarm["Period"] * alarm["EvaluationPeriods"])
    # Several runs missed before it fires, weeks of validity left when it does; CloudWatch looks back 7 days at most.
    assert timedelta(days=2 * every) <= window <= timedelta(days=7) and validity - window >= timedelta(days=14)


def test_authorizer_runtime_and_architecture_are_the_zips(template: dict[str, Any]) -> None:
    build = build_zip()
    function = _resources(template)["AuthorizerFunction"]["Properties"]
    assert function["Runtime"] == f"python{build.LAMBDA_PYTHON}"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^AUTHORIZER_PYTHON \?= (\S+)$", makefile, re.M)[1] == build.LAMBDA_PYTHON  # type: ignore[index]
    assert function["Handler"] == "lambda_function.lambda_handler"
    assert function["Architectures"] == [{"Ref": "AuthorizerArchitecture"}]
    parameters = template["Parameters"]
    assert sorted(parameters["AuthorizerArchitecture"]["AllowedValues"]) == sorted(build.PLATFORMS)
    key = function["Code"]["S3Key"]["Fn::If"]
    assert key[0] == "DefaultAuthorizerCodeKey" and template["Conditions"][key[0]] == {
        "Fn::Equals": [{"Ref": "AuthorizerCodeKey"}, ""]}  # fmt: skip
    for arch in build.PLATFORMS:  # the default key is the zip `make authorizer-zip` names for the architecture
        assert resolve(key[1], {"AuthorizerArchitecture": arch}) == build.zip_name(arch)
