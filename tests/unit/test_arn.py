"""Caller ARNs → the principal role policy binds to."""

from __future__ import annotations

import pytest

from issuer.attest.arn import CanonicalPrincipal, canonicalise, identity_from_caller
from issuer.attest.sts_response import CallerIdentity
from issuer.errors import Unauthorized


def test_assumed_role_becomes_the_role_with_its_session() -> None:
    p = canonicalise("arn:aws:sts::123456789012:assumed-role/ecs-task-web/9f1c2e")
    assert p == CanonicalPrincipal(
        arn="arn:aws:sts::123456789012:assumed-role/ecs-task-web/9f1c2e",
        canonical_arn="arn:aws:iam::123456789012:role/ecs-task-web",
        partition="aws",
        account_id="123456789012",
        principal_type="role",
        name="ecs-task-web",
        session_name="9f1c2e",
    )


def test_assumed_role_path_is_dropped_as_iam_does() -> None:
    # IAM omits a role's path from assumed-role ARNs; tolerate one (as Vault does) but
    # never let it into the canonical ARN.
    p = canonicalise("arn:aws:sts::123456789012:assumed-role/service/web/ecs-task-web/i-0abc@example.com")
    assert p.canonical_arn == "arn:aws:iam::123456789012:role/ecs-task-web"
    assert (p.name, p.session_name) == ("ecs-task-web", "i-0abc@example.com")


def test_other_partitions_keep_their_partition() -> None:
    p = canonicalise("arn:aws-cn:sts::123456789012:assumed-role/R/S")
    assert p.canonical_arn == "arn:aws-cn:iam::123456789012:role/R"
    assert canonicalise("arn:aws-us-gov:iam::123456789012:user/u").partition == "aws-us-gov"


def test_user_with_path_passes_through() -> None:
    p = canonicalise("arn:aws:iam::123456789012:user/ops/onprem/builder-1")
    assert p.canonical_arn == "arn:aws:iam::123456789012:user/ops/onprem/builder-1"
    assert (p.principal_type, p.name, p.session_name) == ("user", "builder-1", None)


def test_role_passes_through() -> None:
    p = canonicalise("arn:aws:iam::123456789012:role/svc/R")
    assert (p.canonical_arn, p.principal_type, p.name) == ("arn:aws:iam::123456789012:role/svc/R", "role", "R")


def test_root() -> None:
    p = canonicalise("arn:aws:iam::123456789012:root")
    assert (p.canonical_arn, p.principal_type, p.name) == ("arn:aws:iam::123456789012:root", "root", "root")


def test_federated_user() -> None:
    p = canonicalise("arn:aws:sts::123456789012:federated-user/bob")
    assert (p.principal_type, p.name, p.session_name) == ("federated-user", "bob", None)


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "arn:aws:sts::123456789012:assumed-role/R",  # no session
        "arn:aws:sts::123456789012:assumed-role/R/",
        "arn:aws:sts::12345678901:assumed-role/R/S",  # 11-digit account
        "arn:aws:sts:us-east-1:123456789012:assumed-role/R/S",  # regional
        "arn:aws:iam::123456789012:group/admins",
        "arn:aws:iam::123456789012:user/",
        "arn:aws:iam::123456789012:role/a//b",
        "arn:aws:sts::123456789012:user/moto",  # what moto answers for an unknown key
        "arn:aws:s3:::bucket",
        "arn:evil:iam::123456789012:root",
        "arn:aws:iam::123456789012:user/a b",
        "arn:aws:iam::123456789012:user/bob\n",
        " arn:aws:iam::123456789012:root",
        "arn:aws:sts::123456789012:assumed-role/R/S/",
    ],
)
def test_malformed_arns_are_refused(arn: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        canonicalise(arn)
    assert caught.value.code == "sts_arn_unrecognised"


def test_identity_of_a_role_session() -> None:
    identity = identity_from_caller(
        CallerIdentity(
            arn="arn:aws:sts::123456789012:assumed-role/ecs-task-web/task-42",
            account_id="123456789012",
            user_id="AROAEXAMPLEID:task-42",
        )
    )
    assert identity.method == "aws-iam"
    assert identity.principal == "arn:aws:iam::123456789012:role/ecs-task-web"
    assert identity.account_id == "123456789012"
    assert identity.region is None
    assert dict(identity.attributes) == {
        "arn": "arn:aws:sts::123456789012:assumed-role/ecs-task-web/task-42",
        "canonical_arn": "arn:aws:iam::123456789012:role/ecs-task-web",
        "user_id": "AROAEXAMPLEID:task-42",
        "unique_id": "AROAEXAMPLEID",
        "principal_type": "role",
        "name": "ecs-task-web",
        "role_name": "ecs-task-web",
        "session_name": "task-42",
    }
    assert identity.template_vars()["session_name"] == "task-42"


def test_identity_of_a_user() -> None:
    identity = identity_from_caller(
        CallerIdentity(arn="arn:aws:iam::123456789012:user/ops/alice", account_id="123456789012", user_id="AIDAEXAMPLE")
    )
    assert identity.principal == "arn:aws:iam::123456789012:user/ops/alice"
    assert identity.attributes["user_name"] == "alice"
    assert "session_name" not in identity.attributes
    assert "role_name" not in identity.attributes


def test_account_must_agree_with_the_arn() -> None:
    with pytest.raises(Unauthorized) as caught:
        identity_from_caller(
            CallerIdentity(arn="arn:aws:iam::123456789012:user/a", account_id="999999999999", user_id="AIDA1")
        )
    assert caught.value.code == "sts_arn_unrecognised"
