"""``issuer revoke``: revoke one certificate, or every live certificate of a principal or an EC2 instance."""

from __future__ import annotations

import argparse
import getpass
import socket
from typing import TYPE_CHECKING, Any

from issuer.cli.database import ensure_schema, now, run, with_sessions
from issuer.cli.errors import fail
from issuer.cli.output import print_json, print_table
from issuer.errors import ClientError
from issuer.settings import Settings

if TYPE_CHECKING:
    from issuer.service.revocation.revoke import Revocation, RevokedCertificate

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

Certificates of an AWS Private CA issuer are revoked there too (RevokeCertificate), after the
revocation here has committed; Private CA's own CRL lists them about 30 minutes later. If
Private CA cannot be reached, the revocation here stands, the command exits 1 saying so, and
running it again retries (certificates revoked already are sent again).
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
    revoke.set_defaults(handler=cmd_revoke)


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.issuance.model import normalise_serial
    from issuer.service.revocation import revoke as revocation

    # Mistakes in the command line are usage errors (exit 2), found before touching the database.
    try:
        reason = revocation.parse_reason(args.reason)
        if args.serial is not None:
            normalise_serial(args.serial)
    except ClientError as exc:
        raise fail(exc.detail, code=exc.code, exit_status=2) from None
    if args.reset_binding and args.instance is None:
        raise fail("--reset-binding applies to --instance only", code="reset_binding_needs_instance", exit_status=2)
    if args.serial is not None:
        target = revocation.RevocationTarget("serial", args.serial)
    elif args.principal is not None:
        target = revocation.RevocationTarget("principal", args.principal)
    else:
        target = revocation.RevocationTarget("instance", args.instance)
    ensure_schema(settings)
    done = run(
        with_sessions(
            settings,
            lambda s: revocation.revoke(
                s,
                target,
                reason=reason,
                now=now(),
                note=args.note,
                actor=_actor(),
                dry_run=args.dry_run,
                reset_binding=args.reset_binding,
                upstream=_upstream(s, settings),
            ),
        )
    )
    if args.json:
        print_json(as_json(done))
    else:
        report(done)
    failed = done.upstream_failed
    if failed:
        first = failed[0]
        raise fail(
            f"revoked here, but {len(failed)} revocation(s) did not reach the CA that keeps its own list "
            f"({first.issuer}: {first.code}: {first.detail}); run the same command again to retry",
            code="upstream_revoke_failed",
        )
    return 0


def _upstream(sessions: Any, settings: Settings) -> Any:
    """Revocations reach AWS Private CA issuers through the same key backends the service uses."""
    from issuer.service.ca.setup import read_passphrase
    from issuer.service.ca.signers import KeySigners
    from issuer.service.revocation.upstream import UpstreamRevocations

    signers = KeySigners(ca_dir=settings.ca_dir, passphrase=lambda: read_passphrase(settings))
    return UpstreamRevocations(sessions, load_signer=signers, clock=now)


def _actor() -> str:
    """Who ran the command, for the audit trail (best effort: a container may have no user name)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def as_json(done: Revocation) -> dict[str, object]:
    def cert(c: RevokedCertificate) -> dict[str, object]:
        return {
            "serial": c.serial,
            "principal": c.principal,
            "method": c.method,
            "role": c.role,
            "status": c.status,
            "not_after": c.not_after,
            "revoked_at": c.revoked_at,
            "reason": c.reason,
        }

    return {
        "dry_run": done.dry_run,
        "target": {done.target.kind: done.target.value},
        "reason": done.reason,
        "revoked_at": done.revoked_at,
        "request_id": done.request_id,
        "revoked": [cert(c) for c in done.revoked],
        "already_revoked": [cert(c) for c in done.already_revoked],
        "binding": done.binding,
        "upstream": [
            {"serial": r.serial, "issuer": r.issuer, "ok": r.ok, "code": r.code, "detail": r.detail}
            for r in done.upstream
        ],
    }


def report(done: Revocation) -> None:
    """What happened, in words: the serials revoked, what was revoked before, the instance binding."""
    what = f"{done.target.kind} {done.target.value}"
    verb = "Would revoke" if done.dry_run else "Revoked"
    if done.revoked:
        print(f"{verb} {len(done.revoked)} certificate(s) of {what} ({done.reason}):")
        print_table(
            ("SERIAL", "WAS", "ROLE", "NOT AFTER", "PRINCIPAL"),
            [
                (c.serial, c.status, c.role, c.not_after.isoformat(timespec="seconds"), c.principal)
                for c in done.revoked
            ],
        )
        expired = [c.serial for c in done.revoked if c.not_after <= done.revoked_at]
        if expired:
            print(f"Already expired, so on no revocation list: {', '.join(expired)}.")
    else:
        print(f"Nothing to revoke for {what}: no active or superseded certificate that has not expired.")
    for c in done.already_revoked:
        when = c.revoked_at.isoformat(timespec="seconds") if c.revoked_at else "earlier"
        print(f"Already revoked: {c.serial} ({c.reason or 'unspecified'}, {when}); left as it was.")
    if done.binding == "kept":
        print(
            "Instance binding kept: the instance can still attest with the nonce it holds and get a new "
            "certificate. Run again with --reset-binding to forget the binding."
        )
    elif done.binding == "forgotten":
        state = "would be forgotten" if done.dry_run else "forgotten"
        print(
            f"Instance binding {state}: the nonce the instance holds no longer works, and its next attestation "
            "binds it anew (trust on first use) — attest the real instance again soon, or stop it."
        )
    elif done.binding == "none":
        print("The instance has no binding (it never attested by EC2 identity document, or it was reset).")
    for r in done.upstream:
        if r.ok:
            print(f"Revoked at its CA too: {r.serial} ({r.issuer}); its own CRL lists it within about 30 minutes.")
        else:
            print(f"NOT revoked at its CA yet: {r.serial} ({r.issuer}): {r.code}: {r.detail}")
    if done.dry_run:
        print("Dry run: nothing was changed.")
    elif done.revoked:
        print(
            "They are on the CRLs (GET /v1/crls) and the revocation list (GET /v1/revoked) now; Lambda "
            "authorizers refuse them within their ISSUER_CRLS_TTL (reading S3: once `issuer truststore publish "
            f"--crls-key` has run). Audit request id {done.request_id}."
        )
