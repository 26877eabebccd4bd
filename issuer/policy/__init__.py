"""Policy: the role model and the pure issuance decision."""

from __future__ import annotations

from issuer.policy.decide import arn_matches, check_bindings, decide
from issuer.policy.roles import Role, parse_roles, select_role

__all__ = ["Role", "arn_matches", "check_bindings", "decide", "parse_roles", "select_role"]
