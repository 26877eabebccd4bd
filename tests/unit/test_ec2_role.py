"""The aws-ec2-role method's pure parts: the instance identity role's ARN, its role rules at start-up,
and one instance named alike by aws-ec2 and aws-ec2-role."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ca.csr import parse_csr
from ca.keys import KEY_TYPES
from issuer.attest.ec2 import InstanceIdentityDocument, identity_from_document
from issuer.attest.ec2_instance import InstanceInfo
from issuer.attest.ec2_role import instance_from_caller
from issuer.attest.sts_response import CallerIdentity
from issuer.errors import ConfigError, Unauthorized
from issuer.policy import decide
from issuer.policy.ec2_role import AWS_EC2_ROLE
from issuer.policy.roles import parse_roles
from issuer.service.issuance.ec2_role import identity_of
from tests.support.x509_check import make_csr

ACCOUNT = "123456789012"
INSTANCE = "i-0123456789abcdef0"
ROLE_ID = "AROAEXAMPLEROLEID0001"


def caller(arn: str, *, account: str = ACCOUNT, user_id: str | None = None) -> CallerIdentity:
    session = arn.rsplit("/", 1)[-1]
    return CallerIdentity(arn=arn, account_id=account, user_id=user_id or f"{ROLE_ID}:{session}")


@pytest.mark.parametrize(
    ("partition", "instance"),
    [("aws", INSTANCE), ("aws-cn", "i-0123abcd"), ("aws-us-gov", INSTANCE)],
)
def test_the_instance_identity_role_names_the_instance(partition: str, instance: str) -> None:
    arn = f"arn:{partition}:sts::{ACCOUNT}:assumed-role/aws:ec2-instance/{instance}"
    found = instance_from_caller(caller(arn))
    assert (found.partition, found.account_id, found.instance_id, found.arn) == (partition, ACCOUNT, instance, arn)


@pytest.mark.parametrize(
    "arn",
    [
        f"arn:aws:sts::{ACCOUNT}:assumed-role/aws-ec2-instance/{INSTANCE}",  # a name IAM allows
        f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-instance-x/{INSTANCE}",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/path/aws:ec2-instance/{INSTANCE}",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/AWS:EC2-INSTANCE/{INSTANCE}",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-instance/web-1",  # session not an instance ID
        f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-instance/i-0123456789ABCDEF0",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-instance/i-0123456789abcdef",  # 16 hex digits
        f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-instance/i-0123456789abcdef0/x",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-instance/{INSTANCE}\n",
        f"arn:aws-iso:sts::{ACCOUNT}:assumed-role/aws:ec2-instance/{INSTANCE}",
        f"arn:aws:iam::{ACCOUNT}:role/aws:ec2-instance",
        f"arn:aws:iam::{ACCOUNT}:user/{INSTANCE}",
        f"arn:aws:sts::{ACCOUNT}:federated-user/{INSTANCE}",
    ],
)
def test_any_other_caller_is_refused(arn: str) -> None:
    with pytest.raises(Unauthorized) as err:
        instance_from_caller(caller(arn))
    assert err.value.code == "ec2_role_arn_unrecognised"


def test_the_account_and_user_id_must_agree_with_the_arn() -> None:
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-instance/{INSTANCE}"
    for bad in (caller(arn, account="210987654321"), caller(arn, user_id=f"{ROLE_ID}:i-0fffffffffffffff0")):
        with pytest.raises(Unauthorized) as err:
            instance_from_caller(bad)
        assert err.value.code == "ec2_role_arn_unrecognised"


def roles(**fields: Any) -> Any:
    table = {"name": "fleet", "methods": ["aws-ec2-role"], **fields}
    return parse_roles([table], source="issuer.toml", trust_domain="example.org", base=Path("."))


def test_a_role_that_cannot_name_the_region_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"\{region\}"):
        roles()  # the default URI SAN uses {region}
    with pytest.raises(ConfigError, match=r"\{region\}"):
        roles(regions=["eu-west-1", "us-east-1"])
    with pytest.raises(ConfigError, match=r"\{region\}"):
        roles(uri_san="spiffe://{trust_domain}/ec2/{instance_id}", dns_sans=["{instance_id}.{region}.internal"])
    # One region names it; a template without {region} needs none; check_instance finds it.
    assert roles(regions=["eu-west-1"])
    assert roles(uri_san="spiffe://{trust_domain}/ec2/{account_id}/{instance_id}")
    assert roles(check_instance=True, regions=["eu-west-1", "us-east-1"])


@pytest.mark.parametrize("field", ["ami_ids", "instance_types", "vpc_ids", "subnet_ids", "instance_profile_arns"])
def test_bindings_only_ec2_knows_need_check_instance(field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field}.*check_instance"):
        roles(regions=["eu-west-1"], **{field: ["x"]})
    assert roles(regions=["eu-west-1"], check_instance=True, **{field: ["x"]})


def test_check_instance_needs_regions_and_document_fields_do_not_apply() -> None:
    with pytest.raises(ConfigError, match="regions"):
        roles(check_instance=True)
    for field, value in (("max_instance_age", "10m"), ("allow_unbounded_documents", True)):
        with pytest.raises(ConfigError, match="only applies to roles with method 'aws-ec2'"):
            roles(regions=["eu-west-1"], **{field: value})
    # Listed with aws-ec2, the document fields are aws-ec2's alone: no unbounded-document rule here.
    (both,) = roles(methods=["aws-ec2", "aws-ec2-role"], regions=["eu-west-1"], max_instance_age="10m")
    assert AWS_EC2_ROLE.of(both).max_instance_age is None


def test_both_ec2_methods_name_one_instance_alike() -> None:
    (role,) = roles(methods=["aws-ec2", "aws-ec2-role"], check_instance=True, regions=["eu-west-1"])
    document = InstanceIdentityDocument(
        account_id=ACCOUNT,
        instance_id=INSTANCE,
        region="eu-west-1",
        availability_zone="eu-west-1a",
        image_id="ami-0123456789abcdef0",
        instance_type="t3.micro",
        architecture="x86_64",
        private_ip=None,
        pending_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-instance/{INSTANCE}"
    info = InstanceInfo(INSTANCE, "running", "ami-0123456789abcdef0", "vpc-1", "subnet-1", None, (), "t3.micro")
    by_document = identity_from_document(document)
    by_role = identity_of(instance_from_caller(caller(arn)), region="eu-west-1", info=info)
    assert (by_role.principal, by_role.account_id, by_role.region) == (INSTANCE, ACCOUNT, "eu-west-1")
    for key in ("instance_id", "image_id", "instance_type"):
        assert by_role.attributes[key] == by_document.attributes[key]
    csr = parse_csr(make_csr(ec.generate_private_key(ec.SECP256R1())), allowed_key_types=KEY_TYPES)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    leaves = [decide(i, role, csr, None, now, trust_domain="example.org") for i in (by_document, by_role)]
    assert leaves[0].uri_sans == leaves[1].uri_sans == (f"spiffe://example.org/aws/{ACCOUNT}/eu-west-1/ec2/{INSTANCE}",)
    assert leaves[0].common_name == leaves[1].common_name == INSTANCE
