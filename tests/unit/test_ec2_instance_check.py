"""The pure liveness decision over what DescribeInstances returned, and ARN patterns."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from issuer.attest.ec2 import InstanceIdentityDocument, identity_from_document
from issuer.attest.ec2_instance import InstanceInfo
from issuer.errors import Forbidden, Unauthorized
from issuer.policy import arn_matches
from issuer.policy.ec2 import Ec2Options

DOC = InstanceIdentityDocument(
    account_id="123456789012",
    instance_id="i-0123456789abcdef0",
    region="eu-west-1",
    availability_zone="eu-west-1a",
    image_id="ami-0abcdef1234567890",
    instance_type="t3.micro",
    architecture="x86_64",
    private_ip="10.0.1.5",
    pending_time=datetime(2026, 2, 16, tzinfo=UTC),
)
PROFILE = "arn:aws:iam::123456789012:instance-profile/web/web-fleet"
ROLE = "arn:aws:iam::123456789012:role/web-fleet"
LIVE = InstanceInfo(
    instance_id=DOC.instance_id,
    state="running",
    image_id=DOC.image_id,
    vpc_id="vpc-0abc",
    subnet_id="subnet-0abc",
    instance_profile_arn=PROFILE,
    iam_role_arns=(ROLE,),
)


def check_instance(info: InstanceInfo | None, *, doc: InstanceIdentityDocument, **bindings: list[str]) -> None:
    """The policy check for a role with these DescribeInstances bindings."""
    options = Ec2Options(check_instance=True, **{k: tuple(v) for k, v in bindings.items()})  # type: ignore[arg-type]
    options.check_described(info, identity=identity_from_document(doc), role="r")


@pytest.mark.parametrize(
    ("pattern", "arn", "expected"),
    [
        (ROLE, ROLE, True),
        (ROLE, ROLE + "-2", False),
        ("arn:aws:iam::123456789012:role/web-*", ROLE, True),
        ("arn:aws:iam::123456789012:role/web-*", "arn:aws:iam::123456789012:role/db", False),
        ("arn:aws:iam::123456789012:role/*", "arn:aws:iam::210987654321:role/web", False),
        ("*", ROLE, True),
        # A star matches any run of characters, anywhere (IAM names cannot contain one).
        ("arn:aws:iam::*:role/web-fleet", ROLE, True),
        ("arn:aws:iam::*:role/web-fleet", "arn:aws:iam::123456789012:role/web-fleet-2", False),
        ("arn:aws:iam::123456789012:role/*-fleet", ROLE, True),
        ("arn:aws:iam::123456789012:role/web*", "arn:aws:iam::123456789012:role/web/deep/path", True),
        ("", ROLE, False),
    ],
)
def test_arn_matches(pattern: str, arn: str, expected: bool) -> None:
    assert arn_matches(pattern, arn) is expected


def test_running_instance_with_no_bindings_passes() -> None:
    check_instance(LIVE, doc=DOC)


def test_running_instance_matching_every_binding_passes() -> None:
    check_instance(
        LIVE,
        doc=DOC,
        vpc_ids=["vpc-0def", "vpc-0abc"],
        subnet_ids=["subnet-0abc"],
        instance_profile_arns=["arn:aws:iam::123456789012:instance-profile/web/*"],
        iam_role_arns=[ROLE],
    )


@pytest.mark.parametrize(
    ("info", "code"),
    [
        (None, "ec2_instance_not_found"),
        (replace(LIVE, state="terminated"), "ec2_instance_not_found"),
        (replace(LIVE, state="stopped"), "ec2_instance_not_running"),
        (replace(LIVE, state="pending"), "ec2_instance_not_running"),
        (replace(LIVE, image_id="ami-0fffffffffffffff0"), "ec2_instance_mismatch"),
        (replace(LIVE, instance_id="i-0fffffffffffffff0"), "ec2_instance_mismatch"),
    ],
)
def test_instance_not_live_or_not_the_document_is_unauthorized(info: InstanceInfo | None, code: str) -> None:
    with pytest.raises(Unauthorized) as err:
        check_instance(info, doc=DOC)
    assert (err.value.status_hint, err.value.code) == (401, code)


@pytest.mark.parametrize(
    ("info", "bindings", "named"),
    [
        (LIVE, {"vpc_ids": ["vpc-0def"]}, "vpc-0abc"),
        (replace(LIVE, vpc_id=None), {"vpc_ids": ["vpc-0def"]}, "vpc_id"),
        (LIVE, {"subnet_ids": ["subnet-0def"]}, "subnet-0abc"),
        (LIVE, {"instance_profile_arns": ["arn:aws:iam::123456789012:instance-profile/db"]}, PROFILE),
        (replace(LIVE, instance_profile_arn=None), {"instance_profile_arns": ["*"]}, "instance profile"),
        (LIVE, {"iam_role_arns": ["arn:aws:iam::123456789012:role/db-*"]}, ROLE),
        # Roles not resolved (resolve_roles=False): a role binding cannot be satisfied.
        (replace(LIVE, iam_role_arns=()), {"iam_role_arns": ["*"]}, "IAM roles"),
    ],
)
def test_binding_mismatch_is_forbidden_and_only_the_reason_says_which(
    info: InstanceInfo, bindings: dict[str, list[str]], named: str
) -> None:
    with pytest.raises(Forbidden) as err:
        check_instance(info, doc=DOC, **bindings)
    assert (err.value.status_hint, err.value.code) == (403, "binding_mismatch")
    assert named in err.value.reason
    for secret in ("vpc", "subnet", "profile", "iam", "arn:", named.lower()):
        assert secret not in err.value.detail.lower()
