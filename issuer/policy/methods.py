"""The attestation methods a role may name, with what each adds to the role model.

This list is the policy's view of the method catalogue (:mod:`issuer.service.issuance.catalogue`
has the whole of each method: its route, wire schema and steps, and names its rules here).
Role parsing, the method names in errors and the decision's per-method checks read it.
"""

from __future__ import annotations

from typing import Any

from issuer.errors import ConfigError
from issuer.policy.ec2 import AWS_EC2
from issuer.policy.ec2_role import AWS_EC2_ROLE
from issuer.policy.iam import AWS_IAM
from issuer.policy.rules import RoleRules
from issuer.policy.token import TOKEN
from issuer.policy.x509pop import X509POP

__all__ = ["METHOD_NAMES", "ROLE_RULES", "rules_for"]

ROLE_RULES: tuple[RoleRules[Any], ...] = (TOKEN, AWS_EC2, AWS_EC2_ROLE, AWS_IAM, X509POP)
METHOD_NAMES: tuple[str, ...] = tuple(rules.method for rules in ROLE_RULES)
_BY_NAME = {rules.method: rules for rules in ROLE_RULES}


def rules_for(method: str) -> RoleRules[Any]:
    """The rules of ``method``; :class:`ConfigError` for a name no method has."""
    try:
        return _BY_NAME[method]
    except KeyError:
        raise ConfigError(f"unknown method {method!r} (known: {', '.join(METHOD_NAMES)})") from None
