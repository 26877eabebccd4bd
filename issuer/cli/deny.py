"""``issuer deny (--principal P | --instance I | --account A) --reason R [--until T] [--revoke]``, ``deny list``,
``deny remove ID``: the deny list."""

from __future__ import annotations

import argparse
from typing import Any

from issuer.cli.errors import fail
from issuer.cli.operator import act
from issuer.cli.output import print_json, print_table, seconds
from issuer.settings import Settings

__all__ = ["add_parser"]

_DESCRIPTION = """\
Deny an identity: it can no longer attest (join token, EC2 identity document, IAM), renew or
bootstrap again — 403 identity_denied, audited — on every replica at once, until --until passes
or `issuer deny remove` lifts it. --revoke also revokes the live certificates it already holds
(reason privilegeWithdrawn), so they stop working at API Gateway too (through the CRL and the
revocation list the Lambda authorizer reads).

--principal is matched like role bindings: exact, or '*' for any run of characters, against the
verified principal (an IAM role or user ARN, an EC2 instance ID, a join token's name) and, for
IAM, the session ARN (arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION).
"""
_EPILOG = """\
examples:
  issuer deny --principal 'arn:aws:iam::123456789012:role/ci-*' --reason "CI compromised" --revoke
  issuer deny --instance i-0123456789abcdef0 --until 24h --reason "forensics"
  issuer deny --account 210987654321 --until 2027-01-31T00:00:00Z --reason "account closed"
  issuer deny list --all
  issuer deny remove 3
"""


def add_parser(sub: Any) -> None:
    deny = sub.add_parser(
        "deny",
        help="the deny list: identities that may not attest, renew or bootstrap",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = deny.add_mutually_exclusive_group()
    target.add_argument("--principal", metavar="PATTERN", help="an IAM ARN (pattern), instance ID or token name")
    target.add_argument("--instance", metavar="ID", help="an EC2 instance ID")
    target.add_argument("--account", metavar="ID", help="an AWS account ID: every identity in it")
    deny.add_argument("--reason", metavar="TEXT", help="why, for the record (required)")
    deny.add_argument("--until", metavar="TIME", help="until then (2027-01-31T00:00:00Z, or a duration: 24h)")
    deny.add_argument("--revoke", action="store_true", help="also revoke its live certificates")
    deny.add_argument("--json", action="store_true", help="print JSON")
    deny.set_defaults(handler=cmd_deny, remote_ok=True)
    actions = deny.add_subparsers(dest="deny_command", metavar="ACTION")
    dlist = actions.add_parser(
        "list",
        help="list denials in force",
        description="List the deny list.",
        epilog="example: issuer deny list --all --json",
    )
    dlist.add_argument("--all", action="store_true", help="also expired and removed denials")
    dlist.add_argument("--json", action="store_true", help="print JSON")
    dlist.set_defaults(handler=cmd_list, remote_ok=True)
    remove = actions.add_parser(
        "remove",
        help="lift a denial",
        description="Lift a denial (it stays on the record, marked removed).",
        epilog="example: issuer deny remove 3",
    )
    remove.add_argument("id", help="the denial's number (`issuer deny list`)")
    remove.add_argument("--json", action="store_true", help="print JSON")
    remove.set_defaults(handler=cmd_remove, remote_ok=True)


def cmd_deny(args: argparse.Namespace, settings: Settings) -> int:
    given = {k: getattr(args, k) for k in ("principal", "instance", "account") if getattr(args, k) is not None}
    if len(given) != 1:
        raise fail("say what to deny: --principal, --instance or --account (or: deny list, deny remove)", exit_status=2)
    if not args.reason:
        raise fail("--reason is required: say why, for the record", code="reason_missing", exit_status=2)
    arguments = {**given, "reason": args.reason, "until": args.until, "revoke": args.revoke}
    done = act(args, settings, "deny.add", {k: v for k, v in arguments.items() if v is not None})
    if args.json:
        print_json(done)
        return 0
    denial = done["denial"]
    until = f"until {seconds(denial['until'])}" if denial["until"] else "until removed"
    print(f"Denied {denial['kind']} {denial['value']} {until} (denial #{denial['id']}).")
    print("It cannot attest, renew or bootstrap on any replica from now on (403 identity_denied).")
    if args.revoke:
        revoked = done["revoked"]
        if revoked:
            print(f"Revoked {len(revoked)} live certificate(s) it held (privilegeWithdrawn):")
            print_table(("SERIAL", "ROLE", "NOT AFTER", "PRINCIPAL"), [_row(c) for c in revoked])
        else:
            print("It held no live certificate to revoke.")
    else:
        print("Certificates it already holds keep working until they expire; --revoke revokes them.")
    print(f"Lift it with `issuer deny remove {denial['id']}`.")
    return 0


def _row(c: dict[str, Any]) -> tuple[str, ...]:
    return (c["serial"], c["role"], seconds(c["not_after"]), c["principal"])


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = act(args, settings, "deny.list", {"all": args.all})["denials"]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("The deny list is empty." if args.all else "No denial is in force.")
        return 0
    print_table(
        ("ID", "KIND", "UNTIL", "STATE", "BY", "VALUE", "REASON"),
        [
            (
                d["id"],
                d["kind"],
                seconds(d["until"]) if d["until"] else "-",
                "in force" if d["in_force"] else ("removed" if d["removed_at"] else "expired"),
                d["created_by"],
                d["value"],
                d["reason"],
            )
            for d in rows
        ],
    )
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    if not args.id.isdigit():
        raise fail(f"{args.id!r} is not a denial number (see `issuer deny list`)", exit_status=2)
    done = act(args, settings, "deny.remove", {"id": args.id})
    if args.json:
        print_json(done)
        return 0
    denial = done["denial"]
    print(f"Removed denial #{denial['id']} ({denial['kind']} {denial['value']}); it may attest again.")
    return 0
