"""``issuer instances list | reset``: EC2 trust-on-first-use bindings."""

from __future__ import annotations

import argparse
from typing import Any

from issuer.cli.operator import act
from issuer.cli.output import print_json, print_table, seconds
from issuer.settings import Settings


def add_parser(sub: Any) -> None:
    inst = sub.add_parser("instances", help="EC2 instance bindings (trust on first use)").add_subparsers(
        dest="instances_command", metavar="ACTION", required=True
    )
    ilist = inst.add_parser(
        "list",
        help="list bound instances",
        description="List EC2 instance bindings.",
        epilog="example: issuer instances list --limit 20 --json",
    )
    ilist.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ilist.add_argument("--json", action="store_true", help="print JSON")
    ilist.set_defaults(handler=cmd_list, remote_ok=True)
    ireset = inst.add_parser(
        "reset",
        help="forget an instance's binding",
        description="Forget an instance's binding so its next attestation is treated as the first "
        "(e.g. after its instance-nonce file was lost).",
        epilog="example: issuer instances reset i-0123456789abcdef0",
    )
    ireset.add_argument("instance_id")
    ireset.set_defaults(handler=cmd_reset, remote_ok=True)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = act(args, settings, "instances.list", {"limit": args.limit})["instances"]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("No EC2 instances bound yet.")
        return 0
    print_table(
        ("INSTANCE", "ACCOUNT", "REGION", "ROLE", "PENDING TIME", "BOUND"),
        [
            (
                b["instance_id"],
                b["account_id"],
                b["region"],
                b["role"],
                seconds(b["pending_time"]),
                seconds(b["bound_at"]),
            )
            for b in rows
        ],
    )
    return 0


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    act(args, settings, "instances.reset", {"instance_id": args.instance_id})
    print(f"Forgot the binding of {args.instance_id}; its next attestation is treated as the first.")
    return 0
