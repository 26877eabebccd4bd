"""``issuer ca init``: create the root and issuing CA (file keys here, KMS in :mod:`issuer.cli.ca.kms`);
the ``ca show`` parser (its command is in :mod:`issuer.cli.ca.status`)."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from pathlib import Path
from typing import Any

from issuer.cli.ca import kms as ca_kms
from issuer.cli.ca import pca as ca_pca
from issuer.cli.ca import status as status_cli
from issuer.cli.ca.guards import refuse_second_init
from issuer.cli.ca.root_crl import sign_first_root_crls
from issuer.cli.database import ensure_schema, now, run, with_sessions
from issuer.cli.errors import fail
from issuer.durations import format_duration, parse_duration
from issuer.settings import Settings


def add_parsers(ca: Any) -> None:
    """Add ``init`` and ``show`` to the ``issuer ca`` subcommands."""
    init = ca.add_parser(
        "init",
        help="create the root and issuing CA",
        description=_wrapped(
            "Create a root CA (ECDSA P-384) and an issuing CA (ECDSA P-256) in <state_dir>/ca, "
            "keys encrypted with the CA passphrase, and register them in the database as the active issuer. "
            "With --issuing-kms-key or --create-kms-key the issuing key is an AWS KMS key instead (registered "
            "as kms:<key ARN>; no issuing key file, and replicas need no passphrase); the root is then a local "
            "key file, or a KMS key too with --root-kms-key / --create-root-kms-key. With --aws-pca-arn an existing "
            "AWS Private CA is the issuing CA (registered as pca:<CA ARN>; its chain's root becomes the root). "
            "The CA passphrase never goes into the state directory: it comes from ISSUER_CA_PASSPHRASE, or the "
            "file named by --passphrase-file or ISSUER_CA_PASSPHRASE_FILE, else "
            "$XDG_CONFIG_HOME/issuer/ca-passphrase (~/.config/issuer/ca-passphrase); a missing file is generated "
            "(0600). Run `issuer migrate` first (the embedded SQLite default migrates itself)."
        ),
        epilog="examples:\n  issuer ca init --create-kms-key alias/issuer-ca --kms-key-spec ECC_NIST_P256\n"
        "  issuer ca init --aws-pca-arn arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/"
        "11111111-2222-3333-4444-555555555555",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--root-validity", default="3650d", help="root CA lifetime (default 3650d)")
    init.add_argument("--issuing-validity", default="365d", help="issuing CA lifetime (default 365d)")
    init.add_argument("--organization", help="O= in the CA subjects and leaves")
    init.add_argument(
        "--force", action="store_true", help="replace CA files on disk (only while the registry is still empty)"
    )
    init.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="PATH",
        help="read the CA passphrase from PATH, generating it there (0600) when missing; must be outside the "
        "state directory (default: ISSUER_CA_PASSPHRASE_FILE, else ~/.config/issuer/ca-passphrase)",
    )
    ca_kms.add_init_options(init)
    ca_pca.add_init_options(init)
    init.set_defaults(handler=cmd_init)
    show = ca.add_parser(
        "show",
        help="show the CA certificates",
        description="Show the registry's active issuing CA and roots (the registry decides what signs), the "
        "other issuing CAs with their phase, and which registry entry each file in <state_dir>/ca is.",
        epilog="example: issuer ca show",
    )
    show.set_defaults(handler=status_cli.cmd_show)
    adopt = ca.add_parser(
        "adopt",
        help="register the CA files in an empty database on purpose (a lost database)",
        description="Register the CA in <state_dir>/ca in this database's empty registry although it was "
        "registered in another database before — what `issuer serve` and `ca init` refuse to do on their own "
        "(`ca_registered_before`). Use it only when that database is gone for good: its revocations, join "
        "tokens, instance bindings and history are not in the files and stay lost, and certificates it "
        "issued keep verifying until they expire. Prefer restoring the database backup. An issuing CA the "
        "directory records as retired is never made active again: only the roots are registered then, and "
        "you rotate (`issuer ca rotate`, `issuer ca activate`).",
        epilog="example: issuer ca adopt --yes",
    )
    adopt.add_argument("--yes", action="store_true", help="confirm: the old database is lost and not coming back")
    adopt.set_defaults(handler=cmd_adopt)


def _wrapped(text: str) -> str:
    return textwrap.fill(text, width=100, break_on_hyphens=False)


def init_ca_files(
    settings: Settings, *, root_validity: str, issuing_validity: str, organization: str | None, force: bool
) -> None:
    """Create the CA files and register them; prints what it did."""
    from issuer.service.ca.register import register_file_ca
    from issuer.service.ca.setup import describe_passphrase, initialise_ca

    try:
        root_td, issuing_td = parse_duration(root_validity), parse_duration(issuing_validity)
    except ValueError as exc:
        raise fail(str(exc), code="config_invalid", exit_status=2) from None
    ensure_schema(settings)
    refuse_second_init(settings, instead="rotate the issuing CA instead (`issuer ca rotate`)")
    files, generated = initialise_ca(
        settings,
        now=now(),
        root_validity=root_td,
        issuing_validity=issuing_td,
        organization=organization,
        force=force,
    )
    registered = run(with_sessions(settings, lambda s: register_file_ca(s, ca_dir=settings.ca_dir, now=now())))
    print(f"Created a root CA and an issuing CA in {settings.ca_dir}")
    print(f"  root:    {files.root_cert_path} (valid {format_duration(root_td)})")
    print(f"  issuing: {files.issuing_cert_path} (valid {format_duration(issuing_td)})")
    if registered is not None:
        print(f"  registered as the active issuer (fingerprint {registered.fingerprint_sha256[:16]}…)")
    sign_first_root_crls(settings)
    print(f"  passphrase: {describe_passphrase(settings, generated=generated)}")


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    flag = args.passphrase_file
    if flag is not None:
        if settings.ca_passphrase is not None:
            raise fail("--passphrase-file and ISSUER_CA_PASSPHRASE both name the passphrase; give one", code="usage")
        settings = dataclasses.replace(settings, ca_passphrase_file=flag.absolute())
    if ca_pca.wants_pca(args):
        status = ca_pca.cmd_init_pca(args, settings)
    elif ca_kms.wants_kms(args):
        status = ca_kms.cmd_init_kms(args, settings)
    else:
        init_ca_files(
            settings,
            root_validity=args.root_validity,
            issuing_validity=args.issuing_validity,
            organization=args.organization,
            force=args.force,
        )
        print("Next: `issuer serve`, then `issuer truststore export --out truststore.pem` for API Gateway.")
        status = 0
    root_in_kms = bool(getattr(args, "root_kms_key", None) or getattr(args, "create_root_kms_key", None))
    if flag is not None and not root_in_kms and settings.ca_passphrase_file != settings.default_passphrase_file:
        print(
            f"Commands that need the CA key (`issuer serve` with file keys, `issuer ca rotate`) read the passphrase "
            f"with ISSUER_CA_PASSPHRASE_FILE={settings.ca_passphrase_file}"
        )
    return status


def cmd_adopt(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.cli.operator import audited
    from issuer.service.ca.register import adopt_file_ca

    if not args.yes:
        raise fail(
            "adopting registers these CA files without the database they belonged to (its revocations are lost); "
            "restore the database backup instead, or confirm with --yes",
            code="usage",
            exit_status=2,
        )
    ensure_schema(settings)
    done = audited(
        settings,
        "ca.adopt",
        {"ca_dir": str(settings.ca_dir)},
        lambda s: adopt_file_ca(s, ca_dir=settings.ca_dir, now=now()),
        summary=lambda done: (
            f"adopted {done.roots} root(s)"
            + (f" and issuer {done.issuer.fingerprint_sha256[:16]}" if done.issuer else "")
            + (f"; retired issuer {done.retired_issuer[:16]} left out" if done.retired_issuer else "")
        ),
    )
    print(f"Adopted the CA in {settings.ca_dir}: {done.roots} root(s) registered.")
    if done.issuer is not None:
        print(f"  active issuer: {done.issuer.subject} ({done.issuer.fingerprint_sha256[:16]}…)")
    if done.retired_issuer is not None:
        print(
            f"  not registered: the issuing CA {done.retired_issuer[:16]}… was retired; "
            "run `issuer ca rotate` then `issuer ca activate` to sign again"
        )
    print(
        "warning: the old database's revocations are not known here: revoke again what was revoked "
        "(`issuer revoke`), and re-create join tokens"
    )
    return 0
