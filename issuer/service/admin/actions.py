"""Operator actions as one catalogue: each with its permission, its route, its arguments and its use case.

An :class:`Action` is what an operator can do to a running deployment (create a join token, revoke,
deny, rotate the CA, …). The admin API routes a request to one and the ``issuer`` command runs one
locally; both go through :func:`perform`, so the checks, the permission, the result and the audit
row are the same whichever way it came:

    permission (403 ``permission_denied``) → arguments (400) → the use case → the audit row

Changes are recorded wherever they come from; through the admin API every call is, reads and
refusals included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.errors import CAError
from issuer.errors import ConfigError, Conflict
from issuer.faults import as_service_error
from issuer.policy.admins import Permission
from issuer.service.admin.args import Args
from issuer.service.admin.audit import record_operator_action
from issuer.service.admin.signin import Operator, require
from issuer.settings import Settings

__all__ = ["Action", "Done", "OperatorContext", "perform"]

A = TypeVar("A")
Sessions = async_sessionmaker[AsyncSession]


def _silent(line: str) -> None:
    return None


def _no_more(parsed: Any) -> tuple[Permission, ...]:
    return ()


@dataclass(frozen=True, slots=True)
class OperatorContext:
    """Everything an action's use case may use; ``remote`` is True through the admin API."""

    sessions: Sessions
    settings: Settings
    operator: Operator
    request_id: str
    now: datetime
    remote: bool
    remote_addr: str | None = None
    progress: Callable[[str], None] = _silent


@dataclass(frozen=True, slots=True)
class Done:
    """An action's answer (``result``, the JSON the API returns and ``--json`` prints) and its audit summary."""

    result: dict[str, Any]
    summary: str
    principal: str | None = None  # the identity acted on, for the audit row


@dataclass(frozen=True, slots=True)
class Action(Generic[A]):
    """One operator action. ``parse`` reads the arguments (every field, then :meth:`Args.done` is called);
    ``more`` names permissions some arguments need on top of ``permission`` (``deny --revoke``)."""

    name: str
    permission: Permission | None  # None: any operator (``whoami``)
    method: Literal["GET", "POST"]
    path: str
    parse: Callable[[Args, datetime], A]
    run: Callable[[OperatorContext, A], Awaitable[Done]]
    changes: bool = False
    more: Callable[[A], tuple[Permission, ...]] = field(default=_no_more)


async def perform(action: Action[Any], raw: Mapping[str, Any], ctx: OperatorContext) -> dict[str, Any]:
    """Check, run and record ``action`` with the arguments ``raw``; its result.

    Raises what the checks and the use case raise (:class:`IssuerError` s with stable codes; a
    database outage as 503 ``database_unavailable``; through the API a configuration refusal as
    409 with its code, never a 500); every refusal has been recorded before it propagates.
    """
    try:
        require(ctx.operator, action.permission)
        args = Args(raw)
        parsed = action.parse(args, ctx.now)
        args.done()
        for permission in action.more(parsed):
            require(ctx.operator, permission)
        done = await action.run(ctx, parsed)
    except Exception as exc:
        error = _as_operator_error(exc, remote=ctx.remote)
        if action.changes or ctx.remote:
            await record_operator_action(
                ctx.sessions,
                actor=ctx.operator.actor,
                action=action.name,
                arguments=raw,
                outcome="failure",
                request_id=ctx.request_id,
                now=ctx.now,
                code=getattr(error, "code", "internal_error"),
                summary=str(getattr(error, "reason", None) or getattr(error, "detail", None) or repr(error)),
                remote_addr=ctx.remote_addr,
            )
        if error is exc:
            raise
        raise error from exc
    if action.changes or ctx.remote:
        await record_operator_action(
            ctx.sessions,
            actor=ctx.operator.actor,
            action=action.name,
            arguments=raw,
            outcome="success",
            request_id=ctx.request_id,
            now=ctx.now,
            summary=done.summary,
            principal=done.principal,
            remote_addr=ctx.remote_addr,
        )
    return done.result


def _as_operator_error(exc: BaseException, *, remote: bool) -> BaseException:
    error = as_service_error(exc)
    # What the CLI words as a problem of this machine (a root key offline, a KMS key of the wrong
    # kind, a CA file it cannot read) is, through the API, the state of the deployment: 409 with
    # the same code, never a 500.
    if remote and (isinstance(error, ConfigError) or (isinstance(error, CAError) and error.status_hint == 500)):
        return Conflict(error.detail, code=error.code, reason=getattr(error, "reason", error.detail))
    return error
