"""The deny list: identities that may not attest, renew or bootstrap again.

A denial names a **principal** pattern (the ARN matcher of :mod:`issuer.policy.arn`, matched
against the verified principal — an IAM canonical ARN, an instance ID, a token name — and, for
IAM, the caller's session ARN), an **EC2 instance** ID, or an **AWS account** ID; it holds until
its ``until`` passes or an operator removes it. The issuance pipeline asks :func:`check` inside
every issuance's transaction, once the identity is known and before anything is signed, so a
denial takes effect on every replica at once; the refusal is ``identity_denied`` (403), audited
like every refusal. Revoking what a denied identity already holds is :func:`revoke_denied`: the
live certificates the denial would have refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ClientError, Forbidden, NotFound
from issuer.policy.arn import arn_matches
from issuer.service.revocation.revoke import Revocation, RevocationTarget, revoke
from issuer.store import denials as store
from issuer.store.denials import DenialRecord, InForce
from issuer.store.models import Certificate, Identity
from issuer.store.revocations import LIVE_STATUSES

__all__ = [
    "DenialKind",
    "DenialRecord",
    "add",
    "check",
    "denial_applies",
    "list_denials",
    "parse_denial",
    "refuse_if_denied",
    "remove",
    "revoke_denied",
]

Sessions = async_sessionmaker[AsyncSession]
DenialKind = Literal["principal", "instance", "account"]
KINDS: tuple[DenialKind, ...] = ("principal", "instance", "account")
_INSTANCE = re.compile(r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?")
_ACCOUNT = re.compile(r"[0-9]{12}")
_PRINCIPAL = re.compile(r"[\x21-\x7e]{1,2048}")
_FIXED_ACCOUNT = re.compile(r"arn:[^:*]+:(?:iam|sts)::([0-9]{12}):")
_MAX_REASON = 1000
# Revocation rounds after a denial: an issuance that checked the list just before the denial
# committed may still commit after the first round listed the certificates.
_REVOKE_ROUNDS = 2


@dataclass(frozen=True, slots=True)
class DenialSpec:
    """A checked denial, not yet stored."""

    kind: DenialKind
    value: str
    reason: str
    until: datetime | None


def parse_denial(*, kind: str, value: str, reason: str, until: datetime | None, now: datetime) -> DenialSpec:
    """Check what an operator asks to deny.

    Raises :class:`ClientError` ``denial_kind_invalid``, ``instance_invalid``, ``account_invalid``,
    ``principal_invalid``, ``reason_missing``, ``until_in_past``.
    """
    if kind not in KINDS:
        raise ClientError(f"deny a principal, an instance or an account, not {kind[:32]!r}", code="denial_kind_invalid")
    if kind == "instance" and not _INSTANCE.fullmatch(value):
        raise ClientError(f"{value[:64]!r} is not an EC2 instance ID (i-…)", code="instance_invalid")
    if kind == "account" and not _ACCOUNT.fullmatch(value):
        raise ClientError(f"{value[:64]!r} is not an AWS account ID (12 digits)", code="account_invalid")
    if kind == "principal" and (not _PRINCIPAL.fullmatch(value) or value.count("*") > 8):
        raise ClientError(
            "a principal pattern is 1 to 2048 printable characters without spaces, at most 8 '*'",
            code="principal_invalid",
        )
    reason = reason.strip()
    if not reason or len(reason) > _MAX_REASON:
        raise ClientError(f"say why, in 1 to {_MAX_REASON} characters (--reason)", code="reason_missing")
    if until is not None and until <= now:
        raise ClientError(f"--until {until.isoformat()} has passed already", code="until_in_past")
    return DenialSpec(kind=kind, value=value, reason=reason, until=until)


def denial_applies(
    kind: str, value: str, *, principal: str, account_id: str | None, attributes: Mapping[str, Any]
) -> bool:
    """Whether a denial of ``kind`` ``value`` covers an identity with these facts. Pure."""
    if kind == "account":
        return account_id == value
    if kind == "instance":
        return principal == value or attributes.get("instance_id") == value
    names = {principal, attributes.get("arn"), attributes.get("canonical_arn")}
    return any(isinstance(name, str) and arn_matches(value, name) for name in names)


async def check(session: AsyncSession, identity: VerifiedIdentity, *, now: datetime) -> None:
    """Refuse ``identity`` if a denial in force covers it.

    Raises :class:`Forbidden` ``identity_denied`` (the denial and its reason go to the audit row
    only, never to the client).
    """
    refuse_if_denied(await store.denials_in_force(session, now=now), identity)


def refuse_if_denied(denials: Sequence[DenialRecord | InForce], identity: VerifiedIdentity) -> None:
    """:func:`check` on a deny list already read (issuance reads it with the proof's record)."""
    for denial in denials:
        if denial_applies(
            denial.kind,
            denial.value,
            principal=identity.principal,
            account_id=identity.account_id,
            attributes=identity.attributes,
        ):
            raise Forbidden(
                "This identity is on the service's deny list; an operator must remove the denial.",
                code="identity_denied",
                reason=f"denial #{denial.id} ({denial.kind} {denial.value}) by {denial.created_by}: {denial.reason}",
                principal=identity.principal,
            )


async def add(sessions: Sessions, spec: DenialSpec, *, actor: str, request_id: str, now: datetime) -> DenialRecord:
    """Store a denial; it is in force on every replica once this returns."""
    async with sessions() as session, session.begin():
        return await store.add_denial(
            session,
            kind=spec.kind,
            value=spec.value,
            reason=spec.reason,
            until=spec.until,
            created_by=actor,
            request_id=request_id,
            now=now,
        )


async def list_denials(sessions: Sessions, *, now: datetime, include_inactive: bool) -> Sequence[DenialRecord]:
    async with sessions() as session:
        return await store.list_denials(session, now=now, include_inactive=include_inactive)


async def remove(sessions: Sessions, denial_id: int, *, actor: str, now: datetime) -> DenialRecord:
    """Lift a denial (the row stays, marked removed). NotFound ``denial_not_found`` when none is in force."""
    async with sessions() as session, session.begin():
        record = await store.get_denial(session, denial_id)
        if record is None or not await store.remove_denial(session, denial_id=denial_id, removed_by=actor, now=now):
            raise NotFound(f"no denial #{denial_id} to remove (see `issuer deny list`)", code="denial_not_found")
        return record


async def revoke_denied(
    sessions: Sessions, denial: DenialRecord, *, actor: str, now: datetime
) -> tuple[Revocation, ...]:
    """Revoke every live certificate the denial covers (each by serial, each with its audit rows)."""
    done: list[Revocation] = []
    seen: set[str] = set()
    for _ in range(_REVOKE_ROUNDS):
        async with sessions() as session:
            serials = [s for s in await _live_serials_covered(session, denial, now=now) if s not in seen]
        for serial in serials:
            seen.add(serial)
            done.append(
                await revoke(
                    sessions,
                    RevocationTarget("serial", serial),
                    reason="privilegeWithdrawn",
                    now=now,
                    note=f"deny #{denial.id}: {denial.reason}",
                    actor=actor,
                )
            )
    return tuple(done)


async def _live_serials_covered(session: AsyncSession, denial: DenialRecord, *, now: datetime) -> list[str]:
    query = (
        select(Certificate.serial, Identity.principal, Identity.account_id, Certificate.identity_attributes)
        .join(Identity, Certificate.identity_id == Identity.id)
        .where(Certificate.status.in_(LIVE_STATUSES), Certificate.not_after > now)
    )
    if denial.kind == "account":
        query = query.where(Identity.account_id == denial.value)
    elif denial.kind == "instance":
        query = query.where(Identity.principal == denial.value)
    else:
        # A coarse filter in SQL, the exact decision below: the principal pattern as LIKE, or (for
        # session ARNs, which only the certificate's facts hold) the account the pattern names.
        like = denial.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
        fixed = _FIXED_ACCOUNT.match(denial.value)
        coarse: list[ColumnElement[bool]] = [Identity.principal.like(like, escape="\\")]
        if fixed is not None:
            coarse.append(Identity.account_id == fixed.group(1))
        query = query.where(or_(*coarse))
    rows = (await session.execute(query.order_by(Certificate.id))).all()
    return [
        serial
        for serial, principal, account_id, attributes in rows
        if denial_applies(
            denial.kind, denial.value, principal=principal, account_id=account_id, attributes=attributes or {}
        )
    ]
