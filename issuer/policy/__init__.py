"""Policy in one room: roles and what each method adds to them, trust on first use, renewal, the decision.

Everything here is pure: values and ``now`` in, a value out or an
:class:`issuer.errors.IssuerError` raised (role parsing, at start-up, also reads the
files a role names).
"""

from __future__ import annotations

from issuer.policy.arn import arn_matches
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
    "check_renewal",
    "decide",
    "decide_binding",
    "parse_roles",
    "select_role",
]
