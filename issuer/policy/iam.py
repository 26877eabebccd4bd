"""The IAM method's part of a role: the accounts and principal ARNs it allows, and the CSR binding."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from issuer.attest.identity import VerifiedIdentity
from issuer.policy.arn import arn_matches
from issuer.policy.bindings import mismatch, require_one_of
from issuer.policy.rules import FieldValues, RoleRules

__all__ = ["AWS_IAM", "IamOptions"]


@dataclass(frozen=True, slots=True)
class IamOptions:
    """Empty tuples mean "any"."""

    account_ids: tuple[str, ...] = ()
    principal_arns: tuple[str, ...] = ()  # ARN patterns (issuer.policy.arn)
    # The signed X-Issuer-CSR-SHA256 header is required (false only for Vault-style clients).
    require_csr_binding: bool = True

    def check(self, identity: VerifiedIdentity, *, role: str, now: datetime, renewing: bool) -> None:
        require_one_of(role, "account_ids", self.account_ids, identity.account_id)
        if self.principal_arns:
            canonical = identity.attributes.get("canonical_arn", identity.principal)
            if not any(arn_matches(p, canonical) for p in self.principal_arns):
                raise mismatch(role, f"principal {canonical} not in principal_arns")


def _parse(fields: FieldValues) -> IamOptions:
    return IamOptions(**fields.values)


AWS_IAM = RoleRules(
    method="aws-iam",
    kind=IamOptions,
    fields={"account_ids": "accounts", "principal_arns": "strs", "require_csr_binding": "bool"},
    parse=_parse,
    template_vars=frozenset(
        {
            "account_id",
            "arn",
            "canonical_arn",
            "user_id",
            "principal_type",
            "name",
            "role_name",
            "user_name",
            "session_name",
        }
    ),
    default_uri_san="spiffe://{trust_domain}/aws/{account_id}/iam/{principal_type}/{name}",
    default_common_name="{name}",
    needs_server_id=True,
)
