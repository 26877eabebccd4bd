"""Operator actions on who may do what: the deny list, the audit trail, and ``whoami``.

``deny.add`` needs ``deny`` (and ``revoke`` too when it also revokes what the identity holds);
``audit.query`` needs ``audit``; ``whoami`` only a signed-in operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from issuer.errors import ClientError
from issuer.policy.admins import Permission
from issuer.service.admin import shapes
from issuer.service.admin.actions import Action, Done, OperatorContext
from issuer.service.admin.args import Args
from issuer.service.revocation import deny
from issuer.store.operator_audit import AuditFilter, query_audit

__all__ = ["ACCESS_ACTIONS"]

_KINDS = ("principal", "instance", "account")
_OUTCOMES = ("success", "failure")


@dataclass(frozen=True, slots=True)
class _Deny:
    spec: deny.DenialSpec
    revoke: bool


def _parse_deny(args: Args, now: datetime) -> _Deny:
    given = {kind: args.text(kind, max_len=2048) for kind in _KINDS}
    reason = args.text("reason", max_len=1000) or ""
    until = args.moment("until", now=now)
    revoke = args.flag("revoke")
    targets = [(kind, value) for kind, value in given.items() if value is not None]
    if len(targets) != 1:
        raise ClientError("deny exactly one of principal, instance, account", code="denial_kind_invalid")
    ((kind, value),) = targets
    return _Deny(deny.parse_denial(kind=kind, value=value, reason=reason, until=until, now=now), revoke)


def _deny_needs(a: _Deny) -> tuple[Permission, ...]:
    return ("revoke",) if a.revoke else ()


async def _deny_add(ctx: OperatorContext, a: _Deny) -> Done:
    record = await deny.add(ctx.sessions, a.spec, actor=ctx.operator.actor, request_id=ctx.request_id, now=ctx.now)
    revoked: list[dict[str, Any]] = []
    if a.revoke:
        for done in await deny.revoke_denied(ctx.sessions, record, actor=ctx.operator.actor, now=ctx.now):
            revoked.extend(shapes.revocation(done)["revoked"])
    until = f" until {record.until.isoformat(timespec='seconds')}" if record.until else ""
    return Done(
        result={"denial": shapes.denial(record, now=ctx.now), "revoked": revoked},
        summary=f"denied {record.kind} {record.value}{until} (#{record.id}): {record.reason}"
        + (f"; revoked {len(revoked)} certificate(s)" if a.revoke else ""),
        principal=record.value,
    )


async def _deny_list(ctx: OperatorContext, include_inactive: bool) -> Done:
    rows = await deny.list_denials(ctx.sessions, now=ctx.now, include_inactive=include_inactive)
    return Done(
        result={"denials": [shapes.denial(d, now=ctx.now) for d in rows]}, summary=f"listed {len(rows)} denial(s)"
    )


def _parse_denial_id(args: Args, now: datetime) -> int:
    text = args.required("id", max_len=18)
    if not text.isdigit():
        raise ClientError(f"{text!r} is not a denial number (see `issuer deny list`)", code="field_invalid")
    return int(text)


async def _deny_remove(ctx: OperatorContext, denial_id: int) -> Done:
    record = await deny.remove(ctx.sessions, denial_id, actor=ctx.operator.actor, now=ctx.now)
    return Done(
        result={"denial": {**shapes.denial(record, now=ctx.now), "in_force": False, "removed_at": shapes.iso(ctx.now)}},
        summary=f"removed denial #{record.id} ({record.kind} {record.value})",
        principal=record.value,
    )


def _parse_audit(args: Args, now: datetime) -> AuditFilter:
    since = args.duration("since")
    return AuditFilter(
        since=now - since if since is not None else None,
        method=args.text("method", max_len=16),
        outcome=args.choice("outcome", _OUTCOMES),
        actor=args.text("actor", max_len=2048),
        action=args.text("action", max_len=64),
        principal=args.text("principal", max_len=2048),
        request_id=args.text("request_id", max_len=64),
        limit=args.integer("limit", default=100, low=1, high=5000),
    )


async def _audit_query(ctx: OperatorContext, where: AuditFilter) -> Done:
    async with ctx.sessions() as session:
        rows = await query_audit(session, where)
    return Done(result={"entries": [shapes.audit_entry(a) for a in rows]}, summary=f"read {len(rows)} audit row(s)")


def _parse_nothing(args: Args, now: datetime) -> None:
    return None


async def _whoami(ctx: OperatorContext, _: None) -> Done:
    operator = ctx.operator
    return Done(
        result={
            "actor": operator.actor,
            "canonical_arn": operator.canonical_arn,
            "account_id": operator.account_id,
            "user_id": operator.user_id,
            "permissions": sorted(operator.permissions),
            "server_id": ctx.settings.audience,
        },
        summary=f"signed in with {', '.join(sorted(operator.permissions))}",
    )


ACCESS_ACTIONS: tuple[Action[Any], ...] = (
    Action("deny.add", "deny", "POST", "/v1/admin/denials", _parse_deny, _deny_add, changes=True, more=_deny_needs),
    Action("deny.list", "read", "GET", "/v1/admin/denials", lambda args, now: args.flag("all"), _deny_list),
    Action("deny.remove", "deny", "POST", "/v1/admin/denials/{id}/remove", _parse_denial_id, _deny_remove, True),
    Action("audit.query", "audit", "GET", "/v1/admin/audit", _parse_audit, _audit_query),
    Action("whoami", None, "GET", "/v1/admin/whoami", _parse_nothing, _whoami),
)
