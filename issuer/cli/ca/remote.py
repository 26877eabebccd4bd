"""``issuer --server URL ca rotate | activate | retire``: CA rotation through the admin API.

Only issuers whose key is not a file (AWS KMS; AWS Private CA where the signer has it) are
rotated onto and activated remotely — the server refuses the rest (``file_key_local_only``);
``--publish`` gating stays local: publish with ``issuer --server URL truststore publish``.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from issuer.cli.errors import fail
from issuer.cli.operator import act
from issuer.cli.output import print_json
from issuer.settings import Settings

__all__ = ["cmd_activate", "cmd_retire", "cmd_rotate"]


def _no_publish(args: argparse.Namespace) -> None:
    if args.publish is not None:
        raise fail(
            "--publish runs only locally; through --server publish separately: "
            "`issuer --server URL truststore publish s3://BUCKET/KEY`",
            code="local_only",
            exit_status=2,
        )


def _when(text: str | None) -> str:
    from issuer.service.ca.lifecycle import when

    return when(datetime.fromisoformat(text)) if text else "-"


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    _no_publish(args)
    arguments: dict[str, Any] = {
        "validity": args.validity,
        "common_name": args.common_name,
        "root": args.root,
        "force": args.force,
        "kms_key": args.kms_key,
        "create_kms_key": args.create_kms_key,
        "kms_key_spec": args.kms_key_spec if args.create_kms_key else None,
        "kms_region": args.kms_region,
    }
    done = act(args, settings, "ca.rotate", arguments)
    if args.json:
        print_json(done)
        return 0
    new = done["issuer"]
    print("Prepared a new issuing CA (in the truststore now, not signing yet):")
    print(f"  subject:      {new['subject']}")
    print(f"  fingerprint:  {new['fingerprint_sha256']}")
    print(f"  valid:        {_when(new['not_before'])} .. {_when(new['not_after'])}")
    print(f"  root:         {done['root_subject']} ({done['root_fingerprint_sha256'][:16]})")
    print(f"  key:          {new['key_ref']}")
    if done["created_kms_key"]:
        print(f"  created:      KMS key {done['created_kms_key']}")
    for old in done["replaced"]:
        print(f"  replaced:     {old[:16]}, prepared but never active: retired")
    print("Next:")
    print("  1. nothing to copy: replicas sign in KMS; their role needs kms:Sign and kms:GetPublicKey on the key")
    print("  2. publish the truststore (`issuer --server URL truststore publish s3://BUCKET/KEY`) and wait until")
    print("     API Gateway uses it")
    print(f"  3. issuer --server URL ca activate {new['fingerprint_sha256'][:16]}")
    return 0


def cmd_activate(args: argparse.Namespace, settings: Settings) -> int:
    _no_publish(args)
    done = act(args, settings, "ca.activate", {"fingerprint": args.fingerprint, "force": args.force})
    new, old = done["issuer"], done["previous"]
    print(
        f"Checked: the truststore holds {new['fingerprint_sha256'][:16]} and its root "
        f"({done['truststore_certificates']} certificates in GET /v1/truststore), and its key loads on the server."
    )
    print(
        "Reminder: API Gateway checks leaves against the truststore uploaded to S3, not this service's; "
        "it must already hold this issuer."
    )
    print(f"Activated {new['subject']} ({new['fingerprint_sha256'][:16]}), valid until {_when(new['not_after'])}.")
    print("Every replica signs with it within [issuer] registry_refresh.")
    if old is not None:
        leaves = done["previous_leaves"]
        print(f"The previous issuer {old['subject']} ({old['fingerprint_sha256'][:16]}) stays in the truststore.")
        if leaves["live"]:
            print(
                f"Next: its {leaves['live']} live leaves expire by {_when(leaves['last_live_expiry'])}; then "
                f"`issuer ca retire {old['fingerprint_sha256'][:16]}` and publish the truststore again."
            )
    for warning in done["warnings"]:
        print(f"warning: {warning}")
    return 0


def cmd_retire(args: argparse.Namespace, settings: Settings) -> int:
    _no_publish(args)
    done = act(args, settings, "ca.retire", {"fingerprint": args.fingerprint, "force": args.force})
    if done["overridden"]:
        print(f"warning: forced past: {done['overridden']}")
    record = done["issuer"]
    print(f"Retired {record['subject']} ({record['fingerprint_sha256'][:16]}).")
    print("Every replica drops it from GET /v1/truststore within [issuer] registry_refresh.")
    print("Next: publish the truststore again (`issuer --server URL truststore publish s3://BUCKET/KEY`).")
    return 0
