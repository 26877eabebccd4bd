"""What an attestation method adds to a role: its fields, their defaults and checks, its name templates.

Each method declares one :class:`RoleRules` in a policy module of its own
(:mod:`issuer.policy.ec2`, ...); :mod:`issuer.policy.methods` lists them, and role parsing
(:mod:`issuer.policy.roles`) reads only that list. A method's options are a frozen dataclass
(its defaults are the dataclass's) that checks a verified identity against itself
(:class:`MethodOptions`); the decision (:func:`issuer.policy.decide`) calls that check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from issuer.attest.identity import VerifiedIdentity
from issuer.durations import parse_duration
from issuer.errors import ConfigError

__all__ = [
    "COMMON_TEMPLATE_VARS",
    "FieldKind",
    "FieldValues",
    "HasOptions",
    "MethodOptions",
    "RoleRules",
    "convert",
    "strings",
]

# How a role field is read from TOML: "path" is a file name, relative to the configuration file.
FieldKind = Literal["str", "strs", "bool", "duration", "accounts", "path"]
# Template variables every method provides (see issuer.policy.decide).
COMMON_TEMPLATE_VARS = frozenset({"trust_domain", "role", "method", "principal"})
_ACCOUNT_ID = re.compile(r"^\d{12}$")


class MethodOptions(Protocol):
    """A role's options for one method: checks a verified identity of that method against them."""

    def check(self, identity: VerifiedIdentity, *, role: str, now: datetime, renewing: bool) -> None:
        """Raise ``Forbidden`` (``binding_mismatch``, ...) unless ``identity`` satisfies every option.

        ``renewing``: the identity was attested earlier and proves itself with its certificate now.
        """
        ...


class HasOptions(Protocol):
    def options_of(self, method: str) -> MethodOptions: ...


OptionsT = TypeVar("OptionsT", bound=MethodOptions)


@dataclass(frozen=True, slots=True)
class FieldValues:
    """A role's fields for one method, converted by kind; ``where`` names the role for errors."""

    values: Mapping[str, Any]
    where: str


@dataclass(frozen=True, slots=True)
class RoleRules(Generic[OptionsT]):
    """One method's part of the role model.

    ``parse`` builds the options from the fields the role gives (converted by ``fields``' kinds)
    and raises :class:`ConfigError` naming ``where`` and the field; ``kind()`` are the defaults.
    """

    method: str
    kind: type[OptionsT]
    fields: Mapping[str, FieldKind]
    parse: Callable[[FieldValues], OptionsT]
    template_vars: frozenset[str]
    default_uri_san: str
    default_common_name: str
    # Clients sign this service's server_id into the proof, so it must be configured.
    needs_server_id: bool = False
    # A start-up check of the role's options against its name templates (uri_san, common_name,
    # dns_sans): raise ConfigError naming ``where`` for a template the method cannot fill.
    check_templates: Callable[[OptionsT, Sequence[str], str], None] | None = None

    @property
    def variables(self) -> frozenset[str]:
        """Every template variable a role of this method may use."""
        return COMMON_TEMPLATE_VARS | self.template_vars

    def of(self, role: HasOptions) -> OptionsT:
        """``role``'s options for this method, typed."""
        options = role.options_of(self.method)
        if not isinstance(options, self.kind):
            raise TypeError(f"{self.method} options of a role are a {type(options).__name__}")
        return options


def convert(value: object, *, kind: FieldKind, where: str, base: Path) -> Any:
    """A TOML value read as ``kind``; :class:`ConfigError` naming ``where`` otherwise."""
    if kind in ("str", "path"):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a non-empty string")
        return base / value if kind == "path" else value
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
    items = strings(value, where=where)
    if kind == "accounts":
        for item in items:
            if not _ACCOUNT_ID.fullmatch(item):
                raise ConfigError(f"{where}: {item!r} is not a 12-digit AWS account ID")
    return items


def strings(value: object, *, where: str) -> tuple[str, ...]:
    """An array of non-empty strings; :class:`ConfigError` otherwise."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected an array of non-empty strings")
    return tuple(value)
