"""``issuer ca add-root | retire-root``: side-by-side root rotation.

Registered under ``issuer ca`` by :mod:`issuer.cli.ca` after :mod:`issuer.cli.ca.rotation`, whose
``rotate --root`` certifies issuing CAs under a root added here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from issuer.cli.database import ensure_schema, now
from issuer.cli.errors import fail
from issuer.cli.operator import audited
from issuer.durations import format_duration
from issuer.settings import Settings

__all__ = ["add_parsers"]

_ADD_ROOT = """\
Register a root made elsewhere (openssl, an HSM, another `issuer ca init`) as a second trust
anchor: both roots are in GET /v1/bundle and GET /v1/truststore from now on (side-by-side root
rotation). With --key (an encrypted PKCS#8 key under the CA passphrase) `issuer ca rotate --root`
can certify issuing CAs under it.
"""


def add_parsers(ca: Any) -> None:
    """Add the root actions to the ``issuer ca`` sub-parsers."""
    raw = argparse.RawDescriptionHelpFormatter
    add_root = ca.add_parser(
        "add-root",
        help="register a second root (side-by-side root rotation)",
        description=_ADD_ROOT,
        formatter_class=raw,
        epilog="example: issuer ca add-root root-2027.pem --key /secure/root-2027.key.pem",
    )
    add_root.add_argument("pem", type=Path, metavar="PEM", help="the self-signed root certificate")
    add_root.add_argument("--key", type=Path, metavar="FILE", help="its key (encrypted PKCS#8, CA passphrase)")
    add_root.set_defaults(handler=cmd_add_root)

    retire_root = ca.add_parser(
        "retire-root",
        help="remove a root once no issuer under it is in use",
        description="Remove a root from the bundle and the truststore: the last step of a root rotation. "
        "Refused while it is the only root or an issuer under it is still in use.",
        epilog="example: issuer ca retire-root 9c67288e6feb69cf",
    )
    retire_root.add_argument("fingerprint", metavar="FINGERPRINT", help="the root (4+ hex digits of its SHA-256)")
    retire_root.set_defaults(handler=cmd_retire_root)


def cmd_add_root(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.ca.lifecycle import when
    from issuer.service.ca.roots import add_root
    from issuer.service.ca.setup import read_passphrase

    try:
        pem = args.pem.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {args.pem}: {exc.strerror}") from None
    ensure_schema(settings)
    done = audited(
        settings,
        "ca.add_root",
        {"pem": str(args.pem), "key": str(args.key) if args.key else None},
        lambda s: add_root(
            s,
            certificate_pem=pem,
            now=now(),
            ca_dir=settings.ca_dir,
            key_file=args.key,
            passphrase=lambda: read_passphrase(settings),
        ),
        summary=lambda done: f"registered root {done.root.subject} ({done.root.fingerprint_sha256[:16]})",
    )
    root = done.root
    print(f"Registered the root {root.subject}")
    print(f"  fingerprint:  {root.fingerprint_sha256}")
    print(f"  valid:        {when(root.not_before)} .. {when(root.not_after)}")
    print(f"  key:          {done.key_ref or 'none registered (it cannot certify issuers here)'}")
    print(
        "It is in GET /v1/bundle and GET /v1/truststore on every replica within "
        f"{format_duration(settings.registry_refresh)}."
    )
    print("Next: give clients the new bundle and upload the truststore to API Gateway; then")
    print(f"  issuer ca rotate --root {root.fingerprint_sha256[:16]}  (and activate) to issue under it.")
    return 0


def cmd_retire_root(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.ca.lifecycle import short
    from issuer.service.ca.roots import retire_root

    ensure_schema(settings)
    record = audited(
        settings,
        "ca.retire_root",
        {"fingerprint": args.fingerprint},
        lambda s: retire_root(s, fingerprint=args.fingerprint, now=now()),
        summary=lambda record: f"retired root {record.subject} ({short(record.fingerprint_sha256)})",
    )
    print(f"Retired the root {record.subject} ({short(record.fingerprint_sha256)}).")
    print("Next: upload the truststore again and give clients the new bundle (`issuer truststore export`).")
    return 0
