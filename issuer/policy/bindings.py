"""Whether a verified identity satisfies a role's bindings — the document's facts, and what AWS says.

Pure: values and ``now`` in, nothing out or :class:`Forbidden` / :class:`Unauthorized`
raised. The public ``detail`` never says which binding failed; the private ``reason`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from issuer.attest.ec2_instance import InstanceInfo
from issuer.attest.identity import VerifiedIdentity
from issuer.errors import Forbidden, Unauthorized
from issuer.policy.arn import arn_matches
from issuer.policy.roles import Role

__all__ = ["check_bindings", "check_instance"]

_DETAIL = "The identity does not match the role's bindings."


def check_bindings(identity: VerifiedIdentity, role: Role, *, now: datetime, renewing: bool = False) -> None:
    """Raise ``Forbidden`` (``binding_mismatch``, ``instance_too_old``) unless every binding of ``role`` holds.

    ``renewing``: the identity was attested earlier and proves itself with its
    certificate now, so the document-freshness limit (``max_instance_age``) no longer applies.
    """
    attrs = identity.attributes
    _bind(role, "account_ids", role.account_ids, identity.account_id)
    if identity.method == "aws-ec2":
        _bind(role, "regions", role.regions, identity.region)
        _bind(role, "ami_ids", role.ami_ids, attrs.get("image_id"))
        _bind(role, "instance_ids", role.instance_ids, attrs.get("instance_id"))
        _bind(role, "instance_types", role.instance_types, attrs.get("instance_type"))
        if role.max_instance_age is not None and not renewing:
            age = now - datetime.fromisoformat(attrs["pending_time"])
            if age > role.max_instance_age:
                raise Forbidden(
                    "The instance is older than the role allows.",
                    code="instance_too_old",
                    reason=f"role {role.name}: instance launched {age} ago, max_instance_age {role.max_instance_age}",
                )
    if identity.method == "aws-iam" and role.principal_arns:
        canonical = attrs.get("canonical_arn", identity.principal)
        if not any(arn_matches(p, canonical) for p in role.principal_arns):
            raise _mismatch(role, f"principal {canonical} not in principal_arns")


def check_instance(info: InstanceInfo | None, *, identity: VerifiedIdentity, role: Role) -> None:
    """Check what ``DescribeInstances`` said about the instance ``identity`` names.

    Raises ``Unauthorized`` ``ec2_instance_not_found`` (unknown or terminated),
    ``ec2_instance_not_running``, ``ec2_instance_mismatch`` (another image), and
    ``Forbidden`` ``binding_mismatch`` for the VPC, subnet, instance profile and role bindings.
    """
    instance_id, image_id = identity.attributes.get("instance_id"), identity.attributes.get("image_id")
    where = f"{instance_id} in {identity.account_id}/{identity.region}"
    if info is None or info.state == "terminated":
        raise Unauthorized(
            "The instance does not exist.",
            code="ec2_instance_not_found",
            reason=f"DescribeInstances: {where} " + ("is terminated" if info else "not found"),
        )
    if info.state != "running":
        raise Unauthorized(
            "The instance is not running.", code="ec2_instance_not_running", reason=f"{where} is {info.state}"
        )
    if info.instance_id != instance_id or info.image_id != image_id:
        raise Unauthorized(
            "The instance does not match its identity document.",
            code="ec2_instance_mismatch",
            reason=f"AWS reports {info.instance_id} with image {info.image_id}; "
            f"the identity says {instance_id} with image {image_id}",
        )
    _bind(role, "vpc_ids", role.vpc_ids, info.vpc_id)
    _bind(role, "subnet_ids", role.subnet_ids, info.subnet_id)
    if role.instance_profile_arns and not _any_match(role.instance_profile_arns, [info.instance_profile_arn]):
        raise _mismatch(role, f"instance profile {info.instance_profile_arn} matches none of instance_profile_arns")
    if role.iam_role_arns and not _any_match(role.iam_role_arns, info.iam_role_arns):
        raise _mismatch(role, f"IAM roles {list(info.iam_role_arns)} match none of iam_role_arns")


def _any_match(patterns: Sequence[str], values: Sequence[str | None]) -> bool:
    return any(arn_matches(p, v) for p in patterns for v in values if v is not None)


def _bind(role: Role, field: str, allowed: Sequence[str], value: str | None) -> None:
    if allowed and value not in allowed:
        raise _mismatch(role, f"{field} does not include {value!r}")


def _mismatch(role: Role, reason: str) -> Forbidden:
    return Forbidden(_DETAIL, code="binding_mismatch", reason=f"role {role.name}: {reason}")
