"""The EC2 instance identity role: the caller STS names, read strictly as an instance.

Every EC2 instance gets temporary credentials for the role ``aws:ec2-instance`` from IMDS
(``/identity-credentials/ec2/security-credentials/ec2-instance``); a ``GetCallerIdentity``
signed with them is answered ``arn:P:sts::ACCOUNT:assumed-role/aws:ec2-instance/INSTANCE_ID``.
IAM forbids ``:`` in role names, so no customer role can take that name, and only EC2 names
the session. This module accepts that form and nothing else: an ordinary role whose name
merely looks like it (``aws-ec2-instance``), a session that is not an instance ID, another
partition or a ``UserId`` that does not end in the instance ID are all refused.

Errors::

    Unauthorized  401  ec2_role_arn_unrecognised   the caller is not an instance identity role session
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from issuer.errors import Unauthorized

if TYPE_CHECKING:
    from issuer.attest.sts_response import CallerIdentity

__all__ = ["INSTANCE_ROLE_NAME", "InstanceRoleCaller", "instance_from_caller"]

INSTANCE_ROLE_NAME = "aws:ec2-instance"
_ARN = re.compile(
    r"arn:(?P<partition>aws|aws-cn|aws-us-gov):sts::(?P<account>[0-9]{12}):assumed-role/aws:ec2-instance/"
    r"(?P<instance>i-[0-9a-f]{8}(?:[0-9a-f]{9})?)",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class InstanceRoleCaller:
    """An instance that proved itself with its instance identity role."""

    arn: str
    partition: str
    account_id: str
    instance_id: str


def instance_from_caller(caller: CallerIdentity) -> InstanceRoleCaller:
    """The instance ``caller`` is, or ``Unauthorized`` ``ec2_role_arn_unrecognised``.

    The ARN must have exactly the instance identity role's form, its account must be the
    account STS reported, and the ``UserId`` must be ``<role id>:<instance id>``.
    """
    found = _ARN.fullmatch(caller.arn)
    if found is None:
        raise _unrecognised(f"ARN {caller.arn[:300]!r} is not an instance identity role session")
    if found["account"] != caller.account_id:
        raise _unrecognised(f"ARN account {found['account']} != Account {caller.account_id}")
    role_id, _, session = caller.user_id.partition(":")
    if not role_id or session != found["instance"]:
        raise _unrecognised(f"UserId {caller.user_id[:200]!r} does not name instance {found['instance']}")
    return InstanceRoleCaller(
        arn=caller.arn, partition=found["partition"], account_id=found["account"], instance_id=found["instance"]
    )


def _unrecognised(reason: str) -> Unauthorized:
    return Unauthorized(
        "The signer is not an EC2 instance identity role; sign with the credentials IMDS serves at "
        "identity-credentials/ec2/security-credentials/ec2-instance.",
        code="ec2_role_arn_unrecognised",
        reason=f"ec2_role_arn_unrecognised: {reason}",
    )
