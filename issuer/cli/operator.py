"""How a command runs an operator action: here, against the database, or through ``--server``.

:func:`act` is the one door: with ``--server`` (or ``ISSUER_SERVER``) it calls the admin API
(:mod:`issuer.cli.remote`); otherwise it runs the same action from the catalogue locally, as
``local:<user>@<host>`` with every permission. Either way the result is the same JSON object,
and changes are on the audit record. :func:`audited` records a local command that is not (yet)
an action of the catalogue (file-key CA rotation).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from issuer.cli.database import Sessions, ensure_schema, now, run, with_sessions
from issuer.settings import Settings

__all__ = ["act", "audited", "is_remote", "options_of", "progress_printer"]

T = TypeVar("T")


def is_remote(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "server", None))


def act(
    args: argparse.Namespace,
    settings: Settings,
    name: str,
    arguments: Mapping[str, Any],
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the action ``name`` with ``arguments``; its result. Errors propagate as one-line errors."""
    from issuer.service.admin.catalogue import ACTIONS

    action = ACTIONS[name]
    # Unset options and false flags are left out, here as on the wire: the same audit row either way.
    arguments = {k: v for k, v in arguments.items() if v is not None and v is not False}
    if is_remote(args):
        from issuer.cli.remote import RemoteServer, call_action

        return call_action(RemoteServer.from_args(args), method=action.method, path=action.path, arguments=arguments)

    from issuer.service.admin.actions import OperatorContext, perform
    from issuer.service.admin.audit import local_actor, local_request_id
    from issuer.service.admin.signin import Operator

    ensure_schema(settings)

    async def work(sessions: Sessions) -> dict[str, Any]:
        ctx = OperatorContext(
            sessions=sessions,
            settings=settings,
            operator=Operator.local(local_actor()),
            request_id=local_request_id(),
            now=now(),
            remote=False,
            progress=progress or (lambda line: None),
        )
        return await perform(action, dict(arguments), ctx)

    return run(with_sessions(settings, work))


def audited(
    settings: Settings,
    name: str,
    arguments: Mapping[str, Any],
    work: Callable[[Sessions], Awaitable[T]],
    *,
    summary: Callable[[T], str],
) -> T:
    """Run a local command's ``work`` and record it as the operator action ``name`` (success or failure)."""
    from issuer.faults import as_service_error
    from issuer.service.admin.audit import local_actor, local_request_id, record_operator_action

    actor, request_id = local_actor(), local_request_id()

    async def recorded(sessions: Sessions) -> T:
        at = now()
        try:
            result = await work(sessions)
        except Exception as exc:
            error = as_service_error(exc)
            await record_operator_action(
                sessions,
                actor=actor,
                action=name,
                arguments=arguments,
                outcome="failure",
                request_id=request_id,
                now=at,
                code=getattr(error, "code", "internal_error"),
                summary=str(getattr(error, "reason", None) or error),
            )
            raise
        await record_operator_action(
            sessions,
            actor=actor,
            action=name,
            arguments=arguments,
            outcome="success",
            request_id=request_id,
            now=at,
            summary=summary(result),
        )
        return result

    return run(with_sessions(settings, recorded))


def progress_printer(*, to_stderr: bool) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(line, file=sys.stderr if to_stderr else sys.stdout, flush=True)

    return say


def options_of(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options ``names`` a command was given, for its audit row (S3 locations as URIs)."""
    values = {name: getattr(args, name, None) for name in names}
    return {k: (v.uri if hasattr(v, "uri") else v) for k, v in values.items() if v not in (None, False)}
