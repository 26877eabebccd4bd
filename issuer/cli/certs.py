"""``issuer certs list | show``: issued certificates."""

from __future__ import annotations

import argparse
from typing import Any

from issuer.cli.common import ensure_schema, print_json, print_table, run, with_sessions
from issuer.settings import Settings
from issuer.store.records import CertificateRecord, IdentityRecord


def add_parser(sub: Any) -> None:
    certs = sub.add_parser("certs", help="issued certificates").add_subparsers(
        dest="certs_command", metavar="ACTION", required=True
    )
    clist = certs.add_parser(
        "list", help="list issued certificates", description="List issued certificates, newest first."
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
    from issuer.service import admin

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
    from issuer.service import admin

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
