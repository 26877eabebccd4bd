"""``issuer ca status`` and ``ca show``: the registry's issuers and roots (leaf counts, notes, expiry
warnings; the certificates themselves), and which registry entry each file in the CA directory is."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from issuer.cli.database import ensure_schema, now, run, with_sessions
from issuer.cli.errors import fail
from issuer.cli.operator import act
from issuer.cli.output import print_json, print_table
from issuer.durations import parse_duration
from issuer.settings import Settings

__all__ = ["cmd_show", "cmd_status"]


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


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    """The registry's CA certificates, the active issuing CA first: what signs is the registry's word,
    not whichever certificate ``ca init`` left in the CA directory."""
    from issuer.service.ca.lifecycle import short
    from issuer.service.ca.status import ca_status

    ensure_schema(settings)
    status = run(with_sessions(settings, lambda s: ca_status(s, now=now(), ca_dir=settings.ca_dir)))
    active = [i for i in status.issuers if i.phase == "active"]
    if not active and not status.roots:
        raise fail(
            f"the CA registry is empty; create a CA with `issuer ca init` (files in {settings.ca_dir} "
            "are registered by `issuer ca init` or the first `issuer serve`)",
            code="ca_not_initialised",
        )
    phases: dict[str, str] = {}
    for row in status.issuers:
        phases[row.record.fingerprint_sha256] = f"issuing CA, {row.phase}"
    for root in status.roots:
        phases[root.record.fingerprint_sha256] = f"root, {root.record.state}"
    for row in active:
        _print_certificate("issuing (active: signs new certificates)", row.record.certificate_pem, row.record.key_ref)
    for root in status.roots:
        if root.record.state != "retired":
            _print_certificate(f"root ({root.record.state})", root.record.certificate_pem, f"{root.key}")
    others = [i for i in status.issuers if i.phase != "active"]
    if others:
        print("other issuing CAs (not signing):")
        for row in others:
            until = row.record.not_after.isoformat()
            print(f"  {row.phase:<9} {short(row.record.fingerprint_sha256)}  valid until {until}")
    _print_files(settings, phases)
    print("`issuer ca status` shows every issuing CA's leaves and what the truststore holds")
    return 0


def _print_certificate(label: str, pem: str, key: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from ca.errors import CAError
    from ca.keys import key_type_of

    cert = x509.load_pem_x509_certificate(pem.encode())
    try:
        key_type: str = key_type_of(cert.public_key())
    except CAError:
        key_type = "unsupported"
    print(f"{label}:")
    print(f"  subject:  {cert.subject.rfc4514_string()}")
    print(f"  serial:   {format(cert.serial_number, 'x')}")
    print(f"  key:      {key_type} ({key})")
    print(f"  valid:    {cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()}")
    print(f"  sha256:   {cert.fingerprint(hashes.SHA256()).hex()}")


def _print_files(settings: Settings, phases: dict[str, str]) -> None:
    from ca.errors import CAError
    from ca.files import describe_ca

    try:
        info = describe_ca(settings.ca_dir)
    except CAError:
        return  # no CA files here (a KMS set-up, or another machine's files)

    def which(fingerprint: str) -> str:
        return phases.get(fingerprint, "not in the registry")

    print(
        f"files in {info.directory}: root.pem = {which(info.root.sha256_fingerprint)}; "
        f"issuing.pem = {which(info.issuing.sha256_fingerprint)} "
        f"(root key {'present' if info.root_key_present else 'absent'})"
    )
