"""The role model: what an operator allows, as data.

A role names the attestation methods it accepts, the key types and lifetimes of the
certificates, and the templates their names come from; each method adds its own fields
(bindings, options) through its :class:`~issuer.policy.rules.RoleRules`, listed in
:mod:`issuer.policy.methods`. Roles are read from the ``[[roles]]`` tables of
``issuer.toml``; anything wrong fails start-up with the file, role and field named.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ca.keys import DEFAULT_KEY_TYPES, KEY_TYPES
from issuer.errors import ConfigError
from issuer.policy.methods import METHOD_NAMES, ROLE_RULES, rules_for
from issuer.policy.rules import FieldKind, FieldValues, MethodOptions, convert, strings
from issuer.policy.templates import check_template

__all__ = ["Role", "parse_roles", "select_role"]

_ROLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _no_options() -> Mapping[str, MethodOptions]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Role:
    """One role of the policy: the fields every method shares, and each method's own ``options``."""

    name: str
    methods: tuple[str, ...]
    ttl: timedelta = timedelta(hours=24)
    max_ttl: timedelta = timedelta(hours=72)
    key_types: tuple[str, ...] = DEFAULT_KEY_TYPES
    uri_san: str | None = None  # None: the method's default template
    common_name: str | None = None
    dns_sans: tuple[str, ...] = ()
    # Renewal: how long after expiry a certificate may still renew, and how long a chain of
    # renewals may run from the machine's last attestation (None: no limit).
    renew_grace: timedelta = timedelta(0)
    max_renewal_age: timedelta | None = None
    # Per method name: that method's options (see issuer.policy.rules); absent means its defaults.
    options: Mapping[str, MethodOptions] = field(default_factory=_no_options)

    def options_of(self, method: str) -> MethodOptions:
        """This role's options for ``method`` (the method's defaults when the role sets none)."""
        found = self.options.get(method)
        return found if found is not None else rules_for(method).kind()

    def uri_san_template(self, method: str) -> str:
        return self.uri_san or rules_for(method).default_uri_san

    def common_name_template(self, method: str) -> str:
        return self.common_name or rules_for(method).default_common_name


# The fields every role has, whatever its methods.
_COMMON_FIELDS: Mapping[str, FieldKind | None] = {
    "name": "str",
    "methods": None,
    "ttl": "duration",
    "max_ttl": "duration",
    "key_types": None,
    "uri_san": "str",
    "common_name": "str",
    "dns_sans": "strs",
    "renew_grace": "duration",
    "max_renewal_age": "duration",
}


def parse_roles(raw: object, *, source: str, trust_domain: str, base: Path | None = None) -> tuple[Role, ...]:
    """Build the roles from the ``roles`` array of the configuration.

    ``base`` is the directory file names in role fields are relative to (the configuration
    file's). Raises :class:`ConfigError` naming ``source``, the role and the field.
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
        role = _parse_role(table, where=where, trust_domain=trust_domain, base=base or Path.cwd())
        if role.name in seen:
            raise ConfigError(f"{where}: the name is used by another role")
        seen.add(role.name)
        roles.append(role)
    return tuple(roles)


def _parse_role(table: Mapping[str, Any], *, where: str, trust_domain: str, base: Path) -> Role:
    common: dict[str, Any] = {}
    for key, value in table.items():
        if key in _COMMON_FIELDS:
            common[key] = _common(key, value, where=f"{where}, field {key!r}", base=base)
    if "name" not in common or not _ROLE_NAME.fullmatch(common["name"]):
        raise ConfigError(f"{where}, field 'name': required; letters, digits, '.', '_' and '-' (at most 63)")
    if "methods" not in common:
        raise ConfigError(f"{where}, field 'methods': required, e.g. methods = [\"token\"]")
    methods: tuple[str, ...] = common["methods"]
    _check_method_fields(table, methods, where=where)
    options: dict[str, MethodOptions] = {}
    for method in methods:
        rules = rules_for(method)
        values = {
            key: convert(table[key], kind=kind, where=f"{where}, field {key!r}", base=base)
            for key, kind in rules.fields.items()
            if key in table
        }
        options[method] = rules.parse(FieldValues(values=values, where=where))
    role = Role(**common, options=MappingProxyType(options))
    if role.ttl > role.max_ttl:
        raise ConfigError(f"{where}, field 'ttl': {role.ttl} is longer than max_ttl {role.max_ttl}")
    for method in role.methods:
        allowed = rules_for(method).variables
        check_template(role.uri_san_template(method), allowed, where=f"{where}, field 'uri_san' (method {method})")
        check_template(
            role.common_name_template(method), allowed, where=f"{where}, field 'common_name' (method {method})"
        )
        for template in role.dns_sans:
            check_template(template, allowed, where=f"{where}, field 'dns_sans' (method {method})")
        rules = rules_for(method)
        if rules.check_templates is not None:
            templates = (role.uri_san_template(method), role.common_name_template(method), *role.dns_sans)
            rules.check_templates(rules.of(role), templates, where)
    uri = role.uri_san_template(role.methods[0]).replace("{trust_domain}", trust_domain)
    if not re.match(r"^[a-z][a-z0-9+.-]*://", uri):
        raise ConfigError(f"{where}, field 'uri_san': must be an absolute URI such as spiffe://{trust_domain}/...")
    return role


def _check_method_fields(table: Mapping[str, Any], methods: Sequence[str], *, where: str) -> None:
    """Every field is a common one or belongs to one of the role's methods."""
    for key in table:
        if key in _COMMON_FIELDS:
            continue
        owners = [rules.method for rules in ROLE_RULES if key in rules.fields]
        if not owners:
            known = sorted({*_COMMON_FIELDS, *(f for rules in ROLE_RULES for f in rules.fields)})
            raise ConfigError(f"{where}: unknown field {key!r} (known: {', '.join(known)})")
        if not set(owners) & set(methods):
            named = " or ".join(repr(owner) for owner in owners)
            raise ConfigError(f"{where}, field {key!r}: only applies to roles with method {named}")


def _common(key: str, value: object, *, where: str, base: Path) -> Any:
    kind = _COMMON_FIELDS[key]
    if kind is not None:
        return convert(value, kind=kind, where=where, base=base)
    items = strings(value, where=where)
    if key == "methods":
        if not items:
            raise ConfigError(f"{where}: name at least one of {', '.join(METHOD_NAMES)}")
        for item in items:
            if item not in METHOD_NAMES:
                raise ConfigError(f"{where}: unknown method {item!r} (known: {', '.join(METHOD_NAMES)})")
    else:  # key_types
        if not items:
            raise ConfigError(f"{where}: name at least one key type")
        for item in items:
            if item not in KEY_TYPES:
                raise ConfigError(f"{where}: unknown key type {item!r} (known: {', '.join(KEY_TYPES)})")
    return items


def select_role(roles: Sequence[Role], *, method: str, requested: str | None) -> Role | None:
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
