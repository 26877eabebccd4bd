"""The EC2 method's part of a role: bindings on the identity document, its age, and the liveness check.

Bindings on the document are checked by :meth:`Ec2Options.check` (from the decision);
what ``ec2:DescribeInstances`` says about the instance by :meth:`Ec2Options.check_described`.
An identity document never expires, so a role must bound it (:func:`_parse`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from issuer.attest.ec2_instance import InstanceInfo
from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ConfigError, Forbidden, Unauthorized
from issuer.policy.arn import arn_matches
from issuer.policy.bindings import mismatch, require_one_of
from issuer.policy.rules import FieldKind, FieldValues, RoleRules

__all__ = ["AWS_EC2", "Ec2Options"]


@dataclass(frozen=True, slots=True)
class Ec2Options:
    """Empty tuples mean "any"."""

    account_ids: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    ami_ids: tuple[str, ...] = ()
    instance_ids: tuple[str, ...] = ()
    instance_types: tuple[str, ...] = ()
    # Checked through DescribeInstances (check_instance); ARN patterns for the last two.
    vpc_ids: tuple[str, ...] = ()
    subnet_ids: tuple[str, ...] = ()
    instance_profile_arns: tuple[str, ...] = ()
    iam_role_arns: tuple[str, ...] = ()
    max_instance_age: timedelta | None = None
    allow_migration: bool = False
    check_instance: bool = False
    assume_role: str | None = None
    # Accept documents with neither max_instance_age nor check_instance (see _parse).
    allow_unbounded_documents: bool = False

    def check(self, identity: VerifiedIdentity, *, role: str, now: datetime, renewing: bool) -> None:
        """The document's bindings; ``instance_too_old`` unless ``renewing`` (the document is not shown again)."""
        attrs = identity.attributes
        require_one_of(role, "account_ids", self.account_ids, identity.account_id)
        require_one_of(role, "regions", self.regions, identity.region)
        require_one_of(role, "ami_ids", self.ami_ids, attrs.get("image_id"))
        require_one_of(role, "instance_ids", self.instance_ids, attrs.get("instance_id"))
        require_one_of(role, "instance_types", self.instance_types, attrs.get("instance_type"))
        if self.max_instance_age is not None and not renewing:
            age = now - datetime.fromisoformat(attrs["pending_time"])
            if age > self.max_instance_age:
                raise Forbidden(
                    "The instance is older than the role allows.",
                    code="instance_too_old",
                    reason=f"role {role}: instance launched {age} ago, max_instance_age {self.max_instance_age}",
                )

    def check_described(self, info: InstanceInfo | None, *, identity: VerifiedIdentity, role: str) -> None:
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
        require_one_of(role, "vpc_ids", self.vpc_ids, info.vpc_id)
        require_one_of(role, "subnet_ids", self.subnet_ids, info.subnet_id)
        if self.instance_profile_arns and not _any_match(self.instance_profile_arns, [info.instance_profile_arn]):
            raise mismatch(role, f"instance profile {info.instance_profile_arn} matches none of instance_profile_arns")
        if self.iam_role_arns and not _any_match(self.iam_role_arns, info.iam_role_arns):
            raise mismatch(role, f"IAM roles {list(info.iam_role_arns)} match none of iam_role_arns")


def _any_match(patterns: Sequence[str], values: Sequence[str | None]) -> bool:
    return any(arn_matches(p, v) for p in patterns for v in values if v is not None)


_LIVENESS_ONLY = ("vpc_ids", "subnet_ids", "instance_profile_arns", "iam_role_arns", "assume_role")
_FIELDS: dict[str, FieldKind] = {
    "account_ids": "accounts",
    "regions": "strs",
    "ami_ids": "strs",
    "instance_ids": "strs",
    "instance_types": "strs",
    "vpc_ids": "strs",
    "subnet_ids": "strs",
    "instance_profile_arns": "strs",
    "iam_role_arns": "strs",
    "max_instance_age": "duration",
    "allow_migration": "bool",
    "check_instance": "bool",
    "assume_role": "str",
    "allow_unbounded_documents": "bool",
}


def _parse(fields: FieldValues) -> Ec2Options:
    options = Ec2Options(**fields.values)
    for name in _LIVENESS_ONLY:
        if name in fields.values and not options.check_instance:
            raise ConfigError(
                f"{fields.where}, field {name!r}: needs check_instance = true "
                "(it is checked with ec2:DescribeInstances)"
            )
    # An identity document never expires: without an age limit or a liveness check, any leaked,
    # years-old AWS-signed document attests, and whoever attests first locks the real instance out.
    if options.max_instance_age is None and not options.check_instance and not options.allow_unbounded_documents:
        raise ConfigError(
            f'{fields.where}: an aws-ec2 role needs max_instance_age (e.g. "10m") or check_instance = true; '
            "without either any leaked identity document, however old, attests. "
            "Set allow_unbounded_documents = true to accept that risk"
        )
    return options


AWS_EC2 = RoleRules(
    method="aws-ec2",
    kind=Ec2Options,
    fields=_FIELDS,
    parse=_parse,
    template_vars=frozenset(
        {
            "account_id",
            "region",
            "instance_id",
            "image_id",
            "instance_type",
            "availability_zone",
            "architecture",
            "private_ip",
            "pending_time",
        }
    ),
    default_uri_san="spiffe://{trust_domain}/aws/{account_id}/{region}/ec2/{instance_id}",
    default_common_name="{instance_id}",
)
