"""Policy in one room: roles, bindings, the EC2 checks, trust on first use, renewal, the decision.

Everything here is pure: values and ``now`` in, a value out or an
:class:`issuer.errors.IssuerError` raised.
"""

from __future__ import annotations

from issuer.policy.arn import arn_matches
from issuer.policy.bindings import check_bindings, check_instance
from issuer.policy.decide import decide
from issuer.policy.renewal import PriorCertificate, check_renewal
from issuer.policy.roles import Role, parse_roles, select_role
from issuer.policy.tofu import BindingDecision, BoundInstance, decide_binding

__all__ = [
    "BindingDecision",
    "BoundInstance",
    "PriorCertificate",
    "Role",
    "arn_matches",
    "check_bindings",
    "check_instance",
    "check_renewal",
    "decide",
    "decide_binding",
    "parse_roles",
    "select_role",
]
