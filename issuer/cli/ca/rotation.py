"""``issuer ca rotate | activate | retire | status``: issuing-CA rotation with overlap.

Registered under ``issuer ca`` by :mod:`issuer.cli.ca.init`. Every replica follows the registry
within ``[issuer] registry_refresh``; only ``rotate`` needs the root key. A second root is
registered and retired by :mod:`issuer.cli.ca.roots`.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from issuer.cli.ca import kms as ca_kms
from issuer.cli.ca import pca as ca_pca
from issuer.cli.ca import remote as ca_remote
from issuer.cli.ca import status as ca_status
from issuer.cli.ca.publish import (
    activation_gate,
    add_publish_options,
    check_publish_options,
    publish,
    say_published,
)
from issuer.cli.database import ensure_schema, now
from issuer.cli.errors import fail
from issuer.cli.operator import audited, is_remote, options_of
from issuer.cli.output import print_json
from issuer.durations import format_duration, parse_duration
from issuer.settings import Settings

__all__ = ["add_parsers"]

_ROTATE = """\
Prepare a new issuing CA (ECDSA P-256) under a registered root, its key encrypted with the CA
passphrase in <state_dir>/ca/issuing-<fingerprint>.key.pem. It is 'prepared': every replica puts
it in GET /v1/truststore within [issuer] registry_refresh, but nothing is signed with it until
`issuer ca activate`. This is the only command that needs the root key (root.key.pem); bring it
back for this command and take it offline again afterwards.

With --kms-key or --create-kms-key the new issuer's key is an AWS KMS key instead: registered as
kms:<key ARN>, no key file written, nothing to copy to replicas, no passphrase needed unless the
root key is a file. A root whose key is in KMS (`ca init --root-kms-key`) signs through KMS.

With --aws-pca-arn the new issuer is an existing AWS Private CA instead: its certificate and chain
come from Private CA (no root key needed; --validity is the CA's own), its root is registered as a
trust anchor when it is not yet, and replicas sign through Private CA.

A validity shorter than the longest role max_ttl is refused (leaves never outlive their issuer).
"""
_ACTIVATE = """\
Switch signing to a prepared issuer on every replica (within [issuer] registry_refresh). The
issuer active before stays in the truststore, so its leaves keep working until they expire.

API Gateway checks client certificates against ITS truststore (the S3 object), not against this
service: upload the truststore that holds the new issuer (`issuer truststore publish`) and let the
domain pick it up BEFORE activating, or new leaves are refused with 403. With --publish this
command publishes first and switches only if S3 (and --domain) already held that truststore;
otherwise it stops, and the same command run again once the domain uses it switches. With
--domain NAME --api rest|http (with or without --publish) it reads what the domain really serves
(API Gateway's truststore URI and pinned version, then that object version from S3) and refuses
until it holds the new issuer (--force to override).

Refuses an issuer that expires within the longest role max_ttl (its leaves would be cut short)
unless --force. Naming the fingerprint of the previous issuer rolls back to it.
"""
_RETIRE = """\
Take an issuing CA out of the truststore for good, once its last leaf has expired. Refused while
leaves are still live (it says how many, and when the last expires) unless --force, and always
for the active issuer. Then upload the truststore again.
"""
_STATUS = """\
Every issuing CA (phase, fingerprint, validity, key, leaves issued/live, last live leaf) and
every root (where its key is: here, offline, none), then what needs doing. Warns when the active
issuer or a root expires within --warn-within (default 30d). Exit 0; with --check, exit 1 when
there is such a warning (for monitoring).
"""


def add_parsers(ca: Any) -> None:
    """Add the rotation actions to the ``issuer ca`` sub-parsers."""
    raw = argparse.RawDescriptionHelpFormatter
    rotate = ca.add_parser(
        "rotate",
        help="prepare a new issuing CA (needs the root key)",
        description=_ROTATE,
        formatter_class=raw,
        epilog="example: issuer ca rotate --validity 180d",
    )
    rotate.add_argument("--validity", default="365d", help="lifetime of the new issuing CA (default 365d)")
    rotate.add_argument("--common-name", metavar="CN", help="default: '<trust_domain> Issuing CA <date>'")
    rotate.add_argument("--root", metavar="FINGERPRINT", help="the root to certify it (default: the newest with a key)")
    rotate.add_argument("--force", action="store_true", help="replace a prepared issuer that never signed")
    rotate.add_argument("--json", action="store_true", help="print the new issuer as JSON")
    add_publish_options(rotate)
    ca_kms.add_rotate_options(rotate)
    ca_pca.add_rotate_options(rotate)
    rotate.set_defaults(handler=cmd_rotate, remote_ok=True)

    activate = ca.add_parser(
        "activate",
        help="switch signing to a prepared issuer",
        description=_ACTIVATE,
        formatter_class=raw,
        epilog="example: issuer ca activate --publish s3://truststores/api.pem --domain api.example.com --api rest",
    )
    activate.add_argument("fingerprint", nargs="?", metavar="FINGERPRINT", help="default: the only prepared issuer")
    activate.add_argument(
        "--force",
        action="store_true",
        help="activate even if it expires within the max TTL, --publish had to upload just now, "
        "or --domain does not serve it yet",
    )
    add_publish_options(activate)
    activate.set_defaults(handler=cmd_activate, remote_ok=True)

    retire = ca.add_parser(
        "retire",
        help="remove an old issuing CA from the truststore",
        description=_RETIRE,
        formatter_class=raw,
        epilog="example: issuer ca retire 3f1a9c0b27d4e5f6",
    )
    retire.add_argument("fingerprint", metavar="FINGERPRINT", help="the issuer (4+ hex digits of its SHA-256)")
    retire.add_argument("--force", action="store_true", help="retire even though leaves are still live")
    add_publish_options(retire)
    retire.set_defaults(handler=cmd_retire, remote_ok=True)

    status = ca.add_parser(
        "status",
        help="issuers, roots, leaves and expiry warnings",
        description=_STATUS,
        formatter_class=raw,
        epilog="example: issuer ca status --check --warn-within 45d",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--check", action="store_true", help="exit 1 when something expires within the window")
    status.add_argument("--warn-within", default="30d", metavar="DURATION", help="expiry warning window (30d)")
    status.set_defaults(handler=ca_status.cmd_status, remote_ok=True)


def _max_ttl(settings: Settings) -> timedelta:
    return max((r.max_ttl for r in settings.roles), default=timedelta(0))


def _duration(text: str, option: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise fail(f"{option}: {exc}", code="config_invalid", exit_status=2) from None


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.aws.kms import KmsClients
    from issuer.service.ca.lifecycle import short, when
    from issuer.service.ca.rotation import rotate_issuer
    from issuer.service.ca.setup import read_passphrase

    check_publish_options(args)
    if is_remote(args):
        return ca_remote.cmd_rotate(args, settings)
    if ca_pca.wants_pca(args):
        return ca_pca.cmd_rotate_pca(args, settings, publish_after=_publish_after)
    validity = _duration(args.validity, "--validity")
    ensure_schema(settings)
    done = audited(
        settings,
        "ca.rotate",
        options_of(args, "validity", "common_name", "root", "force", "kms_key", "create_kms_key", "kms_region"),
        lambda s: rotate_issuer(
            s,
            ca_dir=settings.ca_dir,
            passphrase=lambda: read_passphrase(settings),
            now=now(),
            validity=validity,
            min_validity=_max_ttl(settings),
            trust_domain=settings.trust_domain,
            common_name=args.common_name,
            root=args.root,
            force=args.force,
            kms_key=ca_kms.rotate_choice(args),
            kms=KmsClients(region=args.kms_region),
        ),
        summary=lambda done: (
            f"prepared issuer {done.issuer.subject} ({short(done.issuer.fingerprint_sha256)}), "
            f"key {done.issuer.key_ref}"
        ),
    )
    new = done.issuer
    if args.json:
        print_json(
            {
                "fingerprint_sha256": new.fingerprint_sha256,
                "subject": new.subject,
                "state": new.state,
                "not_before": new.not_before.isoformat(),
                "not_after": new.not_after.isoformat(),
                "key_ref": new.key_ref,
                "root_fingerprint_sha256": done.root.fingerprint_sha256,
                "replaced": [r.fingerprint_sha256 for r in done.replaced],
            }
        )
        _publish_after(args, settings, quiet=True)
        return 0
    refresh = format_duration(settings.registry_refresh)
    print("Prepared a new issuing CA (in the truststore now, not signing yet):")
    print(f"  subject:      {new.subject}")
    print(f"  fingerprint:  {new.fingerprint_sha256}")
    days = (new.not_after - new.not_before).days  # the 5-minute backdate would make an odd duration
    print(f"  valid:        {when(new.not_before)} .. {when(new.not_after)} ({days} days)")
    print(f"  root:         {done.root.subject} ({short(done.root.fingerprint_sha256)})")
    print(f"  key:          {done.key_path or new.key_ref}")
    if done.created_kms_key:
        print(f"  created:      KMS key {done.created_kms_key}")
    for old in done.replaced:
        print(f"  replaced:     {old.subject} ({short(old.fingerprint_sha256)}), prepared but never active: retired")
    print(f"Every replica serves it in GET /v1/truststore within {refresh}.")
    published = _publish_after(args, settings)
    print("Next:")
    if done.key_path is not None:
        print(f"  1. copy {done.key_path.name} into every replica's CA directory (if they do not share this one)")
    else:
        arn = new.key_ref.removeprefix("kms:")
        print(f"  1. nothing to copy: replicas sign in KMS; their role needs kms:Sign and kms:GetPublicKey on {arn}")
    if published:
        print("  2. wait until API Gateway uses the published truststore (the domain's status is AVAILABLE)")
    else:
        print("  2. issuer truststore export --out truststore.pem, upload it as API Gateway's truststore,")
        print("     and wait until the domain uses it (or: issuer truststore publish s3://BUCKET/KEY)")
    again = f" --publish {args.publish}" if args.publish else ""
    print(f"  3. issuer ca activate {short(new.fingerprint_sha256)}{again}")
    print("The root key is not needed again until the next rotation: take it offline.")
    return 0


def _publish_after(args: argparse.Namespace, settings: Settings, *, quiet: bool = False) -> bool:
    """Publish after a registry change when ``--publish`` asks; whether it did."""
    if args.publish is None:
        return False
    if not quiet:
        print(f"Publishing the truststore to {args.publish}:", flush=True)
    result = audited(
        settings,
        "truststore.publish",
        options_of(args, "publish", "domain", "api", "region"),
        lambda s: publish(s, args, now=now(), stderr=quiet),
        summary=lambda done: f"published {done.truststore.uri} (version {done.truststore.version_id})",
    )
    if not quiet:
        say_published(result)
    return True


def cmd_activate(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.ca.lifecycle import short, when
    from issuer.service.ca.rotation import activate
    from issuer.service.ca.setup import read_passphrase
    from issuer.service.ca.signers import KeySigners

    check_publish_options(args, domain_alone=True)
    if is_remote(args):
        return ca_remote.cmd_activate(args, settings)
    ensure_schema(settings)
    signers = KeySigners(ca_dir=settings.ca_dir, passphrase=lambda: read_passphrase(settings))
    at = now()
    done = audited(
        settings,
        "ca.activate",
        options_of(args, "fingerprint", "force", "publish", "domain"),
        lambda s: activate(
            s,
            fingerprint=args.fingerprint,
            now=at,
            min_validity=_max_ttl(settings),
            load_signer=signers,
            before_switch=activation_gate(s, args, now=at),
            force=args.force,
        ),
        summary=lambda done: f"activated {done.issuer.subject} ({short(done.issuer.fingerprint_sha256)})",
    )
    new, old = done.issuer, done.previous
    print(
        f"Checked: the truststore holds {short(new.fingerprint_sha256)} and its root "
        f"({done.truststore_certificates} certificates in `issuer truststore export`), and its key loads here."
    )
    if args.publish is None:
        print(
            "Reminder: API Gateway checks leaves against the truststore uploaded to S3, not this service's; "
            "it must already hold this issuer."
        )
    print(f"Activated {new.subject} ({short(new.fingerprint_sha256)}), valid until {when(new.not_after)}.")
    print(f"Every replica signs with it within {format_duration(settings.registry_refresh)}.")
    if old is not None:
        leaves = done.previous_leaves
        print(f"The previous issuer {old.subject} ({short(old.fingerprint_sha256)}) stays in the truststore.")
        if leaves.live and leaves.last_expiry is not None:
            print(
                f"Next: its {leaves.live} live leaves expire by {when(leaves.last_expiry)}; then "
                f"`issuer ca retire {short(old.fingerprint_sha256)}` and upload the truststore again."
            )
        else:
            print(
                f"Next: it has no live leaves; after {format_duration(2 * settings.registry_refresh)} "
                f"`issuer ca retire {short(old.fingerprint_sha256)}` and upload the truststore again."
            )
    for warning in done.warnings:
        print(f"warning: {warning}")
    return 0


def cmd_retire(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.ca.lifecycle import short
    from issuer.service.ca.marker import MARKER_NAME, note_retired
    from issuer.service.ca.rotation import retire

    check_publish_options(args)
    if is_remote(args):
        return ca_remote.cmd_retire(args, settings)
    ensure_schema(settings)
    done = audited(
        settings,
        "ca.retire",
        options_of(args, "fingerprint", "force"),
        lambda s: retire(
            s, fingerprint=args.fingerprint, now=now(), settle=2 * settings.registry_refresh, force=args.force
        ),
        summary=lambda done: (
            f"retired {done.issuer.subject} ({short(done.issuer.fingerprint_sha256)})"
            + (f"; forced past: {done.overridden}" if done.overridden else "")
        ),
    )
    if done.overridden:
        print(f"warning: forced past: {done.overridden}")
    record = done.issuer
    print(f"Retired {record.subject} ({short(record.fingerprint_sha256)}).")
    # The CA directory remembers it too, so no restore of these files makes it sign again.
    if note_retired(settings.ca_dir, record.fingerprint_sha256, now=now()):
        print(f"Recorded in {settings.ca_dir / MARKER_NAME}: a restore never makes it active again.")
    print(f"Every replica drops it from GET /v1/truststore within {format_duration(settings.registry_refresh)}.")
    if not _publish_after(args, settings):
        print("Next: issuer truststore export --out truststore.pem, and upload it as API Gateway's truststore.")
    return 0
