"""``issuer certs list | show``: issued certificates."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from typing import Any

from issuer.cli.database import ensure_schema, now, run, with_sessions
from issuer.cli.errors import fail
from issuer.cli.output import print_json, print_table
from issuer.durations import format_duration, parse_duration
from issuer.settings import Settings
from issuer.store.records import CertificateRecord, IdentityRecord


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
    clist.set_defaults(handler=cmd_list)
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
    cshow.set_defaults(handler=cmd_show)
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
    stale.set_defaults(handler=cmd_stale)
    history = certs.add_parser(
        "history",
        help="a principal's certificates and renewal chains",
        description="Every certificate of a principal (instance id, canonical ARN or token name), oldest first, "
        "with the certificate each renewal replaced.",
        epilog="example: issuer certs history i-0abc123def4567890",
    )
    history.add_argument("principal")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=cmd_history)


def as_json(cert: CertificateRecord, ident: IdentityRecord) -> dict[str, object]:
    return {
        "serial": cert.serial,
        "status": cert.status,
        "method": cert.method,
        "role": cert.role,
        "principal": ident.principal,
        "account_id": ident.account_id,
        "subject": cert.subject,
        "sans": cert.sans,
        "key_type": cert.key_type,
        "not_before": cert.not_before,
        "not_after": cert.not_after,
        "revoked_at": cert.revoked_at,
        "revocation_reason": cert.revocation_reason,
        "fingerprint_sha256": cert.fingerprint_sha256,
        "created_at": cert.created_at,
        "request_id": cert.request_id,
    }


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.admin import operations as admin

    ensure_schema(settings)
    rows = run(
        with_sessions(
            settings,
            lambda s: admin.list_certificates(s, limit=args.limit, status=args.status, principal=args.principal),
        )
    )
    if args.json:
        print_json([as_json(c, i) for c, i in rows])
        return 0
    if not rows:
        print("No certificates issued yet.")
        return 0
    print_table(
        ("SERIAL", "STATUS", "METHOD", "ROLE", "NOT AFTER", "PRINCIPAL"),
        [
            (c.serial, c.status, c.method, c.role, c.not_after.isoformat(timespec="seconds"), i.principal)
            for c, i in rows
        ],
    )
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.admin import operations as admin

    ensure_schema(settings)
    cert, ident = run(with_sessions(settings, lambda s: admin.show_certificate(s, args.serial)))
    if args.pem:
        print(cert.certificate_pem, end="")
        return 0
    if args.json:
        print_json(as_json(cert, ident))
        return 0
    revoked = f" ({cert.revocation_reason} at {cert.revoked_at.isoformat()})" if cert.revoked_at else ""
    print(f"serial:      {cert.serial}")
    print(f"status:      {cert.status}{revoked}")
    print(f"subject:     {cert.subject}")
    print(f"SANs:        {', '.join(cert.sans)}")
    print(f"key:         {cert.key_type} (SPKI sha256 {cert.public_key_sha256})")
    print(f"valid:       {cert.not_before.isoformat()} .. {cert.not_after.isoformat()}")
    print(f"method/role: {cert.method} / {cert.role}")
    print(f"principal:   {ident.principal}" + (f" (account {ident.account_id})" if ident.account_id else ""))
    print(f"sha256:      {cert.fingerprint_sha256}")
    print(f"issued:      {cert.created_at.isoformat()} (request {cert.request_id})")
    return 0


def cmd_stale(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.admin import operations as admin

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
    ensure_schema(settings)
    moment = now()
    rows = run(
        with_sessions(
            settings,
            lambda s: admin.stale_certificates(
                s,
                now=moment,
                late_by=late,
                renew_fraction=settings.renew_fraction,
                include_expired=args.include_expired,
            ),
        )
    )

    def renew_after(cert: CertificateRecord) -> datetime:
        return cert.created_at + (cert.not_after - cert.created_at) * settings.renew_fraction

    if args.json:
        print_json(
            [
                {
                    **as_json(c, i),
                    "renew_after": renew_after(c),
                    "seconds_late": int((moment - renew_after(c)).total_seconds()),
                    "seconds_left": int((c.not_after - moment).total_seconds()),
                }
                for c, i in rows
            ]
        )
        return 1 if rows else 0
    beyond = f" by more than {format_duration(late)}" if late else ""
    if not rows:
        print(f"No certificate is past its renewal point{beyond} without a successor.")
        return 0
    print_table(
        ("SERIAL", "ROLE", "RENEW AFTER", "NOT AFTER", "LEFT", "CHAIN SINCE", "PRINCIPAL"),
        [
            (
                c.serial,
                c.role,
                renew_after(c).isoformat(timespec="seconds"),
                c.not_after.isoformat(timespec="seconds"),
                _left(c.not_after - moment),
                c.chain_started_at.isoformat(timespec="seconds"),
                i.principal,
            )
            for c, i in rows
        ],
    )
    print(f"{len(rows)} certificate(s) past their renewal point{beyond} with no successor.")
    return 1


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.admin import operations as admin

    ensure_schema(settings)
    rows = run(with_sessions(settings, lambda s: admin.certificate_history(s, principal=args.principal)))
    if args.json:
        print_json(
            [
                {
                    "serial": c.serial,
                    "status": c.status,
                    "role": c.role,
                    "renewed_from": renewed,
                    "not_before": c.not_before,
                    "not_after": c.not_after,
                    "chain_started_at": c.chain_started_at,
                    "revoked_at": c.revoked_at,
                    "created_at": c.created_at,
                }
                for c, renewed in rows
            ]
        )
        return 0
    if not rows:
        raise fail(f"no certificates for principal {args.principal!r}", code="principal_not_found")
    print_table(
        ("ISSUED", "SERIAL", "STATUS", "ROLE", "NOT AFTER", "HOW"),
        [
            (
                c.created_at.isoformat(timespec="seconds"),
                c.serial,
                c.status,
                c.role,
                c.not_after.isoformat(timespec="seconds"),
                f"renewed {renewed}" if renewed else f"attested ({c.method})",
            )
            for c, renewed in rows
        ],
    )
    return 0


def _left(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "expired"
    return format_duration(timedelta(seconds=seconds - seconds % 60 or seconds))
