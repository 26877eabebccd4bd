"""The ``aws-ec2-role`` method's part of a role: the EC2 fields, read for an instance with no document.

The options are :class:`~issuer.policy.ec2.Ec2Options` (a role may list ``aws-ec2`` and
``aws-ec2-role`` with one set of fields); this module says which of them apply and when.
The instance identity role's ARN names the account and the instance, nothing else: the
image, type and network are only known from ``ec2:DescribeInstances`` (``check_instance``),
and so is the region. Start-up refuses a role that would need what the method cannot know:

- ``ami_ids``, ``instance_types`` and the liveness fields without ``check_instance``;
- ``check_instance`` without ``regions`` (where ``DescribeInstances`` looks for the instance);
- without ``check_instance``, a template using ``{region}`` unless ``regions`` names exactly one.

There is no document, so ``max_instance_age``, ``allow_migration`` and
``allow_unbounded_documents`` (aws-ec2's) do not apply.
"""

from __future__ import annotations

from collections.abc import Sequence

from issuer.errors import ConfigError
from issuer.policy.ec2 import Ec2Options
from issuer.policy.rules import FieldKind, FieldValues, RoleRules

__all__ = ["AWS_EC2_ROLE", "region_without_lookup"]

_FIELDS: dict[str, FieldKind] = {
    "account_ids": "accounts",
    "regions": "strs",
    "instance_ids": "strs",
    "ami_ids": "strs",
    "instance_types": "strs",
    "vpc_ids": "strs",
    "subnet_ids": "strs",
    "instance_profile_arns": "strs",
    "iam_role_arns": "strs",
    "check_instance": "bool",
    "assume_role": "str",
}
_NEEDS_LOOKUP = ("ami_ids", "instance_types", "vpc_ids", "subnet_ids", "instance_profile_arns", "iam_role_arns")


def _parse(fields: FieldValues) -> Ec2Options:
    options = Ec2Options(**fields.values)
    if not options.check_instance:
        for name in (*_NEEDS_LOOKUP, "assume_role"):
            if name in fields.values:
                raise ConfigError(
                    f"{fields.where}, field {name!r}: needs check_instance = true for method aws-ec2-role "
                    "(the instance identity role names only the account and the instance; the rest is "
                    "learnt from ec2:DescribeInstances)"
                )
    elif not options.regions:
        raise ConfigError(
            f"{fields.where}, field 'regions': required for aws-ec2-role with check_instance = true "
            "(the regions ec2:DescribeInstances looks for the instance in)"
        )
    return options


def _check_templates(options: Ec2Options, templates: Sequence[str], where: str) -> None:
    if options.check_instance or len(options.regions) == 1:
        return
    if any("{region}" in template for template in templates):
        raise ConfigError(
            f"{where}: method aws-ec2-role names no region unless check_instance = true; a template uses "
            "{region}, so set check_instance = true, list exactly one region, or leave {region} out of "
            "uri_san, common_name and dns_sans"
        )


def region_without_lookup(options: Ec2Options) -> str | None:
    """The region of an instance when no lookup is made: the role's only region, if it lists one."""
    return options.regions[0] if len(options.regions) == 1 else None


AWS_EC2_ROLE = RoleRules(
    method="aws-ec2-role",
    kind=Ec2Options,
    fields=_FIELDS,
    parse=_parse,
    template_vars=frozenset({"account_id", "region", "instance_id", "image_id", "instance_type"}),
    default_uri_san="spiffe://{trust_domain}/aws/{account_id}/{region}/ec2/{instance_id}",
    default_common_name="{instance_id}",
    needs_server_id=True,
    check_templates=_check_templates,
)
