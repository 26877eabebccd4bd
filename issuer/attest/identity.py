"""The value every attestation method produces."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class VerifiedIdentity:
    """Who a machine proved to be.

    ``principal`` is the stable name the audit trail keys on: the token's name, the
    EC2 instance ID, the canonical IAM ARN, or what an x509pop role's template makes of
    the external certificate. ``attributes`` holds the verified facts
    that role bindings and URI SAN templates may use (``instance_id``, ``image_id``,
    ``role_name``, ``session_name``, ...); every value is a string.
    """

    method: str  # the method's name in the catalogue (issuer.service.issuance.catalogue)
    principal: str
    account_id: str | None = None
    region: str | None = None
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def template_vars(self) -> dict[str, str]:
        """Variables for role templates: the attributes plus the top-level facts."""
        out = dict(self.attributes)
        out["method"] = self.method
        out["principal"] = self.principal
        if self.account_id is not None:
            out["account_id"] = self.account_id
        if self.region is not None:
            out["region"] = self.region
        return out
