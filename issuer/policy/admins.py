"""Who may operate the service: the ``[[admins]]`` tables of ``issuer.toml``, as data.

Each table grants a fixed set of ``permissions`` to the IAM principals its ``principals``
patterns match (the ARN matcher of :mod:`issuer.policy.arn`: exact, or ``*`` for any run of
characters). A caller is matched by the ARN STS returned (for a role session,
``arn:aws:sts::A:assumed-role/R/S``) *and* by its canonical ARN (the role,
``arn:aws:iam::A:role/R``), so a grant can name a role — every session of it, SSO's
``AWSReservedSSO_*`` roles included — or one session (an SSO user's e-mail is the session).
Permissions of every matching table add up; anything not granted is refused.

Pure: values in, values out, :class:`~issuer.errors.ConfigError` for a bad table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from issuer.errors import ConfigError
from issuer.policy.arn import arn_matches

__all__ = ["PERMISSIONS", "AdminGrant", "Permission", "parse_admins", "permissions_of"]

Permission = Literal["read", "tokens", "revoke", "deny", "ca", "publish", "audit"]
PERMISSIONS: Final[tuple[Permission, ...]] = ("read", "tokens", "revoke", "deny", "ca", "publish", "audit")
_FIELDS = frozenset({"name", "principals", "permissions"})
# arn:<partition>:<iam|sts>::<account or *>:<resource>; wildcards allowed anywhere after the service.
_PATTERN = re.compile(r"arn:(aws(?:-[a-z]+)*|\*):(iam|sts|\*)::([0-9]{12}|\*):.+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True, slots=True)
class AdminGrant:
    """One ``[[admins]]`` table: these principal patterns hold these permissions."""

    name: str
    principals: tuple[str, ...]
    permissions: frozenset[Permission]

    def matches(self, arns: Iterable[str]) -> bool:
        return any(arn_matches(pattern, arn) for pattern in self.principals for arn in arns)


def permissions_of(grants: Sequence[AdminGrant], arns: Iterable[str]) -> frozenset[Permission]:
    """Every permission some grant gives one of ``arns`` (the caller's ARN and canonical ARN)."""
    names = tuple(arns)
    granted: set[Permission] = set()
    for grant in grants:
        if grant.matches(names):
            granted |= grant.permissions
    return frozenset(granted)


def parse_admins(raw: Any, *, source: str) -> tuple[AdminGrant, ...]:
    """The ``[[admins]]`` tables; none gives ``()`` (the admin API is off).

    Raises :class:`ConfigError` naming the file, the table and the field.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"{source}: admins must be [[admins]] tables")
    grants = []
    for index, table in enumerate(raw):
        name = table.get("name", f"admins-{index + 1}")
        where = f"{source}: [[admins]] {name!r}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{source}: [[admins]] #{index + 1}: name must be a short word (letters, digits, _.-)")
        unknown = sorted(set(table) - _FIELDS)
        if unknown:
            raise ConfigError(f"{where} has unknown field {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})")
        grants.append(
            AdminGrant(
                name=name,
                principals=_principals(table.get("principals"), where),
                permissions=_permissions(table.get("permissions"), where),
            )
        )
    return tuple(grants)


def _principals(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"{where}, field 'principals': a non-empty array of ARN patterns such as \"arn:aws:iam::…\"")
    for pattern in value:
        if not _PATTERN.fullmatch(pattern):
            raise ConfigError(
                f"{where}, field 'principals': {pattern[:200]!r} is not an IAM/STS ARN pattern "
                "(arn:aws:iam::ACCOUNT:role/NAME, …:user/NAME, arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION)"
            )
        if pattern.count("*") > 8 or len(pattern) > 2048:
            raise ConfigError(f"{where}, field 'principals': {pattern[:80]!r} is too long or has too many '*'")
    return tuple(value)


def _permissions(value: Any, where: str) -> frozenset[Permission]:
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"{where}, field 'permissions': a non-empty array of {', '.join(PERMISSIONS)}")
    unknown = [p for p in value if p not in PERMISSIONS]
    if unknown:
        raise ConfigError(
            f"{where}, field 'permissions': {unknown[0]!r} is not a permission (known: {', '.join(PERMISSIONS)})"
        )
    return frozenset(p for p in PERMISSIONS if p in value)
