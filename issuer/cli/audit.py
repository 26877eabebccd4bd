"""``issuer audit``: read the audit trail; ``issuer whoami``: who the admin API takes you for."""

from __future__ import annotations

import argparse
from typing import Any

from issuer.cli import audit_chain
from issuer.cli.operator import act, is_remote
from issuer.cli.output import print_json, print_table, seconds
from issuer.settings import Settings

__all__ = ["add_parser"]

_DESCRIPTION = """\
Read the audit trail, newest first: every attestation, issuance, renewal and refusal of machines,
and every operator action (method 'admin': the actor — an IAM ARN, or local:user@host — the action,
its arguments and how it ended). With an ACTION, work on the tamper-evident chain over the same
rows instead: `issuer audit verify` (was anything edited, deleted, inserted or reordered?),
`issuer audit anchor s3://BUCKET/PREFIX` (copy the signed checkpoints out of the database's reach),
`issuer audit seal` (seal and checkpoint now) — these run locally, next to the database.
"""


def add_parser(sub: Any) -> None:
    audit = sub.add_parser(
        "audit",
        help="read the audit trail",
        description=_DESCRIPTION,
        epilog="examples:\n  issuer audit --method admin --since 24h\n  issuer audit verify\n"
        "  issuer --server https://issuer.example.org audit --actor 'arn:aws:sts::123456789012:assumed-role/Ops/alice'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit.add_argument("--since", metavar="DURATION", help="only the last DURATION (1h, 7d)")
    audit.add_argument("--method", help="token, aws-ec2, aws-iam, renew, revoke, or admin (operators)")
    audit.add_argument("--outcome", choices=("success", "failure"))
    audit.add_argument("--actor", help="an operator (exact ARN, or local:user@host)")
    audit.add_argument("--action", help="an operator action (token.create; 'ca.*' for a family)")
    audit.add_argument("--principal", help="the identity attested or acted on")
    audit.add_argument("--request-id", help="one request")
    audit.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    audit.add_argument("--json", action="store_true", help="print JSON")
    audit.set_defaults(handler=cmd_audit, remote_ok=True)
    # The tamper-evident chain over the same rows: issuer audit verify | anchor | seal.
    audit_chain.add_actions(audit.add_subparsers(dest="audit_command", metavar="ACTION", required=False))

    whoami = sub.add_parser(
        "whoami",
        help="who the admin API takes you for, and your permissions",
        description="With --server: sign in with your AWS credentials and print the ARN the service sees "
        "and the permissions [[admins]] gives it. Locally: the local operator (every permission).",
        epilog="example: issuer whoami   (remotely: AWS_PROFILE=ops issuer --server https://issuer.example.org whoami)",
    )
    whoami.add_argument("--json", action="store_true", help="print JSON")
    whoami.set_defaults(handler=cmd_whoami, remote_ok=True)


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    arguments = {
        "since": args.since,
        "method": args.method,
        "outcome": args.outcome,
        "actor": args.actor,
        "action": args.action,
        "principal": args.principal,
        "request_id": args.request_id,
        "limit": args.limit,
    }
    rows = act(args, settings, "audit.query", {k: v for k, v in arguments.items() if v is not None})["entries"]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("No audit rows match.")
        return 0
    print_table(
        ("AT", "WHAT", "OUTCOME", "CODE", "WHO", "REQUEST", "DETAIL"),
        [
            (
                seconds(r["at"]),
                r["action"] or r["method"],
                r["outcome"],
                r["code"] or "-",
                r["actor"] or r["principal"] or "-",
                r["request_id"],
                _detail(r),
            )
            for r in rows
        ],
    )
    return 0


def _detail(row: dict[str, Any]) -> str:
    parts = [row["reason"] or ""]
    if row["certificate_serial"]:
        parts.append(f"serial {row['certificate_serial']}")
    if row["actor"] and row["principal"]:
        parts.append(f"on {row['principal']}")
    return "; ".join(p for p in parts if p)[:300]


def cmd_whoami(args: argparse.Namespace, settings: Settings) -> int:
    me = act(args, settings, "whoami", {})
    if args.json:
        print_json(me)
        return 0
    where = f"at {args.server}" if is_remote(args) else "locally (database access: every permission)"
    print(f"You are {me['actor']} {where}.")
    if me.get("canonical_arn") and me["canonical_arn"] != me["actor"]:
        print(f"Principal: {me['canonical_arn']} (account {me['account_id']})")
    print(f"Permissions: {', '.join(me['permissions']) or 'none'}")
    return 0
