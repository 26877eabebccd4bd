"""``issuer instances list | reset``: EC2 trust-on-first-use bindings."""

from __future__ import annotations

import argparse
from typing import Any

from issuer.cli.database import ensure_schema, run, with_sessions
from issuer.cli.errors import fail
from issuer.cli.output import print_json, print_table
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
    ilist.set_defaults(handler=cmd_list)
    ireset = inst.add_parser(
        "reset",
        help="forget an instance's binding",
        description="Forget an instance's binding so its next attestation is treated as the first "
        "(e.g. after its instance-nonce file was lost).",
        epilog="example: issuer instances reset i-0123456789abcdef0",
    )
    ireset.add_argument("instance_id")
    ireset.set_defaults(handler=cmd_reset)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.admin import operations as admin

    ensure_schema(settings)
    rows = run(with_sessions(settings, lambda s: admin.list_instances(s, limit=args.limit)))
    if args.json:
        print_json(
            [
                {
                    "instance_id": b.instance_id,
                    "account_id": b.account_id,
                    "region": b.region,
                    "role": b.role,
                    "pending_time": b.pending_time,
                    "bound_at": b.created_at,
                    "updated_at": b.updated_at,
                }
                for b in rows
            ]
        )
        return 0
    if not rows:
        print("No EC2 instances bound yet.")
        return 0
    print_table(
        ("INSTANCE", "ACCOUNT", "REGION", "ROLE", "PENDING TIME", "BOUND"),
        [
            (
                b.instance_id,
                b.account_id,
                b.region,
                b.role,
                b.pending_time.isoformat(timespec="seconds"),
                b.created_at.isoformat(timespec="seconds"),
            )
            for b in rows
        ],
    )
    return 0


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.admin import operations as admin

    ensure_schema(settings)
    removed = run(with_sessions(settings, lambda s: admin.reset_instance(s, instance_id=args.instance_id)))
    if not removed:
        raise fail(f"no binding for instance {args.instance_id}", code="instance_not_found")
    print(f"Forgot the binding of {args.instance_id}; its next attestation is treated as the first.")
    return 0
