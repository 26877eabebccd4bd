"""What AWS says about an EC2 instance now: the value and the seam that asks.

A verified identity document proves an instance *was* launched; a role may also ask
AWS (``ec2:DescribeInstances``) whether it is still running, from the same image,
in a bound VPC/subnet with a bound instance profile. :class:`InstanceLookup` is the
seam the service depends on (:data:`LookupFactory` picks one per role and region);
:mod:`issuer.aws.ec2` is the real one, and :meth:`issuer.policy.ec2.Ec2Options.check_described`
the pure decision over what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["InstanceInfo", "InstanceLookup", "LookupFactory"]


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """What ``DescribeInstances`` (and ``iam:GetInstanceProfile``) say about an instance."""

    instance_id: str
    state: str  # pending | running | shutting-down | terminated | stopping | stopped
    image_id: str
    vpc_id: str | None
    subnet_id: str | None
    instance_profile_arn: str | None
    iam_role_arns: tuple[str, ...] = ()
    instance_type: str | None = None


class InstanceLookup(Protocol):
    async def describe(self, *, account_id: str, region: str, instance_id: str) -> InstanceInfo | None:
        """The instance as AWS sees it now, or None if AWS does not know it.

        Raises :class:`~issuer.errors.UpstreamUnavailable` (``ec2_lookup_unavailable``) when AWS cannot be asked.
        """
        ...


# (assume_role template or None, region) -> the lookup to use
LookupFactory = Callable[[str | None, str], InstanceLookup]
