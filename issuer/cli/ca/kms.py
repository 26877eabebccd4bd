"""The AWS KMS options of ``issuer ca init`` and ``issuer ca rotate``, and ``ca init`` around a KMS key.

Registered by :mod:`issuer.cli.ca.init` and :mod:`issuer.cli.ca.rotation`. The KMS client is boto3's
with the default credential chain; ``AWS_ENDPOINT_URL_KMS`` / ``AWS_ENDPOINT_URL`` apply.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ca.kms_x509 import KMS_KEY_SPECS
from issuer.cli.ca.root_crl import sign_first_root_crls
from issuer.cli.database import ensure_schema, now, run, with_sessions
from issuer.cli.errors import fail
from issuer.durations import format_duration, parse_duration
from issuer.settings import Settings

__all__ = ["add_init_options", "add_rotate_options", "cmd_init_kms", "rotate_choice", "wants_kms"]

_POLICY_HINT = "kms:Sign and kms:GetPublicKey on {arn}"


def _spec(parser: Any, flag: str, default: str, what: str) -> None:
    parser.add_argument(
        flag, choices=KMS_KEY_SPECS, default=default, metavar="SPEC", help=f"{what} ({', '.join(KMS_KEY_SPECS)})"
    )


def add_init_options(init: Any) -> None:
    """``--issuing-kms-key`` / ``--create-kms-key`` and the root's KMS options on ``issuer ca init``."""
    group = init.add_argument_group(
        "AWS KMS", "keep the issuing key (and optionally the root key) in AWS KMS: no issuing key file, no passphrase"
    )
    issuing = group.add_mutually_exclusive_group()
    issuing.add_argument("--issuing-kms-key", metavar="KEY", help="existing key: key id, key ARN or alias/NAME")
    issuing.add_argument("--create-kms-key", metavar="ALIAS", help="create an issuing key with this alias")
    _spec(group, "--kms-key-spec", "ECC_NIST_P256", "spec of a created issuing key, default ECC_NIST_P256")
    root = group.add_mutually_exclusive_group()
    root.add_argument("--root-kms-key", metavar="KEY", help="root key in KMS too (default: a local file key)")
    root.add_argument("--create-root-kms-key", metavar="ALIAS", help="create a root key in KMS with this alias")
    _spec(group, "--root-kms-key-spec", "ECC_NIST_P384", "spec of a created root key, default ECC_NIST_P384")
    group.add_argument("--kms-region", metavar="REGION", help="region of keys not given as ARNs (default AWS_REGION)")


def add_rotate_options(rotate: Any) -> None:
    """``--kms-key`` / ``--create-kms-key`` on ``issuer ca rotate``."""
    group = rotate.add_argument_group("AWS KMS", "the new issuer's key in AWS KMS (no key file, no passphrase)")
    key = group.add_mutually_exclusive_group()
    key.add_argument("--kms-key", metavar="KEY", help="existing key: key id, key ARN or alias/NAME")
    key.add_argument("--create-kms-key", metavar="ALIAS", help="create a key with this alias")
    _spec(group, "--kms-key-spec", "ECC_NIST_P256", "spec of a created key, default ECC_NIST_P256")
    group.add_argument("--kms-region", metavar="REGION", help="region of keys not given as ARNs (default AWS_REGION)")


def wants_kms(args: argparse.Namespace) -> bool:
    """True when ``issuer ca init`` was given any KMS key option (a root in KMS alone is refused later)."""
    names = ("issuing_kms_key", "create_kms_key", "root_kms_key", "create_root_kms_key")
    return any(getattr(args, name, None) for name in names)


def rotate_choice(args: argparse.Namespace) -> Any:
    """The :class:`~issuer.service.ca.kms.KmsKeyChoice` of ``issuer ca rotate``, or None for a key file."""
    from issuer.service.ca.kms import KmsKeyChoice

    if args.kms_key:
        return KmsKeyChoice(key_id=args.kms_key)
    if args.create_kms_key:
        return KmsKeyChoice(create_alias=args.create_kms_key, key_spec=args.kms_key_spec)
    return None


def cmd_init_kms(args: argparse.Namespace, settings: Settings) -> int:
    """``issuer ca init`` with the issuing key in AWS KMS."""
    from issuer.aws.kms import KmsClients
    from issuer.cli.ca.guards import refuse_second_init
    from issuer.service.ca.kms import KmsKeyChoice, init_kms_ca

    if (args.root_kms_key or args.create_root_kms_key) and not (args.issuing_kms_key or args.create_kms_key):
        raise fail(
            "a root in KMS needs the issuing key in KMS too: add --issuing-kms-key or --create-kms-key",
            code="usage",
            exit_status=2,
        )
    try:
        root_td, issuing_td = parse_duration(args.root_validity), parse_duration(args.issuing_validity)
    except ValueError as exc:
        raise fail(str(exc), code="config_invalid", exit_status=2) from None
    issuing = (
        KmsKeyChoice(key_id=args.issuing_kms_key)
        if args.issuing_kms_key
        else KmsKeyChoice(create_alias=args.create_kms_key, key_spec=args.kms_key_spec)
    )
    root = None
    if args.root_kms_key:
        root = KmsKeyChoice(key_id=args.root_kms_key)
    elif args.create_root_kms_key:
        root = KmsKeyChoice(create_alias=args.create_root_kms_key, key_spec=args.root_kms_key_spec)
    ensure_schema(settings)
    refuse_second_init(settings, instead="rotate the issuing CA instead (`issuer ca rotate --kms-key`)")
    passphrase, generated = (None, None) if root is not None else _root_passphrase(settings)
    print(f"Asking AWS KMS for the issuing key {issuing.name}" + (f" and the root key {root.name}" if root else ""))
    done = run(
        with_sessions(
            settings,
            lambda s: init_kms_ca(
                s,
                ca_dir=settings.ca_dir,
                kms=KmsClients(region=args.kms_region),
                issuing=issuing,
                root=root,
                passphrase=passphrase,
                now=now(),
                root_validity=root_td,
                issuing_validity=issuing_td,
                trust_domain=settings.trust_domain,
                organization=args.organization,
                force=args.force,
            ),
        )
    )
    arn = done.issuing_key_ref.removeprefix("kms:")
    print(f"Created a root CA and an issuing CA whose key is in AWS KMS; certificates in {settings.ca_dir}")
    print(f"  root:    {settings.ca_dir / 'root.pem'} (valid {format_duration(root_td)}), key {done.root_key_ref}")
    print(f"  issuing: {settings.ca_dir / 'issuing.pem'} (valid {format_duration(issuing_td)}), key {arn}")
    for created in done.created_keys:
        print(f"  created KMS key {created}")
    print(f"  registered as the active issuer (fingerprint {done.registered.fingerprint_sha256[:16]}…)")
    sign_first_root_crls(settings)
    if generated:
        print(
            f"  passphrase: generated into {generated} (mode 0600), apart from the keys in {settings.ca_dir}; "
            "only the root key file uses it"
        )
    print("Next:")
    print("  replicas need no CA key file and no passphrase; give their role " + _POLICY_HINT.format(arn=arn))
    if root is None:
        print(f"  take {settings.ca_dir / 'root.key.pem'} (and its passphrase) offline; `issuer ca rotate` needs it")
    print("  issuer serve, then `issuer truststore export --out truststore.pem` for API Gateway")
    return 0


def _root_passphrase(settings: Settings) -> tuple[Callable[[], bytes], Path | None]:
    """How to get the passphrase of a local root key file; generated (0600) as `ca init` does when none is set."""
    from issuer.service.ca.setup import generate_passphrase_file, read_passphrase

    return (lambda: read_passphrase(settings)), generate_passphrase_file(settings)
