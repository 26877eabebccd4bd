"""The join-token method's part of a role: no fields of its own; the token's record names machine and role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from issuer.attest.identity import VerifiedIdentity
from issuer.policy.rules import FieldValues, RoleRules

__all__ = ["TOKEN", "TokenOptions"]


@dataclass(frozen=True, slots=True)
class TokenOptions:
    def check(self, identity: VerifiedIdentity, *, role: str, now: datetime, renewing: bool) -> None:
        return None


def _parse(fields: FieldValues) -> TokenOptions:
    return TokenOptions()


TOKEN = RoleRules(
    method="token",
    kind=TokenOptions,
    fields={},
    parse=_parse,
    template_vars=frozenset({"name"}),
    default_uri_san="spiffe://{trust_domain}/onprem/{name}",
    default_common_name="{name}",
)
