"""``issuer ca status``: the registry's issuers and roots, leaf counts, notes and expiry warnings."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from issuer.cli.errors import fail
from issuer.cli.operator import act
from issuer.cli.output import print_json, print_table
from issuer.durations import parse_duration
from issuer.settings import Settings

__all__ = ["cmd_status"]


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    try:
        parse_duration(args.warn_within)
    except ValueError as exc:
        raise fail(f"--warn-within: {exc}", code="config_invalid", exit_status=2) from None
    status = act(args, settings, "ca.status", {"warn_within": args.warn_within})
    if args.json:
        print_json(status)
    else:
        _print_status(status)
    return 1 if args.check and status["expiring"] else 0


def _when(text: str | None) -> str:
    from issuer.service.ca.lifecycle import when

    return when(datetime.fromisoformat(text)) if text else "-"


def _print_status(status: dict[str, Any]) -> None:
    from issuer.service.ca.lifecycle import short

    print("Issuing CAs (newest first):")
    print_table(
        ("PHASE", "FINGERPRINT", "NOT BEFORE", "NOT AFTER", "LEAVES", "LAST LEAF", "KEY", "SUBJECT"),
        [
            (
                i["phase"] + ("" if i["in_truststore"] or i["phase"] in ("retired", "expired") else "!"),
                short(i["fingerprint_sha256"]),
                _when(i["not_before"]),
                _when(i["not_after"]),
                f"{i['leaves']['issued']}/{i['leaves']['live']}",
                _when(i["leaves"]["last_live_expiry"]),
                i["key_ref"],
                i["subject"],
            )
            for i in status["issuers"]
        ],
    )
    print("  (LEAVES: issued/live; LAST LEAF: when the last live leaf expires)")
    print("Roots:")
    print_table(
        ("STATE", "FINGERPRINT", "NOT BEFORE", "NOT AFTER", "KEY", "ISSUERS", "SUBJECT"),
        [
            (
                r["state"],
                short(r["fingerprint_sha256"]),
                _when(r["not_before"]),
                _when(r["not_after"]),
                r["key"],
                r["issuers"],
                r["subject"],
            )
            for r in status["roots"]
        ],
    )
    for note in status["notes"]:
        print(f"note: {note}")
    for warning in status["warnings"]:
        print(f"warning: {warning}")
