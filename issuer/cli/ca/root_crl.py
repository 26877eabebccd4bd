"""``issuer ca root-crl``: a CRL for a root kept offline — signed where its key is, or imported."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from issuer.cli.database import ensure_schema, now, run, with_sessions
from issuer.cli.errors import fail
from issuer.cli.output import print_json
from issuer.durations import parse_duration
from issuer.settings import Settings

__all__ = ["add_parsers", "sign_first_root_crls"]

_DESCRIPTION = """\
Every root needs a CRL: chain checkers (openssl verify -crl_check_all, nginx's ssl_crl, the Lambda
authorizer) check each CA of the chain and refuse every client when a root has none. A root whose
key is online (a file in the CA directory, or an AWS KMS key) needs nothing: the service signs its
CRL (7 days) and signs the next one when half of that is left.

For a root kept OFFLINE, bring its key for this command only (as for `issuer ca rotate`): it signs a
CRL valid for --next-update (default 180d) listing the retired issuing CAs under the root, stores
it, and every replica serves it in GET /v1/crls. Sign the next one before that date, and again
after every `issuer ca retire`. With --import, store a CRL made elsewhere (an HSM ceremony,
`openssl ca -gencrl`): it must be signed by a registered root and numbered above every CRL of that
root stored before.
"""
_EPILOG = """\
examples:
  issuer ca root-crl --key-file /media/vault/root.key.pem --out root-crl.pem
  issuer ca root-crl --root 3f1a9c0b --key-file root.key.pem --next-update 90d
  issuer ca root-crl --import root-2027-06.crl.pem
"""


def add_parsers(ca: Any) -> None:
    """Add ``root-crl`` to the ``issuer ca`` sub-parsers."""
    parser = ca.add_parser(
        "root-crl",
        help="sign (or import) the CRL of a root kept offline",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", metavar="FINGERPRINT", help="the root (default: the only active root)")
    parser.add_argument(
        "--key-file", type=Path, metavar="FILE", help="the root key, encrypted PKCS#8 under the CA passphrase"
    )
    parser.add_argument("--next-update", default="180d", metavar="DURATION", help="validity of the CRL (180d)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the CRL here (PEM)")
    parser.add_argument(
        "--import", dest="import_file", type=Path, metavar="FILE", help="store this CRL (PEM or DER) instead"
    )
    parser.add_argument("--json", action="store_true", help="print the stored CRL's facts as JSON")
    parser.set_defaults(handler=cmd_root_crl)


def cmd_root_crl(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.aws.kms import KmsClients
    from issuer.service.ca.setup import read_passphrase
    from issuer.service.revocation.root_ceremony import import_root_crl, sign_root_crl
    from issuer.service.revocation.root_crls import describe

    if args.import_file is not None and (args.key_file is not None or args.root is not None):
        raise fail("--import takes the root from the CRL itself; it goes without --root and --key-file", exit_status=2)
    try:
        validity = parse_duration(args.next_update)
    except ValueError as exc:
        raise fail(f"--next-update: {exc}", code="config_invalid", exit_status=2) from None
    ensure_schema(settings)
    if args.import_file is not None:
        try:
            data = args.import_file.read_bytes()
        except OSError as exc:
            raise fail(f"cannot read {args.import_file}: {exc.strerror}") from None
        crl = run(with_sessions(settings, lambda s: import_root_crl(s, data=data, now=now(), clock=now)))
        what = "Imported"
    else:
        print("Signing the root's CRL ...", file=sys.stderr if args.json else sys.stdout, flush=True)
        crl = run(
            with_sessions(
                settings,
                lambda s: sign_root_crl(
                    s,
                    root=args.root,
                    key_file=args.key_file,
                    ca_dir=settings.ca_dir,
                    passphrase=lambda: read_passphrase(settings),
                    kms=KmsClients(),
                    next_update=validity,
                    now=now(),
                    clock=now,
                ),
            )
        )
        what = "Signed"
    if args.out is not None:
        temporary = args.out.with_name(f".{args.out.name}.tmp")
        temporary.write_bytes(crl.pem)
        temporary.replace(args.out)
    if args.json:
        print_json(
            {
                "root_fingerprint_sha256": crl.root_fingerprint,
                "subject": crl.subject,
                "crl_number": crl.crl_number,
                "this_update": crl.this_update.isoformat(),
                "next_update": crl.next_update.isoformat(),
                "revoked": crl.revoked_count,
                "source": crl.source,
                "out": str(args.out) if args.out else None,
            }
        )
        return 0
    print(f"{what} {describe(crl)}")
    if args.out is not None:
        print(f"  written to {args.out}")
    before = (crl.next_update - timedelta(days=min(14, max((crl.next_update - now()).days // 2, 0)))).date()
    print(f"  every replica serves it in GET /v1/crls; sign the next one before {before.isoformat()}")
    return 0


def sign_first_root_crls(settings: Settings) -> None:
    """After ``issuer ca init``: sign each root's first CRL (its key is here now) and say so."""
    from issuer.aws.kms import KmsClients
    from issuer.service.ca.setup import read_passphrase
    from issuer.service.ca.signers import KeySigners
    from issuer.service.revocation.root_crls import current_root_crls

    keys = KeySigners(ca_dir=settings.ca_dir, passphrase=lambda: read_passphrase(settings), kms=KmsClients())
    crls = run(with_sessions(settings, lambda s: current_root_crls(s, load_signer=keys.root, clock=now)))
    for crl in crls:
        if crl is not None:
            print(
                f"  root CRL: number {crl.crl_number}, next update {crl.next_update:%Y-%m-%d}; the service signs the "
                "next ones while the root key is here (kept offline: `issuer ca root-crl` every few months)"
            )
