"""Operator actions on the machines' credentials: join tokens, certificates, EC2 instance bindings, revocation.

Each is an :class:`~issuer.service.admin.actions.Action`: its arguments are read by ``parse``
(the same for the admin API and the local command), its use case is in
:mod:`issuer.service.admin.operations` or :mod:`issuer.service.revocation.revoke`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from issuer.durations import format_duration
from issuer.errors import ClientError, NotFound
from issuer.service.admin import operations as ops
from issuer.service.admin import shapes
from issuer.service.admin.actions import Action, Done, OperatorContext
from issuer.service.admin.args import Args
from issuer.service.ca.setup import read_passphrase
from issuer.service.ca.signers import KeySigners
from issuer.service.issuance.model import normalise_serial
from issuer.service.revocation import revoke as revocation
from issuer.service.revocation.upstream import UpstreamRevocations
from issuer.store.records import CertificateRecord

__all__ = ["FLEET_ACTIONS"]

_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?")
_STATUSES = ("active", "revoked", "superseded")


# --- join tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _NewToken:
    role: str
    name: str
    ttl: timedelta


def _parse_token_create(args: Args, now: datetime) -> _NewToken:
    role, name = args.required("role", max_len=64), args.required("name", max_len=128)
    ttl = args.duration("ttl", default="1h")
    assert ttl is not None
    return _NewToken(role=role, name=name, ttl=ttl)


async def _token_create(ctx: OperatorContext, a: _NewToken) -> Done:
    created = await ops.create_token(ctx.sessions, ctx.settings, role=a.role, name=a.name, ttl=a.ttl, now=ctx.now)
    return Done(
        result={
            "token": created.token,
            "name": created.name,
            "role": created.role,
            "expires_at": shapes.iso(created.expires_at),
        },
        summary=f"created a join token for {created.name!r} (role {created.role}), "
        f"valid until {created.expires_at.isoformat(timespec='seconds')}",
        principal=created.name,
    )


async def _token_list(ctx: OperatorContext, include_used: bool) -> Done:
    rows = await ops.list_tokens(ctx.sessions, include_used=include_used)
    return Done(result={"tokens": [shapes.token(t) for t in rows]}, summary=f"listed {len(rows)} join token(s)")


async def _token_revoke(ctx: OperatorContext, name: str) -> Done:
    count = await ops.revoke_token(ctx.sessions, name=name, now=ctx.now)
    return Done(
        result={"name": name, "revoked": count}, summary=f"revoked {count} unused join token(s)", principal=name
    )


# --- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Listing:
    limit: int
    status: str | None
    principal: str | None


def _parse_certs_list(args: Args, now: datetime) -> _Listing:
    return _Listing(
        limit=args.integer("limit", default=50, low=1, high=1000),
        status=args.choice("status", _STATUSES),
        principal=args.text("principal", max_len=2048),
    )


async def _certs_list(ctx: OperatorContext, a: _Listing) -> Done:
    rows = await ops.list_certificates(ctx.sessions, limit=a.limit, status=a.status, principal=a.principal)
    return Done(
        result={"certificates": [shapes.certificate(c, i) for c, i in rows]},
        summary=f"listed {len(rows)} certificate(s)",
    )


def _parse_serial(args: Args, now: datetime) -> str:
    serial = args.required("serial", max_len=200)
    normalise_serial(serial)  # serial_invalid, before any query
    return serial


async def _certs_show(ctx: OperatorContext, serial: str) -> Done:
    cert, ident = await ops.show_certificate(ctx.sessions, serial)
    return Done(
        result={**shapes.certificate(cert, ident), "certificate_pem": cert.certificate_pem},
        summary=f"showed certificate {cert.serial}",
        principal=ident.principal,
    )


@dataclass(frozen=True, slots=True)
class _Stale:
    late: timedelta
    include_expired: bool


def _parse_stale(args: Args, now: datetime) -> _Stale:
    late = args.duration("late")  # not given: flag every certificate past its renewal point
    return _Stale(late=late or timedelta(0), include_expired=args.flag("include_expired"))


async def _certs_stale(ctx: OperatorContext, a: _Stale) -> Done:
    """Certificates past their own renewal point (``late`` beyond it) with no successor: rotations that stalled."""
    fraction = ctx.settings.renew_fraction
    rows = await ops.stale_certificates(
        ctx.sessions, now=ctx.now, late_by=a.late, renew_fraction=fraction, include_expired=a.include_expired
    )

    def renew_after(c: CertificateRecord) -> datetime:
        return c.created_at + (c.not_after - c.created_at) * fraction

    listed = [
        {
            **shapes.certificate(c, i),
            "renew_after": shapes.iso(renew_after(c)),
            "seconds_late": int((ctx.now - renew_after(c)).total_seconds()),
            "seconds_left": int((c.not_after - ctx.now).total_seconds()),
        }
        for c, i in rows
    ]
    return Done(
        result={"now": shapes.iso(ctx.now), "late": format_duration(a.late), "certificates": listed},
        summary=f"{len(rows)} certificate(s) past their renewal point by more than {format_duration(a.late)}",
    )


async def _certs_history(ctx: OperatorContext, principal: str) -> Done:
    rows = await ops.certificate_history(ctx.sessions, principal=principal)
    return Done(
        result={"principal": principal, "certificates": [shapes.history_entry(c, renewed) for c, renewed in rows]},
        summary=f"{len(rows)} certificate(s) of {principal}",
        principal=principal,
    )


# --- EC2 instance bindings -----------------------------------------------------------------------


async def _instances_list(ctx: OperatorContext, limit: int) -> Done:
    rows = await ops.list_instances(ctx.sessions, limit=limit)
    return Done(result={"instances": [shapes.binding(b) for b in rows]}, summary=f"listed {len(rows)} binding(s)")


def _parse_instance(args: Args, now: datetime) -> str:
    instance = args.required("instance_id", max_len=32)
    if not _INSTANCE_ID.fullmatch(instance):
        raise ClientError(f"{instance!r} is not an EC2 instance ID (i-…)", code="instance_invalid")
    return instance


async def _instances_reset(ctx: OperatorContext, instance: str) -> Done:
    removed = await ops.reset_instance(ctx.sessions, instance_id=instance)
    if not removed:
        raise NotFound(f"no binding for instance {instance}", code="instance_not_found")
    return Done(
        result={"instance_id": instance, "removed": removed},
        summary=f"forgot the trust-on-first-use binding of {instance}",
        principal=instance,
    )


# --- revocation ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Revoke:
    target: revocation.RevocationTarget
    reason: str
    note: str | None
    dry_run: bool
    reset_binding: bool


def _parse_revoke(args: Args, now: datetime) -> _Revoke:
    given = {kind: args.text(kind, max_len=2048) for kind in ("serial", "principal", "instance")}
    reason = args.required("reason", max_len=64)
    note, dry_run, reset = args.text("note", max_len=1000), args.flag("dry_run"), args.flag("reset_binding")
    targets = [(kind, value) for kind, value in given.items() if value is not None]
    if len(targets) != 1:
        raise ClientError("name exactly one of serial, principal, instance", code="revocation_target_invalid")
    ((kind, value),) = targets
    if kind == "serial":
        normalise_serial(value)
    if reset and kind != "instance":
        raise ClientError("reset_binding applies to an instance only", code="reset_binding_needs_instance")
    target = revocation.RevocationTarget(kind, value)  # type: ignore[arg-type]
    return _Revoke(target, revocation.parse_reason(reason), note, dry_run, reset)


async def _revoke(ctx: OperatorContext, a: _Revoke) -> Done:
    done = await revocation.revoke(
        ctx.sessions,
        a.target,
        reason=a.reason,
        now=ctx.now,
        note=a.note,
        actor=ctx.operator.actor,
        dry_run=a.dry_run,
        reset_binding=a.reset_binding,
        upstream=_upstream(ctx),
    )
    verb = "would revoke" if a.dry_run else "revoked"
    binding = f"; binding {done.binding}" if done.binding else ""
    return Done(
        result=shapes.revocation(done),
        summary=f"{verb} {len(done.revoked)} certificate(s) ({done.reason}){binding}; rows {done.request_id}",
        principal=a.target.value if a.target.kind != "serial" else None,
    )


def _upstream(ctx: OperatorContext) -> UpstreamRevocations:
    """Revocations reach issuers that revoke at their own end (AWS Private CA) through the service's key backends."""
    signers = KeySigners(ca_dir=ctx.settings.ca_dir, passphrase=lambda: read_passphrase(ctx.settings))
    return UpstreamRevocations(ctx.sessions, load_signer=signers, clock=lambda: ctx.now)


def _read(name: str, default: int) -> Any:
    return lambda args, now: args.integer(name, default=default, low=1, high=1000)


FLEET_ACTIONS: tuple[Action[Any], ...] = (
    Action("token.create", "tokens", "POST", "/v1/admin/tokens", _parse_token_create, _token_create, changes=True),
    Action("token.list", "read", "GET", "/v1/admin/tokens", lambda args, now: args.flag("all"), _token_list),
    Action(
        "token.revoke",
        "tokens",
        "POST",
        "/v1/admin/tokens/revoke",
        lambda args, now: args.required("name", max_len=128),
        _token_revoke,
        changes=True,
    ),
    Action("certs.list", "read", "GET", "/v1/admin/certificates", _parse_certs_list, _certs_list),
    Action("certs.stale", "read", "GET", "/v1/admin/certificates/stale", _parse_stale, _certs_stale),
    Action("certs.show", "read", "GET", "/v1/admin/certificates/{serial}", _parse_serial, _certs_show),
    Action(
        "certs.history",
        "read",
        "GET",
        "/v1/admin/history",
        lambda args, now: args.required("principal", max_len=2048),
        _certs_history,
    ),
    Action("instances.list", "read", "GET", "/v1/admin/instances", _read("limit", 100), _instances_list),
    Action(
        "instances.reset",
        "revoke",
        "POST",
        "/v1/admin/instances/{instance_id}/reset",
        _parse_instance,
        _instances_reset,
        changes=True,
    ),
    Action("revoke", "revoke", "POST", "/v1/admin/revocations", _parse_revoke, _revoke, changes=True),
)
