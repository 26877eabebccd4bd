"""``issuer ca status``: the registry's issuers and roots, leaf counts, notes and expiry warnings."""

from __future__ import annotations

import argparse
from typing import Any

from issuer.cli.database import ensure_schema, now, run, with_sessions
from issuer.cli.errors import fail
from issuer.cli.output import print_json, print_table
from issuer.durations import parse_duration
from issuer.settings import Settings

__all__ = ["cmd_status"]


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.ca.status import ca_status

    try:
        window = parse_duration(args.warn_within)
    except ValueError as exc:
        raise fail(f"--warn-within: {exc}", code="config_invalid", exit_status=2) from None
    ensure_schema(settings)
    status = run(with_sessions(settings, lambda s: ca_status(s, now=now(), ca_dir=settings.ca_dir, warn_within=window)))
    if args.json:
        print_json(_status_json(status))
    else:
        _print_status(status)
    return 1 if args.check and status.expiring else 0


def _status_json(status: Any) -> dict[str, Any]:
    def leaves(counts: Any) -> dict[str, Any]:
        expiry = counts.last_expiry.isoformat() if counts.last_expiry else None
        return {"issued": counts.issued, "live": counts.live, "last_live_expiry": expiry}

    return {
        "now": status.now.isoformat(),
        "issuers": [
            {
                "phase": i.phase,
                "state": i.record.state,
                "subject": i.record.subject,
                "fingerprint_sha256": i.record.fingerprint_sha256,
                "not_before": i.record.not_before.isoformat(),
                "not_after": i.record.not_after.isoformat(),
                "key_ref": i.record.key_ref,
                "root_fingerprint_sha256": i.root_fingerprint,
                "in_truststore": i.in_truststore,
                "leaves": leaves(i.leaves),
                "activated_at": i.record.activated_at.isoformat() if i.record.activated_at else None,
                "retired_at": i.record.retired_at.isoformat() if i.record.retired_at else None,
            }
            for i in status.issuers
        ],
        "roots": [
            {
                "state": r.record.state,
                "subject": r.record.subject,
                "fingerprint_sha256": r.record.fingerprint_sha256,
                "not_before": r.record.not_before.isoformat(),
                "not_after": r.record.not_after.isoformat(),
                "key_ref": r.record.key_ref,
                "key": r.key,
                "issuers": r.issuers,
            }
            for r in status.roots
        ],
        "warnings": list(status.warnings),
        "notes": list(status.notes),
        "expiring": status.expiring,
    }


def _print_status(status: Any) -> None:
    from issuer.service.ca.lifecycle import short, when

    print("Issuing CAs (newest first):")
    print_table(
        ("PHASE", "FINGERPRINT", "NOT BEFORE", "NOT AFTER", "LEAVES", "LAST LEAF", "KEY", "SUBJECT"),
        [
            (
                i.phase + ("" if i.in_truststore or i.phase in ("retired", "expired") else "!"),
                short(i.record.fingerprint_sha256),
                when(i.record.not_before),
                when(i.record.not_after),
                f"{i.leaves.issued}/{i.leaves.live}",
                when(i.leaves.last_expiry) if i.leaves.last_expiry else "-",
                i.record.key_ref,
                i.record.subject,
            )
            for i in status.issuers
        ],
    )
    print("  (LEAVES: issued/live; LAST LEAF: when the last live leaf expires)")
    print("Roots:")
    print_table(
        ("STATE", "FINGERPRINT", "NOT BEFORE", "NOT AFTER", "KEY", "ISSUERS", "SUBJECT"),
        [
            (
                r.record.state,
                short(r.record.fingerprint_sha256),
                when(r.record.not_before),
                when(r.record.not_after),
                r.key,
                r.issuers,
                r.record.subject,
            )
            for r in status.roots
        ],
    )
    for note in status.notes:
        print(f"note: {note}")
    for warning in status.warnings:
        print(f"warning: {warning}")
