"""Every operator action on the record: the one function that writes an operator action's audit row.

Whatever an operator does — through the admin API or with the ``issuer`` command on a machine
with database access — ends in :func:`record_operator_action`: who (the IAM ARN STS returned, or
``local:user@host``), the action (``token.create``, ``ca.activate``, …), its arguments with
secrets left out, how it ended (``success``/``failure``, a code, a one-line summary), the request
id and the caller's address. Keep it the only writer of these rows, so they can move to another
store (a hash-chained trail) in one place.
"""

from __future__ import annotations

import getpass
import logging
import secrets
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.store.operator_audit import OperatorRow, add_operator_row

__all__ = ["local_actor", "local_request_id", "record_operator_action", "redact"]

log = logging.getLogger("issuer.admin")

# Argument names whose values never reach the audit trail (none of today's actions takes one,
# but a future --token-file or passphrase argument must not leak through a generic recorder).
_SECRET_WORDS = ("token", "secret", "passphrase", "password", "proof", "credential")
_MAX_VALUE = 2048


def local_actor() -> str:
    """Who runs a local command: ``local:<OS user>@<host>`` (best effort: a container may have no user name)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"local:{user}@{socket.gethostname()}"


def local_request_id() -> str:
    return f"local-{secrets.token_hex(8)}"


def redact(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` fit for the audit trail: secret-looking names masked, long values cut."""
    out: dict[str, Any] = {}
    for name, value in arguments.items():
        if any(word in name.lower() for word in _SECRET_WORDS):
            out[name] = "[redacted]"
        elif isinstance(value, str) and len(value) > _MAX_VALUE:
            out[name] = value[:_MAX_VALUE] + "…"
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = str(value)[:_MAX_VALUE]
    return out


async def record_operator_action(
    sessions: async_sessionmaker[AsyncSession],
    *,
    actor: str,
    action: str,
    arguments: Mapping[str, Any],
    outcome: str,
    request_id: str,
    now: datetime,
    code: str | None = None,
    summary: str | None = None,
    principal: str | None = None,
    remote_addr: str | None = None,
) -> None:
    """Write one operator action's audit row, in a transaction of its own.

    A success that cannot be recorded raises (the caller fails the request: an action nobody can
    see in the trail is not answered as done); a failure that cannot be recorded is logged loudly.
    """
    row = OperatorRow(
        actor=actor[:2048],
        action=action,
        outcome=outcome,
        request_id=request_id,
        arguments=redact(arguments),
        code=code,
        reason=summary[:4000] if summary else None,
        principal=principal[:2048] if principal else None,
        remote_addr=remote_addr,
    )
    log.info(
        "operator action=%s outcome=%s code=%s actor=%s request=%s %s",
        action,
        outcome,
        code,
        actor,
        request_id,
        summary or "",
    )
    try:
        async with sessions() as session, session.begin():
            await add_operator_row(session, row, now=now)
    except Exception as exc:
        if outcome == "success":
            raise
        log.error(
            "could not record the operator action %s (request %s): %s: %s",
            action,
            request_id,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
