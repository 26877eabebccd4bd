"""``issuer truststore export``: the PEM file API Gateway's truststore must hold."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from issuer.cli.common import ensure_schema, now, run, with_sessions
from issuer.settings import Settings

_DESCRIPTION = """\
Write the truststore for API Gateway's mutual TLS: every issuing CA that may still have
unexpired leaves (the active one, then prepared ones), then the root(s). API Gateway looks
up the issuer of the client's leaf in this file and ignores intermediates the client sends,
so uploading only the root makes every client fail with 403. The same file is served at
GET /v1/truststore.
"""


def add_parser(sub: Any) -> None:
    group = sub.add_parser("truststore", help="API Gateway's truststore").add_subparsers(
        dest="truststore_command", metavar="ACTION", required=True
    )
    export = group.add_parser(
        "export",
        help="write the truststore PEM",
        description=_DESCRIPTION,
        epilog="example: issuer truststore export --out truststore.pem && "
        "aws s3 cp truststore.pem s3://my-bucket/truststore.pem",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (default: standard output)")
    export.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.registry import export_truststore

    ensure_schema(settings)
    pem = run(with_sessions(settings, lambda s: export_truststore(s, now=now())))
    count = pem.count(b"-----BEGIN CERTIFICATE-----")
    if args.out is None:
        sys.stdout.write(pem.decode())
        return 0
    temporary = args.out.with_name(f".{args.out.name}.tmp")
    temporary.write_bytes(pem)
    temporary.replace(args.out)
    print(f"Wrote {count} certificate(s) to {args.out}; upload it as the API Gateway truststore.")
    return 0
