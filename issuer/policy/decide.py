"""The pure issuance decision: verified identity + role → what to sign.

Names come only from the verified identity through the role's templates, never
from the CSR (step-ca's rule): the CSR contributes its public key and nothing else.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from urllib.parse import quote

from ca.profile import LeafTemplate
from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ClientError, Forbidden
from issuer.policy.roles import Role

# NotBefore is backdated so a client whose clock is a little behind accepts the certificate.
BACKDATE = timedelta(seconds=60)
_CN_MAX = 64  # ub-common-name (RFC 5280)


def decide(
    identity: VerifiedIdentity,
    role: Role,
    *,
    key_type: str,
    now: datetime,
    trust_domain: str,
    requested_ttl: timedelta | None = None,
) -> LeafTemplate:
    """Apply ``role`` to ``identity`` and return the leaf to sign.

    Raises :class:`Forbidden` (``binding_mismatch``, ``method_not_allowed``,
    ``key_type_not_allowed``, ``instance_too_old``, ``template_variable_missing``) or
    :class:`ClientError` (``ttl_too_long``). The public detail never says which
    binding failed; the private ``reason`` does.
    """
    if identity.method not in role.methods:
        raise Forbidden(
            "The role does not allow this attestation method.",
            code="method_not_allowed",
            reason=f"role {role.name} does not allow {identity.method}",
        )
    if key_type not in role.key_types:
        raise Forbidden(
            f"The role does not allow {key_type} keys; allowed: {', '.join(role.key_types)}.",
            code="key_type_not_allowed",
        )
    check_bindings(identity, role, now=now)
    ttl = role.ttl
    if requested_ttl is not None:
        if requested_ttl > role.max_ttl:
            raise ClientError(
                f"The requested ttl is longer than the role's max_ttl ({role.max_ttl}).", code="ttl_too_long"
            )
        ttl = requested_ttl
    variables = dict(identity.template_vars())
    variables["trust_domain"] = trust_domain
    variables["role"] = role.name
    uri = _render(role.uri_san_template(identity.method), variables, escape=True, role=role)
    common_name = _render(role.common_name_template(identity.method), variables, escape=False, role=role)
    dns = tuple(_render(t, variables, escape=True, role=role) for t in role.dns_sans)
    return LeafTemplate(
        common_name=common_name[:_CN_MAX],
        uri_sans=(uri,),
        dns_sans=dns,
        not_before=now - BACKDATE,
        not_after=now + ttl,
    )


def check_bindings(identity: VerifiedIdentity, role: Role, *, now: datetime) -> None:
    """Raise ``Forbidden(code="binding_mismatch")`` unless every non-empty binding of ``role`` holds."""
    attrs = identity.attributes
    _bind(role, "account_ids", role.account_ids, identity.account_id)
    if identity.method == "aws-ec2":
        _bind(role, "regions", role.regions, identity.region)
        _bind(role, "ami_ids", role.ami_ids, attrs.get("image_id"))
        _bind(role, "instance_ids", role.instance_ids, attrs.get("instance_id"))
        _bind(role, "instance_types", role.instance_types, attrs.get("instance_type"))
        if role.max_instance_age is not None:
            pending = datetime.fromisoformat(attrs["pending_time"])
            age = now - pending
            if age > role.max_instance_age:
                raise Forbidden(
                    "The instance is older than the role allows.",
                    code="instance_too_old",
                    reason=f"role {role.name}: instance launched {age} ago, max_instance_age {role.max_instance_age}",
                )
    if identity.method == "aws-iam" and role.principal_arns:
        canonical = attrs.get("canonical_arn", identity.principal)
        if not any(arn_matches(p, canonical) for p in role.principal_arns):
            raise Forbidden(
                "The identity does not match the role's bindings.",
                code="binding_mismatch",
                reason=f"role {role.name}: principal {canonical} not in principal_arns",
            )


def _bind(role: Role, field: str, allowed: Sequence[str], value: str | None) -> None:
    if allowed and value not in allowed:
        raise Forbidden(
            "The identity does not match the role's bindings.",
            code="binding_mismatch",
            reason=f"role {role.name}: {field} does not include {value!r}",
        )


def arn_matches(pattern: str, arn: str) -> bool:
    """Whether ``arn`` matches ``pattern``: exact, or with ``*`` matching any run of characters."""
    if "*" not in pattern:
        return pattern == arn
    return _glob(pattern).fullmatch(arn) is not None


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def _render(template: str, variables: Mapping[str, str], *, escape: bool, role: Role) -> str:
    out: list[str] = []
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if field is None:
            continue
        value = variables.get(field)
        if not value:
            raise Forbidden(
                "The role's name template needs a fact this identity does not have.",
                code="template_variable_missing",
                reason=f"role {role.name}: no {{{field}}} for {variables.get('principal')}",
            )
        # Values come from AWS or an operator, but still never let one add path segments or schemes.
        out.append(quote(value, safe="-._~@=,:") if escape and field != "trust_domain" else value)
    return "".join(out)
