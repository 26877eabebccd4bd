"""``issuer token create | list | revoke``: one-time join tokens."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from issuer.cli.errors import fail
from issuer.cli.operator import act
from issuer.cli.output import print_json, print_table, seconds
from issuer.durations import parse_duration
from issuer.settings import Settings


def add_parser(sub: Any) -> None:
    token = sub.add_parser("token", help="one-time join tokens").add_subparsers(
        dest="token_command", metavar="ACTION", required=True
    )
    create = token.add_parser(
        "create",
        help="create a join token (printed once)",
        description="Create a one-time join token for a machine with no AWS identity. "
        "The token is printed once and stored only as a hash.",
        epilog="example: issuer token create --role onprem --name build-box-1 --ttl 1h",
    )
    create.add_argument("--role", required=True, help="role the token issues for (must allow method 'token')")
    create.add_argument("--name", required=True, help="the machine's name (goes into the certificate)")
    create.add_argument("--ttl", default="1h", help="how long the token is usable (default 1h)")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=cmd_create, remote_ok=True)
    tlist = token.add_parser(
        "list",
        help="list unused tokens",
        description="List join tokens (never their text).",
        epilog="example: issuer token list --all --json",
    )
    tlist.add_argument("--all", action="store_true", help="include used, revoked and expired tokens")
    tlist.add_argument("--json", action="store_true", help="print JSON")
    tlist.set_defaults(handler=cmd_list, remote_ok=True)
    revoke = token.add_parser(
        "revoke",
        help="make an unused token unusable",
        description="Revoke the unused join token(s) with this name, e.g. one that leaked before it was used. "
        "A machine that presents it is refused with token_revoked.",
        epilog="example: issuer token revoke build-box-1",
    )
    revoke.add_argument("name", help="the token's name (as given to `token create --name`)")
    revoke.set_defaults(handler=cmd_revoke, remote_ok=True)


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        parse_duration(args.ttl)
    except ValueError as exc:
        raise fail(f"--ttl: {exc}", code="config_invalid", exit_status=2) from None
    created = act(args, settings, "token.create", {"role": args.role, "name": args.name, "ttl": args.ttl})
    if args.json:
        print_json(created)
        return 0
    print(created["token"])
    print(
        f"One-time join token for {created['name']!r} (role {created['role']}), valid until "
        f"{seconds(created['expires_at'])}. It is shown only this once.",
        file=sys.stderr,
    )
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = act(args, settings, "token.list", {"all": args.all})["tokens"]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("No join tokens." if args.all else "No unused join tokens.")
        return 0
    print_table(
        ("NAME", "ROLE", "CREATED", "EXPIRES", "USED"),
        [
            (
                t["name"],
                t["role"],
                seconds(t["created_at"]),
                seconds(t["expires_at"]),
                seconds(t["used_at"])
                if t["used_at"]
                else (f"revoked {seconds(t['revoked_at'])}" if t.get("revoked_at") else "-"),
            )
            for t in rows
        ],
    )
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    done = act(args, settings, "token.revoke", {"name": args.name})
    print(f"Revoked {done['revoked']} unused join token(s) named {args.name!r}; they can no longer be used.")
    return 0
