"""``issuer revoke``: revoke one certificate, or every live certificate of a principal or an EC2 instance."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from issuer.cli.errors import fail
from issuer.cli.operator import act
from issuer.cli.output import print_json, print_table, seconds
from issuer.errors import ClientError
from issuer.settings import Settings

DESCRIPTION = """\
Revoke certificates. --serial revokes one certificate (as openssl prints the serial or as
`issuer certs list` does). --principal (instance ID, IAM ARN, token name) and --instance
revoke every live certificate of that identity: the active one and any a renewal replaced
that has not expired yet, since those still verify until they expire.

A revoked certificate cannot renew, and is listed at once on its issuing CA's CRL
(GET /v1/crl) and on the revocation list the Lambda authorizer reads (GET /v1/revoked).
Revoking does not stop a machine from attesting again: for an EC2 instance, --reset-binding
also forgets its trust-on-first-use binding, so the nonce it holds (or a stolen copy) no
longer works and its next attestation binds it anew.
"""

EPILOG = """\
reasons (RFC 5280; any case, hyphens or underscores): unspecified, keyCompromise,
  cACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold,
  privilegeWithdrawn, aACompromise. There is no un-revoke: certificateHold is final here too.

examples:
  issuer revoke --serial 5D:60:CE:9D:01:23 --reason key-compromise --note "laptop stolen"
  issuer revoke --principal arn:aws:iam::123456789012:role/ci --reason privilegeWithdrawn --dry-run
  issuer revoke --instance i-0123456789abcdef0 --reason keyCompromise --reset-binding
"""


def add_parser(sub: Any) -> None:
    revoke = sub.add_parser(
        "revoke",
        help="revoke certificates (by serial, principal or EC2 instance)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--serial", metavar="S", help="one certificate's serial (hex; colons and leading zeros fine)")
    target.add_argument("--principal", metavar="P", help="every live certificate of this principal")
    target.add_argument("--instance", metavar="I", help="every live certificate of this EC2 instance ID")
    revoke.add_argument("--reason", metavar="R", required=True, help="RFC 5280 reason (see below)")
    revoke.add_argument("--note", metavar="TEXT", help="why, in words, for the audit trail")
    revoke.add_argument(
        "--reset-binding",
        action="store_true",
        help="with --instance: also forget the instance's trust-on-first-use binding",
    )
    revoke.add_argument("--dry-run", action="store_true", help="show what would be revoked; change nothing")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    revoke.set_defaults(handler=cmd_revoke, remote_ok=True)


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.issuance.model import normalise_serial
    from issuer.service.revocation import revoke as revocation

    # Mistakes in the command line are usage errors (exit 2), found before touching the database.
    try:
        revocation.parse_reason(args.reason)
        if args.serial is not None:
            normalise_serial(args.serial)
    except ClientError as exc:
        raise fail(exc.detail, code=exc.code, exit_status=2) from None
    if args.reset_binding and args.instance is None:
        raise fail("--reset-binding applies to --instance only", code="reset_binding_needs_instance", exit_status=2)
    arguments = {
        "serial": args.serial,
        "principal": args.principal,
        "instance": args.instance,
        "reason": args.reason,
        "note": args.note,
        "dry_run": args.dry_run,
        "reset_binding": args.reset_binding,
    }
    done = act(args, settings, "revoke", {k: v for k, v in arguments.items() if v is not None})
    if args.json:
        print_json(done)
    else:
        report(done)
    failed = [r for r in done.get("upstream", []) if not r["ok"]]
    if failed:
        first = failed[0]
        raise fail(
            f"revoked here, but {len(failed)} revocation(s) did not reach the CA that keeps its own list "
            f"({first['issuer']}: {first['code']}: {first['detail']}); run the same command again to retry",
            code="upstream_revoke_failed",
        )
    return 0


def report(done: dict[str, Any]) -> None:
    """What happened, in words: the serials revoked, what was revoked before, the instance binding."""
    ((kind, value),) = done["target"].items()
    what = f"{kind} {value}"
    verb = "Would revoke" if done["dry_run"] else "Revoked"
    revoked = done["revoked"]
    if revoked:
        print(f"{verb} {len(revoked)} certificate(s) of {what} ({done['reason']}):")
        print_table(
            ("SERIAL", "WAS", "ROLE", "NOT AFTER", "PRINCIPAL"),
            [(c["serial"], c["status"], c["role"], seconds(c["not_after"]), c["principal"]) for c in revoked],
        )
        at = datetime.fromisoformat(done["revoked_at"])
        expired = [c["serial"] for c in revoked if datetime.fromisoformat(c["not_after"]) <= at]
        if expired:
            print(f"Already expired, so on no revocation list: {', '.join(expired)}.")
    else:
        print(f"Nothing to revoke for {what}: no active or superseded certificate that has not expired.")
    for c in done["already_revoked"]:
        when = seconds(c["revoked_at"]) if c["revoked_at"] else "earlier"
        print(f"Already revoked: {c['serial']} ({c['reason'] or 'unspecified'}, {when}); left as it was.")
    if done["binding"] == "kept":
        print(
            "Instance binding kept: the instance can still attest with the nonce it holds and get a new "
            "certificate. Run again with --reset-binding to forget the binding."
        )
    elif done["binding"] == "forgotten":
        state = "would be forgotten" if done["dry_run"] else "forgotten"
        print(
            f"Instance binding {state}: the nonce the instance holds no longer works, and its next attestation "
            "binds it anew (trust on first use) — attest the real instance again soon, or stop it."
        )
    elif done["binding"] == "none":
        print("The instance has no binding (it never attested by EC2 identity document, or it was reset).")
    for r in done.get("upstream", []):
        if r["ok"]:
            print(
                f"Revoked at its CA too: {r['serial']} ({r['issuer']}); its own CRL lists it within about 30 minutes."
            )
        else:
            print(f"NOT revoked at its CA yet: {r['serial']} ({r['issuer']}): {r['code']}: {r['detail']}")
    if done["dry_run"]:
        print("Dry run: nothing was changed.")
    elif revoked:
        print(
            "They are on the CRL (GET /v1/crl) and the revocation list (GET /v1/revoked) now; Lambda "
            f"authorizers refuse them within their ISSUER_REVOKED_TTL. Audit request id {done['request_id']}."
        )
