"""The pure decision: bindings, templates, lifetimes. Time is a parameter, never patched."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ca.csr import CheckedCSR, parse_csr
from ca.keys import KEY_TYPES
from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ClientError, Forbidden
from issuer.policy import Role, arn_matches, decide, select_role
from issuer.policy.ec2 import Ec2Options
from issuer.policy.iam import IamOptions
from tests.support.x509_check import make_csr, rsa_key

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@functools.cache
def csr(key_type: str) -> CheckedCSR:
    """A checked CSR for a fresh key of ``key_type``."""
    key = ec.generate_private_key(ec.SECP256R1()) if key_type == "ec-p256" else rsa_key(2048)
    return parse_csr(make_csr(key), allowed_key_types=KEY_TYPES)


def ec2_role(name: str = "r", **options: object) -> Role:
    """A role for aws-ec2 with these options (Ec2Options fields)."""
    return Role(name=name, methods=("aws-ec2",), options={"aws-ec2": Ec2Options(**options)})  # type: ignore[arg-type]


def ec2_identity(**attrs: str) -> VerifiedIdentity:
    base = {
        "instance_id": "i-0abc",
        "image_id": "ami-1",
        "instance_type": "t3.micro",
        "pending_time": "2026-11-21T11:55:00+00:00",
    }
    base.update(attrs)
    return VerifiedIdentity(
        method="aws-ec2",
        principal=base["instance_id"],
        account_id="123456789012",
        region="eu-west-1",
        attributes=MappingProxyType(base),
    )


def iam_identity(arn: str, session: str | None = "task-1") -> VerifiedIdentity:
    attrs = {
        "canonical_arn": arn,
        "principal_type": "role",
        "name": arn.rsplit("/", 1)[1],
        "role_name": arn.rsplit("/", 1)[1],
    }
    if session:
        attrs["session_name"] = session
    return VerifiedIdentity(method="aws-iam", principal=arn, account_id="123456789012", attributes=attrs)


def test_ec2_template_and_lifetime() -> None:
    role = Role(name="web", methods=("aws-ec2",), ttl=timedelta(hours=2))
    leaf = decide(ec2_identity(), role, csr("ec-p256"), None, NOW, trust_domain="example.org")
    assert leaf.uri_sans == ("spiffe://example.org/aws/123456789012/eu-west-1/ec2/i-0abc",)
    assert leaf.common_name == "i-0abc"
    assert leaf.not_before == NOW - timedelta(seconds=60)
    assert leaf.not_after == NOW + timedelta(hours=2)


@pytest.mark.parametrize(
    "role",
    [
        ec2_role(account_ids=("999999999999",)),
        ec2_role(regions=("us-east-1",)),
        ec2_role(ami_ids=("ami-2",)),
        ec2_role(instance_ids=("i-other",)),
        ec2_role(instance_types=("m5.large",)),
    ],
)
def test_each_ec2_binding_refuses_without_saying_which(role: Role) -> None:
    with pytest.raises(Forbidden) as info:
        decide(ec2_identity(), role, csr("ec-p256"), None, NOW, trust_domain="t")
    assert info.value.code == "binding_mismatch"
    assert info.value.detail == "The identity does not match the role's bindings."
    assert role.name in info.value.reason


def test_matching_bindings_pass() -> None:
    role = ec2_role(
        account_ids=("123456789012",),
        regions=("eu-west-1",),
        ami_ids=("ami-1",),
        instance_types=("t3.micro",),
    )
    decide(ec2_identity(), role, csr("ec-p256"), None, NOW, trust_domain="t")


def test_max_instance_age() -> None:
    role = ec2_role(max_instance_age=timedelta(minutes=10))
    decide(ec2_identity(), role, csr("ec-p256"), None, NOW, trust_domain="t")
    with pytest.raises(Forbidden) as info:
        decide(ec2_identity(), role, csr("ec-p256"), None, NOW + timedelta(minutes=6), trust_domain="t")
    assert info.value.code == "instance_too_old"


def test_iam_principal_globs_and_session_template() -> None:
    role = Role(
        name="ecs",
        methods=("aws-iam",),
        options={"aws-iam": IamOptions(principal_arns=("arn:aws:iam::123456789012:role/ecs-task-*",))},
        uri_san="spiffe://{trust_domain}/aws/{account_id}/iam/{role_name}/{session_name}",
    )
    leaf = decide(
        iam_identity("arn:aws:iam::123456789012:role/ecs-task-web"), role, csr("ec-p256"), None, NOW, trust_domain="t"
    )
    assert leaf.uri_sans == ("spiffe://t/aws/123456789012/iam/ecs-task-web/task-1",)
    with pytest.raises(Forbidden):
        decide(iam_identity("arn:aws:iam::123456789012:role/admin"), role, csr("ec-p256"), None, NOW, trust_domain="t")
    with pytest.raises(Forbidden) as info:
        decide(
            iam_identity("arn:aws:iam::123456789012:role/ecs-task-web", session=None),
            role,
            csr("ec-p256"),
            None,
            NOW,
            trust_domain="t",
        )
    assert info.value.code == "template_variable_missing"


def test_template_values_cannot_add_path_segments() -> None:
    role = Role(name="t", methods=("token",))
    ident = VerifiedIdentity(method="token", principal="a/../b", attributes={"name": "a/../b"})
    leaf = decide(ident, role, csr("ec-p256"), None, NOW, trust_domain="t")
    assert leaf.uri_sans == ("spiffe://t/onprem/a%2F..%2Fb",)


def test_arn_matches() -> None:
    assert arn_matches("arn:aws:iam::1:role/a", "arn:aws:iam::1:role/a")
    assert not arn_matches("arn:aws:iam::1:role/a", "arn:aws:iam::1:role/ab")
    assert arn_matches("arn:aws:iam::1:role/a*", "arn:aws:iam::1:role/ab")
    assert not arn_matches("arn:aws:iam::1:role/a.*", "arn:aws:iam::1:role/abc")  # '.' is literal


def test_ttl_and_method_and_key_type() -> None:
    role = Role(
        name="t", methods=("token",), max_ttl=timedelta(hours=1), ttl=timedelta(minutes=30), key_types=("ec-p256",)
    )
    ident = VerifiedIdentity(method="token", principal="n", attributes={"name": "n"})
    with pytest.raises(ClientError, match="max_ttl"):
        decide(ident, role, csr("ec-p256"), None, NOW, trust_domain="t", requested_ttl=timedelta(hours=2))
    with pytest.raises(Forbidden) as info:
        decide(ident, role, csr("rsa-2048"), None, NOW, trust_domain="t")
    assert info.value.code == "key_type_not_allowed"
    with pytest.raises(Forbidden) as info:
        decide(ec2_identity(), role, csr("ec-p256"), None, NOW, trust_domain="t")
    assert info.value.code == "method_not_allowed"


def test_select_role() -> None:
    a = Role(name="a", methods=("token",))
    b = Role(name="b", methods=("token", "aws-ec2"))
    assert select_role([a, b], method="aws-ec2", requested=None) is b
    assert select_role([a, b], method="token", requested=None) is None  # two candidates: must name one
    assert select_role([a, b], method="token", requested="a") is a
    assert select_role([a, b], method="aws-ec2", requested="a") is None
