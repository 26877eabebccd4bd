"""The role model: what an operator allows, as data.

A role names the attestation methods it accepts, the bindings a verified identity
must satisfy, the key types and lifetimes of the certificates, and the templates
their names come from. Roles are read from the ``[[roles]]`` tables of
``issuer.toml``; anything wrong fails start-up with the file, role and field named.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ca.keys import DEFAULT_KEY_TYPES, KEY_TYPES
from issuer.attest.identity import METHODS, Method
from issuer.durations import parse_duration
from issuer.errors import ConfigError

DEFAULT_URI_SAN: Mapping[Method, str] = {
    "token": "spiffe://{trust_domain}/onprem/{name}",
    "aws-ec2": "spiffe://{trust_domain}/aws/{account_id}/{region}/ec2/{instance_id}",
    "aws-iam": "spiffe://{trust_domain}/aws/{account_id}/iam/{principal_type}/{name}",
}
DEFAULT_COMMON_NAME: Mapping[Method, str] = {
    "token": "{name}",
    "aws-ec2": "{instance_id}",
    "aws-iam": "{name}",
}

# Template variables each method's verified identity provides (see attest/*).
_COMMON_VARS = frozenset({"trust_domain", "role", "method", "principal"})
TEMPLATE_VARS: Mapping[Method, frozenset[str]] = {
    "token": _COMMON_VARS | {"name"},
    "aws-ec2": _COMMON_VARS
    | {
        "account_id",
        "region",
        "instance_id",
        "image_id",
        "instance_type",
        "availability_zone",
        "architecture",
        "private_ip",
        "pending_time",
    },
    "aws-iam": _COMMON_VARS
    | {
        "account_id",
        "arn",
        "canonical_arn",
        "user_id",
        "principal_type",
        "name",
        "role_name",
        "user_name",
        "session_name",
    },
}

_ROLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ACCOUNT_ID = re.compile(r"^\d{12}$")


@dataclass(frozen=True, slots=True)
class Role:
    """One role of the policy. Empty binding tuples mean "any"."""

    name: str
    methods: tuple[Method, ...]
    ttl: timedelta = timedelta(hours=24)
    max_ttl: timedelta = timedelta(hours=72)
    key_types: tuple[str, ...] = DEFAULT_KEY_TYPES
    uri_san: str | None = None  # None: the method's default template
    common_name: str | None = None
    dns_sans: tuple[str, ...] = ()
    # Bindings shared by the AWS methods.
    account_ids: tuple[str, ...] = ()
    # EC2 bindings and options.
    regions: tuple[str, ...] = ()
    ami_ids: tuple[str, ...] = ()
    instance_ids: tuple[str, ...] = ()
    instance_types: tuple[str, ...] = ()
    vpc_ids: tuple[str, ...] = ()
    subnet_ids: tuple[str, ...] = ()
    instance_profile_arns: tuple[str, ...] = ()
    iam_role_arns: tuple[str, ...] = ()
    max_instance_age: timedelta | None = None
    allow_migration: bool = False
    check_instance: bool = False
    assume_role: str | None = None
    # Accept documents with neither max_instance_age nor check_instance (see _check_ec2_bounds).
    allow_unbounded_documents: bool = False
    # IAM bindings and options.
    principal_arns: tuple[str, ...] = ()
    require_csr_binding: bool = True
    # Renewal: how long after expiry a certificate may still renew, and how long a chain of
    # renewals may run from the machine's last attestation (None: no limit).
    renew_grace: timedelta = timedelta(0)
    max_renewal_age: timedelta | None = None

    def uri_san_template(self, method: Method) -> str:
        return self.uri_san or DEFAULT_URI_SAN[method]

    def common_name_template(self, method: Method) -> str:
        return self.common_name or DEFAULT_COMMON_NAME[method]


_FIELD_KINDS: Mapping[str, str] = {
    "name": "str",
    "methods": "methods",
    "ttl": "duration",
    "max_ttl": "duration",
    "key_types": "key_types",
    "uri_san": "str",
    "common_name": "str",
    "dns_sans": "strs",
    "account_ids": "accounts",
    "regions": "strs",
    "ami_ids": "strs",
    "instance_ids": "strs",
    "instance_types": "strs",
    "vpc_ids": "strs",
    "subnet_ids": "strs",
    "instance_profile_arns": "strs",
    "iam_role_arns": "strs",
    "max_instance_age": "duration",
    "allow_migration": "bool",
    "check_instance": "bool",
    "assume_role": "str",
    "principal_arns": "strs",
    "require_csr_binding": "bool",
    "allow_unbounded_documents": "bool",
    "renew_grace": "duration",
    "max_renewal_age": "duration",
}
_EC2_ONLY = frozenset(
    {
        "regions",
        "ami_ids",
        "instance_ids",
        "instance_types",
        "vpc_ids",
        "subnet_ids",
        "instance_profile_arns",
        "iam_role_arns",
        "max_instance_age",
        "allow_migration",
        "check_instance",
        "assume_role",
        "allow_unbounded_documents",
    }
)
_IAM_ONLY = frozenset({"principal_arns", "require_csr_binding"})
_LIVENESS_ONLY = frozenset({"vpc_ids", "subnet_ids", "instance_profile_arns", "iam_role_arns", "assume_role"})


def parse_roles(raw: object, *, source: str, trust_domain: str) -> tuple[Role, ...]:
    """Build the roles from the ``roles`` array of the configuration.

    Raises :class:`ConfigError` naming ``source``, the role and the field.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: 'roles' must be an array of tables ([[roles]])")
    roles: list[Role] = []
    seen: set[str] = set()
    for index, table in enumerate(raw):
        where = f"{source}: roles[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: each role must be a table")
        name = table.get("name")
        if isinstance(name, str):
            where = f"{source}: role {name!r}"
        role = _parse_role(table, where=where, trust_domain=trust_domain)
        if role.name in seen:
            raise ConfigError(f"{where}: the name is used by another role")
        seen.add(role.name)
        roles.append(role)
    return tuple(roles)


def _parse_role(table: Mapping[str, Any], *, where: str, trust_domain: str) -> Role:
    unknown = sorted(set(table) - set(_FIELD_KINDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(_FIELD_KINDS))})")
    values: dict[str, Any] = {}
    for key, value in table.items():
        values[key] = _convert(value, kind=_FIELD_KINDS[key], where=f"{where}, field {key!r}")
    if "name" not in values or not _ROLE_NAME.fullmatch(values["name"]):
        raise ConfigError(f"{where}, field 'name': required; letters, digits, '.', '_' and '-' (at most 63)")
    if "methods" not in values:
        raise ConfigError(f"{where}, field 'methods': required, e.g. methods = [\"token\"]")
    role = Role(**values)
    methods = set(role.methods)
    for key in table:
        if key in _EC2_ONLY and "aws-ec2" not in methods:
            raise ConfigError(f"{where}, field {key!r}: only applies to roles with method 'aws-ec2'")
        if key in _IAM_ONLY and "aws-iam" not in methods:
            raise ConfigError(f"{where}, field {key!r}: only applies to roles with method 'aws-iam'")
        if key in _LIVENESS_ONLY and not role.check_instance:
            raise ConfigError(
                f"{where}, field {key!r}: needs check_instance = true (it is checked with ec2:DescribeInstances)"
            )
    if role.account_ids and methods == {"token"}:
        raise ConfigError(f"{where}, field 'account_ids': only applies to the AWS methods")
    if "aws-ec2" in methods:
        _check_ec2_bounds(role, where=where)
    if role.ttl > role.max_ttl:
        raise ConfigError(f"{where}, field 'ttl': {role.ttl} is longer than max_ttl {role.max_ttl}")
    for method in role.methods:
        allowed = TEMPLATE_VARS[method]
        for field_name in ("uri_san", "common_name"):
            template = getattr(role, f"{field_name}_template")(method)
            _check_template(template, allowed, where=f"{where}, field {field_name!r} (method {method})")
        for template in role.dns_sans:
            _check_template(template, allowed, where=f"{where}, field 'dns_sans' (method {method})")
    uri = role.uri_san_template(role.methods[0]).replace("{trust_domain}", trust_domain)
    if not re.match(r"^[a-z][a-z0-9+.-]*://", uri):
        raise ConfigError(f"{where}, field 'uri_san': must be an absolute URI such as spiffe://{trust_domain}/...")
    return role


def _check_ec2_bounds(role: Role, *, where: str) -> None:
    # An identity document never expires: without an age limit or a liveness check, any leaked,
    # years-old AWS-signed document attests, and whoever attests first locks the real instance out.
    if role.max_instance_age is None and not role.check_instance and not role.allow_unbounded_documents:
        raise ConfigError(
            f'{where}: an aws-ec2 role needs max_instance_age (e.g. "10m") or check_instance = true; '
            "without either any leaked identity document, however old, attests. "
            "Set allow_unbounded_documents = true to accept that risk"
        )


def _check_template(template: str, allowed: frozenset[str], *, where: str) -> None:
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for name in names:
        if name not in allowed:
            raise ConfigError(f"{where}: unknown variable {{{name}}} (available: {', '.join(sorted(allowed))})")


def _convert(value: object, *, kind: str, where: str) -> Any:
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a non-empty string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if kind == "duration":
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ConfigError(f'{where}: expected a duration such as "24h"')
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    items = _strings(value, where=where)
    if kind == "methods":
        if not items:
            raise ConfigError(f"{where}: name at least one of {', '.join(METHODS)}")
        for item in items:
            if item not in METHODS:
                raise ConfigError(f"{where}: unknown method {item!r} (known: {', '.join(METHODS)})")
    elif kind == "key_types":
        if not items:
            raise ConfigError(f"{where}: name at least one key type")
        for item in items:
            if item not in KEY_TYPES:
                raise ConfigError(f"{where}: unknown key type {item!r} (known: {', '.join(KEY_TYPES)})")
    elif kind == "accounts":
        for item in items:
            if not _ACCOUNT_ID.fullmatch(item):
                raise ConfigError(f"{where}: {item!r} is not a 12-digit AWS account ID")
    return items


def _strings(value: object, *, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected an array of non-empty strings")
    return tuple(value)


def select_role(roles: Sequence[Role], *, method: Method, requested: str | None) -> Role | None:
    """The role a request names, or the only role for the method when none is named.

    Returns None when the request must name a role (several candidates) or the named
    role does not exist or does not allow the method; the caller turns that into an error.
    """
    if requested is not None:
        for role in roles:
            if role.name == requested and method in role.methods:
                return role
        return None
    candidates = [role for role in roles if method in role.methods]
    return candidates[0] if len(candidates) == 1 else None
