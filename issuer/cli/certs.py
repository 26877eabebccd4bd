"""``issuer certs list | show | stale | history``: issued certificates."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from issuer.cli.errors import fail
from issuer.cli.operator import act
from issuer.cli.output import print_json, print_table, seconds
from issuer.durations import format_duration, parse_duration
from issuer.settings import Settings


def add_parser(sub: Any) -> None:
    certs = sub.add_parser("certs", help="issued certificates").add_subparsers(
        dest="certs_command", metavar="ACTION", required=True
    )
    clist = certs.add_parser(
        "list",
        help="list issued certificates",
        description="List issued certificates, newest first.",
        epilog="example: issuer certs list --status active --principal build-box-1 --json",
    )
    clist.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    clist.add_argument("--status", choices=("active", "revoked", "superseded"))
    clist.add_argument("--principal", help="only this principal (instance id, ARN, token name)")
    clist.add_argument("--json", action="store_true", help="print JSON")
    clist.set_defaults(handler=cmd_list, remote_ok=True)
    cshow = certs.add_parser(
        "show",
        help="show one certificate",
        description="Show one certificate by serial, as we print it or as openssl does "
        "(leading zeros, colons and upper case are fine).",
        epilog="example: issuer certs show 5D:60:CE:9D:...",
    )
    cshow.add_argument("serial")
    output = cshow.add_mutually_exclusive_group()
    output.add_argument("--pem", action="store_true", help="print the PEM only")
    output.add_argument("--json", action="store_true", help="print JSON")
    cshow.set_defaults(handler=cmd_show, remote_ok=True)
    stale = certs.add_parser(
        "stale",
        help="certificates past their renewal point with no successor (missed rotations)",
        description="List active certificates (not renewed, not revoked) still unrenewed more than --late "
        "after their own renewal point (the renew_after their machine was given: issue time plus "
        "renew_fraction of the lifetime), soonest expiry first: machines whose rotation did not happen. "
        "Healthy certificates, however short-lived, are never listed. Exit status 1 when there are any "
        "(for monitoring).",
        epilog="example: issuer certs stale --late 10m --json",
    )
    stale.add_argument(
        "--late", help="how long past its renewal point a certificate may still be (default: not at all)"
    )
    # The fixed horizon it replaced listed every healthy certificate shorter than the horizon.
    stale.add_argument("--within", help=argparse.SUPPRESS)
    stale.add_argument("--include-expired", action="store_true", help="also list ones that already expired")
    stale.add_argument("--json", action="store_true", help="print JSON")
    stale.set_defaults(handler=cmd_stale, remote_ok=True)
    history = certs.add_parser(
        "history",
        help="a principal's certificates and renewal chains",
        description="Every certificate of a principal (instance id, canonical ARN or token name), oldest first, "
        "with the certificate each renewal replaced.",
        epilog="example: issuer certs history i-0abc123def4567890",
    )
    history.add_argument("principal")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=cmd_history, remote_ok=True)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    arguments = {"limit": args.limit, "status": args.status, "principal": args.principal}
    rows = act(args, settings, "certs.list", arguments)["certificates"]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("No certificates issued yet.")
        return 0
    print_table(
        ("SERIAL", "STATUS", "METHOD", "ROLE", "NOT AFTER", "PRINCIPAL"),
        [(c["serial"], c["status"], c["method"], c["role"], seconds(c["not_after"]), c["principal"]) for c in rows],
    )
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    cert = act(args, settings, "certs.show", {"serial": args.serial})
    if args.pem:
        print(cert["certificate_pem"], end="")
        return 0
    if args.json:
        print_json(cert)
        return 0
    revoked = f" ({cert['revocation_reason']} at {cert['revoked_at']})" if cert["revoked_at"] else ""
    account = f" (account {cert['account_id']})" if cert["account_id"] else ""
    print(f"serial:      {cert['serial']}")
    print(f"status:      {cert['status']}{revoked}")
    print(f"subject:     {cert['subject']}")
    print(f"SANs:        {', '.join(cert['sans'])}")
    print(f"key:         {cert['key_type']} (SPKI sha256 {cert['public_key_sha256']})")
    print(f"valid:       {cert['not_before']} .. {cert['not_after']}")
    print(f"method/role: {cert['method']} / {cert['role']}")
    print(f"principal:   {cert['principal']}{account}")
    print(f"sha256:      {cert['fingerprint_sha256']}")
    print(f"issued:      {cert['created_at']} (request {cert['request_id']})")
    return 0


def cmd_stale(args: argparse.Namespace, settings: Settings) -> int:
    if args.within is not None:
        raise fail(
            "--within is gone: a fixed horizon flags healthy short-lived certificates; "
            "`certs stale` now measures each certificate from its own renewal point (see --late)",
            code="usage",
            exit_status=2,
        )
    try:
        late = parse_duration(args.late) if args.late is not None else timedelta(0)
    except ValueError as exc:
        raise fail(f"--late: {exc}", code="config_invalid", exit_status=2) from None
    arguments = {"late": args.late, "include_expired": args.include_expired}
    rows = act(args, settings, "certs.stale", {k: v for k, v in arguments.items() if v is not None})["certificates"]
    if args.json:
        print_json(rows)
        return 1 if rows else 0
    beyond = f" by more than {format_duration(late)}" if late else ""
    if not rows:
        print(f"No certificate is past its renewal point{beyond} without a successor.")
        return 0
    print_table(
        ("SERIAL", "ROLE", "RENEW AFTER", "NOT AFTER", "LEFT", "CHAIN SINCE", "PRINCIPAL"),
        [
            (
                c["serial"],
                c["role"],
                seconds(c["renew_after"]),
                seconds(c["not_after"]),
                _left(timedelta(seconds=c["seconds_left"])),
                seconds(c["chain_started_at"]),
                c["principal"],
            )
            for c in rows
        ],
    )
    print(f"{len(rows)} certificate(s) past their renewal point{beyond} with no successor.")
    return 1


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    rows = act(args, settings, "certs.history", {"principal": args.principal})["certificates"]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        raise fail(f"no certificates for principal {args.principal!r}", code="principal_not_found")
    print_table(
        ("ISSUED", "SERIAL", "STATUS", "ROLE", "NOT AFTER", "HOW"),
        [
            (
                seconds(c["created_at"]),
                c["serial"],
                c["status"],
                c["role"],
                seconds(c["not_after"]),
                f"renewed {c['renewed_from']}" if c["renewed_from"] else f"attested ({c['method']})",
            )
            for c in rows
        ],
    )
    return 0


def _left(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    if total <= 0:
        return "expired"
    return format_duration(timedelta(seconds=total - total % 60 or total))
