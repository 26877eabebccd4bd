"""``issuer-agent status``: what is installed, and whether the issuer still stands behind it.

The files say whether a certificate is there and valid now. The issuer says whether it was
revoked: ``GET /v1/revoked`` (the list the API Gateway authorizer enforces; no credential
needed) names every revoked, unexpired serial. Whether the issuer denies this machine's
identity is known from its last answer to this agent (403 ``identity_denied``, noted in
``DIR/denied.json``: :mod:`clients.agent.denial`). When the issuer cannot be asked, the files
alone decide and a warning says so. The verdict is one of the states below, each with its own
exit status, so that a health check or a script can tell them apart.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Final, Literal, TextIO

from clients.agent.commands import settle
from clients.agent.daemon import when
from clients.agent.denial import Denial, read_denial
from clients.agent.http import IssuerClient
from clients.agent.installed import CurrentCredentials
from clients.agent.schedule import renewal_due
from clients.errors import EX_NOPERM, AgentError
from clients.wire import REVOKED_PATH

__all__ = ["EXIT_STATUS", "STATUS_EPILOG", "Revocation", "State", "judge", "revocation_of", "run_status"]

State = Literal["valid", "expired", "not_yet_valid", "missing", "revoked", "denied"]

EXIT_STATUS: Final[dict[State, int]] = {
    "valid": 0,
    "expired": 1,
    "not_yet_valid": 1,
    "missing": 3,
    "revoked": 4,
    "denied": EX_NOPERM,
}

STATUS_EPILOG = f"""\
examples:
  issuer-agent status --out /etc/issuer-agent
  issuer-agent status --out /etc/issuer-agent --json | jq .state
  # container health check: the files alone, no request to the issuer
  issuer-agent status --out /certs/live --offline

The issuer is asked with the settings issuer.json remembers (--server, --ca-bundle); when it
cannot be reached a warning says so and the verdict rests on the files.

exit status:
  0   valid: a certificate matching key.pem is installed, valid now, and not revoked
  1   expired, or not valid yet
  3   missing: no certificate in --out (bootstrap first)
  4   revoked: the issuer lists its serial as revoked (`issuer-agent run` re-attests)
  {EXIT_STATUS["denied"]}  denied: the issuer denies this machine's identity (an operator must lift it)
  64  bad usage
  78  the files in --out cannot be read
"""


@dataclass(frozen=True)
class Revocation:
    revoked_at: str | None
    reason: str | None


@dataclass(frozen=True)
class Verdict:
    state: State
    revocation: Revocation | None = None
    denial: Denial | None = None
    issuer_checked: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)


def revocation_of(serial: str, document: Mapping[str, object]) -> Revocation | None:
    """Whether the ``/v1/revoked`` document lists ``serial``; raise ``ValueError`` for a document of another shape."""
    serials = document.get("serials")
    if not isinstance(serials, list) or not all(isinstance(s, str) for s in serials):
        raise ValueError("no list of serials")
    wanted = serial.lower().lstrip("0")
    if wanted not in {s.lower().lstrip("0") for s in serials}:
        return None
    entries = document.get("entries")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and str(entry.get("serial", "")).lower().lstrip("0") == wanted:
            at, reason = entry.get("revoked_at"), entry.get("reason")
            return Revocation(at if isinstance(at, str) else None, reason if isinstance(reason, str) else None)
    return Revocation(None, None)


def judge(
    current: CurrentCredentials | None,
    *,
    now: datetime,
    revocation: Revocation | None,
    denial: Denial | None,
    issuer_checked: bool,
    warnings: tuple[str, ...] = (),
) -> Verdict:
    """The state, most serious first: denied, missing, revoked, expired, not yet valid, valid."""
    state: State
    if denial is not None and (current is None or denial.serial in (None, current.serial)):
        state = "denied"
    elif current is None:
        state = "missing"
    elif revocation is not None:
        state = "revoked"
    elif now >= current.not_after:
        state = "expired"
    elif now < current.not_before:
        state = "not_yet_valid"
    else:
        state = "valid"
    return Verdict(state, revocation, denial if state == "denied" else None, issuer_checked, warnings)


def _ask_issuer(args: argparse.Namespace, current: CurrentCredentials) -> tuple[Revocation | None, bool, str | None]:
    """(revocation, asked, warning)."""
    if args.offline:
        return None, False, None
    if not args.server:
        return None, False, f"not asking the issuer: {args.out}/issuer.json names none and --server is not given"
    try:
        client = IssuerClient(
            args.server, ca_bundle=args.ca_bundle, timeout=args.timeout, allow_insecure_http=args.insecure_http
        )
        return revocation_of(current.serial, client.get_json(REVOKED_PATH)), True, None
    except AgentError as exc:
        problem = exc.one_line()
    except ValueError as exc:
        problem = f"its {REVOKED_PATH} answer is not the revocation list ({exc})"
    return (
        None,
        False,
        f"could not ask the issuer whether {current.serial} is revoked: {problem}; judging from the files",
    )


def run_status(args: argparse.Namespace, *, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    args, _, current = settle(args, env)
    now = datetime.now(timezone.utc)
    revocation, checked, warning = _ask_issuer(args, current) if current is not None else (None, False, None)
    verdict = judge(
        current,
        now=now,
        revocation=revocation,
        denial=read_denial(args.out),
        issuer_checked=checked,
        warnings=(warning,) if warning else (),
    )
    for line in verdict.warnings:
        print(f"warning: {line}", file=err)
    if args.json:
        print(json.dumps(_document(verdict, current, args), indent=2, sort_keys=True), file=out)
    else:
        _print(verdict, current, args, out=out)
    return EXIT_STATUS[verdict.state]


def _document(verdict: Verdict, current: CurrentCredentials | None, args: argparse.Namespace) -> dict[str, object]:
    state = current.state if current else None
    document: dict[str, object] = {
        "state": verdict.state,
        "exit_status": EXIT_STATUS[verdict.state],
        "out": str(args.out),
        "issuer_checked": verdict.issuer_checked,
        "warnings": list(verdict.warnings),
        "server": args.server,
        "server_id": state.server_id if state else None,
        "method": state.method if state else None,
        "role": state.role if state else None,
        "serial": None,
        "revocation": None,
        "denial": verdict.denial.to_json() if verdict.denial else None,
    }
    if current is not None:
        document.update(
            serial=current.serial,
            not_before=current.not_before.isoformat(),
            not_after=current.not_after.isoformat(),
            renew_after=_renew_after(current).isoformat(),
        )
    if verdict.revocation is not None:
        document["revocation"] = {"revoked_at": verdict.revocation.revoked_at, "reason": verdict.revocation.reason}
    return document


def _renew_after(current: CurrentCredentials) -> datetime:
    return renewal_due(
        not_before=current.not_before, not_after=current.not_after, issuer_renew_after=current.renew_after, jitter=0.0
    )


def _print(verdict: Verdict, current: CurrentCredentials | None, args: argparse.Namespace, *, out: TextIO) -> None:
    if current is None:
        print(f"no certificate in {args.out}", file=out)
    else:
        state = current.state
        print(f"serial {current.serial}", file=out)
        if state is not None:
            print(f"issuer {state.server} (server id {state.server_id or 'unknown'}, method {state.method})", file=out)
        print(f"not before {when(current.not_before)}", file=out)
        print(f"not after {when(current.not_after)}", file=out)
        print(f"renew after {when(_renew_after(current))}", file=out)
    if verdict.state == "denied" and verdict.denial is not None:
        denial = verdict.denial
        print(
            f"DENIED: the issuer denies this machine's identity (said at {when(denial.at)}, request "
            f"{denial.request_id or 'unknown'}: {denial.detail})",
            file=out,
        )
    elif verdict.state == "revoked" and verdict.revocation is not None:
        revoked = verdict.revocation
        print(
            f"REVOKED at {revoked.revoked_at or 'an unknown time'} (reason {revoked.reason or 'unspecified'})", file=out
        )
    elif verdict.state == "expired" and current is not None:
        print(f"EXPIRED at {when(current.not_after)}", file=out)
    elif verdict.state == "not_yet_valid" and current is not None:
        print(f"NOT YET VALID until {when(current.not_before)}", file=out)
    elif verdict.state == "valid":
        print("valid" + (" (not on the issuer's revocation list)" if verdict.issuer_checked else ""), file=out)
