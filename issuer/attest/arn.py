"""The caller ARNs STS returns, reduced to the principal that role policy binds to.

``GetCallerIdentity`` names a role session as ``arn:P:sts::A:assumed-role/R/S``; policy
is written against the role, so that becomes ``arn:P:iam::A:role/R`` with session ``S``.
IAM leaves a role's path out of assumed-role ARNs, so canonical role ARNs never carry
one: bind ``arn:aws:iam::A:role/R``, not ``…:role/path/R``. User ARNs keep their path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, NoReturn

from issuer.attest.identity import VerifiedIdentity
from issuer.errors import Unauthorized

if TYPE_CHECKING:
    from issuer.attest.sts_response import CallerIdentity

__all__ = ["CanonicalPrincipal", "PrincipalType", "canonicalise", "identity_from_caller"]

PrincipalType = Literal["role", "user", "root", "federated-user"]

_ARN = re.compile(
    r"arn:(?P<partition>aws(?:-[a-z]+)*):(?P<service>iam|sts)::(?P<account>[0-9]{12}):(?P<resource>.+)",
    re.ASCII,
)
_SEGMENT = r"[\w+=,.@-]{1,128}"
_PATHED = re.compile(rf"(?P<kind>user|role)/(?P<path>(?:{_SEGMENT}/)*)(?P<name>{_SEGMENT})", re.ASCII)
_ASSUMED = re.compile(
    rf"assumed-role/(?:{_SEGMENT}/)*(?P<role>{_SEGMENT})/(?P<session>{_SEGMENT})",
    re.ASCII,
)
_FEDERATED = re.compile(rf"federated-user/(?P<name>{_SEGMENT})", re.ASCII)


@dataclass(frozen=True, slots=True)
class CanonicalPrincipal:
    """A caller ARN and the principal it stands for.

    ``canonical_arn`` is what bindings match: the IAM role for a role session, otherwise
    the ARN itself. ``name`` is the role or user name (no path); ``session_name`` is set
    only for role sessions.
    """

    arn: str
    canonical_arn: str
    partition: str
    account_id: str
    principal_type: PrincipalType
    name: str
    session_name: str | None = None


def canonicalise(arn: str) -> CanonicalPrincipal:
    """Canonicalise an IAM/STS caller ARN.

    Raises ``Unauthorized(code="sts_arn_unrecognised")`` for anything that is not an IAM
    user, role or root ARN, an STS assumed-role ARN or an STS federated-user ARN.
    """
    whole = _ARN.fullmatch(arn)
    if whole is None:
        _unrecognised(arn)
    partition, service, account, resource = whole["partition"], whole["service"], whole["account"], whole["resource"]

    def principal(
        kind: PrincipalType, name: str, canonical: str = arn, session: str | None = None
    ) -> CanonicalPrincipal:
        return CanonicalPrincipal(arn, canonical, partition, account, kind, name, session)

    if service == "iam":
        if resource == "root":
            return principal("root", "root")
        pathed = _PATHED.fullmatch(resource)
        if pathed is not None:
            return principal("user" if pathed["kind"] == "user" else "role", pathed["name"])
    else:
        assumed = _ASSUMED.fullmatch(resource)
        if assumed is not None:
            role = assumed["role"]
            return principal("role", role, f"arn:{partition}:iam::{account}:role/{role}", assumed["session"])
        federated = _FEDERATED.fullmatch(resource)
        if federated is not None:
            return principal("federated-user", federated["name"])
    _unrecognised(arn)


def identity_from_caller(caller: CallerIdentity) -> VerifiedIdentity:
    """The ``aws-iam`` identity for what STS returned.

    ``principal`` is the canonical ARN; attributes hold ``arn``, ``canonical_arn``,
    ``user_id``, ``unique_id`` (the ``AROA…``/``AIDA…`` part of ``user_id``),
    ``principal_type``, ``name``, ``role_name`` or ``user_name``, and ``session_name`` for
    role sessions. Raises ``Unauthorized(code="sts_arn_unrecognised")`` for an ARN
    ``canonicalise`` refuses or one whose account is not the account STS reported.
    """
    p = canonicalise(caller.arn)
    if p.account_id != caller.account_id:
        raise Unauthorized(
            "STS returned a caller this service does not recognise",
            code="sts_arn_unrecognised",
            reason=f"sts_arn_unrecognised: ARN account {p.account_id} != Account {caller.account_id}",
        )
    attributes = {
        "arn": p.arn,
        "canonical_arn": p.canonical_arn,
        "user_id": caller.user_id,
        "unique_id": caller.user_id.split(":", 1)[0],
        "principal_type": p.principal_type,
        "name": p.name,
    }
    if p.principal_type == "role":
        attributes["role_name"] = p.name
    elif p.principal_type == "user":
        attributes["user_name"] = p.name
    if p.session_name is not None:
        attributes["session_name"] = p.session_name
    return VerifiedIdentity(
        method="aws-iam",
        principal=p.canonical_arn,
        account_id=p.account_id,
        region=None,
        attributes=MappingProxyType(attributes),
    )


def _unrecognised(arn: str) -> NoReturn:
    raise Unauthorized(
        "STS returned a caller this service does not recognise",
        code="sts_arn_unrecognised",
        reason=f"sts_arn_unrecognised: {arn[:300]!r}",
    )
