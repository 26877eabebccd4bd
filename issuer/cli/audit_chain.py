"""``issuer audit verify|anchor|seal``: prove the audit trail untouched, copy its checkpoints to S3, seal by hand."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from issuer.cli.database import ensure_schema, now, run, with_sessions
from issuer.cli.errors import fail
from issuer.cli.output import print_json
from issuer.durations import parse_duration
from issuer.settings import Settings

if TYPE_CHECKING:
    from issuer.audit.anchors import AnchorLocation
    from issuer.cli.database import Sessions

_VERIFY = """\
Walk the audit chain and recompute it from the rows as they are now: each entry's hash over
its row's content and the previous hash, the sequence, every signed checkpoint (with a key the
database cannot use), and that every attestations row older than the seal window is in the
chain. Exits 1 naming the first bad row by its attestations id, and what is wrong with it:
edited, deleted, inserted, reordered, chain_broken, checkpoint, unsealed, uncheckpointed or
anchor (with --anchors: a checkpoint anchored in S3 is missing or different in the database).
"""
_VERIFY_EPILOG = """\
examples:
  issuer audit verify
  issuer audit verify --roots /secure/root.pem --anchors s3://audit-anchors/prod --json
  issuer audit verify --from 120001          # from chain position (seq) 120001 on
"""
_ANCHOR = """\
Copy every signed checkpoint not yet anchored to S3, one object per checkpoint
(PREFIX/<seq>.json, never overwritten). If the bucket has Object Lock enabled, each object
is retained (--mode, --retain-days; else the bucket's default rule; else GOVERNANCE for 365
days). Run it from a scheduled job; `issuer audit verify --anchors` compares the database's
checkpoints with these. An anchored checkpoint that differs from the database's fails (exit 1).
"""


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _location(text: str) -> AnchorLocation:
    from issuer.audit.anchors import AnchorLocation

    try:
        return AnchorLocation.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_actions(group: Any) -> None:
    """Add ``verify``, ``anchor`` and ``seal`` to the ``issuer audit`` actions (local only)."""
    verify = group.add_parser(
        "verify",
        help="check that no audit row was edited, deleted, inserted or reordered",
        description=_VERIFY,
        epilog=_VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("--from", dest="from_seq", type=int, default=1, metavar="SEQ", help="start at chain position")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--anchors", type=_location, metavar="s3://BUCKET/PREFIX", help="compare with anchored copies")
    verify.add_argument(
        "--roots",
        type=Path,
        metavar="PEM",
        help="roots that issuing-CA checkpoint keys must chain to "
        "(default: the CA directory's root.pem, else the database's roots)",
    )
    verify.add_argument(
        "--kms-key",
        action="append",
        default=[],
        metavar="ARN",
        help="a KMS key trusted to sign checkpoints "
        "(besides [audit] checkpoint_kms_key); repeat for keys used in the past",
    )
    verify.add_argument(
        "--seal-window",
        type=_duration,
        default=timedelta(seconds=30),
        metavar="DURATION",
        help="rows younger than this may be unsealed (default 30s)",
    )
    verify.add_argument(
        "--checkpoint-grace",
        type=_duration,
        default=timedelta(minutes=10),
        metavar="DURATION",
        help="entries sealed longer ago must be covered by a checkpoint (default 10m)",
    )
    verify.add_argument("--region", help="AWS region for S3 and KMS (default: AWS_REGION or the profile's)")
    verify.set_defaults(handler=cmd_verify, remote_ok=False)

    anchor = group.add_parser(
        "anchor",
        help="copy the signed checkpoints to S3 (Object Lock when the bucket has it)",
        description=_ANCHOR,
        epilog="example: issuer audit anchor s3://audit-anchors/prod --mode COMPLIANCE --retain-days 2555",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    anchor.add_argument("target", type=_location, metavar="s3://BUCKET/PREFIX")
    anchor.add_argument("--mode", choices=("GOVERNANCE", "COMPLIANCE"), help="Object Lock retention mode")
    anchor.add_argument("--retain-days", type=int, metavar="N", help="Object Lock retention in days")
    anchor.add_argument("--region", help="AWS region (default: AWS_REGION or the profile's)")
    anchor.add_argument("--json", action="store_true", help="print the result as JSON")
    anchor.set_defaults(handler=cmd_anchor, remote_ok=False)

    seal = group.add_parser(
        "seal",
        help="seal pending audit rows now (what every `issuer serve` does each second)",
        description="Seal the audit rows waiting for the chain and, when due (or with --checkpoint), sign a "
        "checkpoint. For databases written while no `issuer serve` ran.",
        epilog="example: issuer audit seal --checkpoint",
    )
    seal.add_argument("--checkpoint", action="store_true", help="sign a checkpoint of the head even if not due")
    seal.set_defaults(handler=cmd_seal, remote_ok=False)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from cryptography import x509

    from issuer.audit.verifier import KeyTrust, VerifyOptions, VerifyReport, verify_chain

    if args.from_seq < 1:
        raise fail("--from must be a chain position (seq) of 1 or more", exit_status=2)
    ensure_schema(settings)
    roots_file = args.roots or (settings.ca_dir / "root.pem")
    roots: tuple[x509.Certificate, ...] | None = None
    if args.roots is not None or roots_file.exists():
        try:
            roots = tuple(x509.load_pem_x509_certificates(roots_file.read_bytes()))
        except (OSError, ValueError) as exc:
            raise fail(
                f"--roots {roots_file}: not a readable PEM file of certificates ({exc})", exit_status=2
            ) from None
    kms_keys = {*args.kms_key}
    if settings.audit.checkpoint_kms_key:
        kms_keys.add(settings.audit.checkpoint_kms_key)
    trust = KeyTrust(roots=roots, kms_keys=frozenset(kms_keys), roots_source=str(roots_file))
    options = VerifyOptions(
        from_seq=args.from_seq, seal_window=args.seal_window, checkpoint_grace=args.checkpoint_grace
    )
    anchors = _read_anchors(args.anchors, args.region, args.from_seq) if args.anchors else None

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    async def work(sessions: Sessions) -> VerifyReport:
        return await verify_chain(sessions, now=now(), trust=trust, options=options, anchors=anchors, progress=progress)

    report = run(with_sessions(settings, work))
    if args.json:
        print_json(report.to_json())
    else:
        _print_report(report, anchored=args.anchors is not None)
    return 0 if report.ok else 1


def _read_anchors(location: AnchorLocation, region: str | None, from_seq: int) -> dict[int, Any]:
    from issuer.audit.anchors import Anchors
    from issuer.aws.s3 import s3_client

    return Anchors(s3_client(region=region), location).read_all(from_seq=max(0, from_seq - 1))


def _print_report(report: Any, *, anchored: bool) -> None:
    for note in report.notes:
        print(f"note: {note}")
    span = f"seq {report.from_seq}..{report.chain_end}" if report.chain_end >= report.from_seq else "empty"
    checkpoint = f"last at seq {report.last_checkpoint}" if report.last_checkpoint is not None else "none yet"
    if report.ok:
        extra = ", matching the anchored copies" if anchored else ""
        print(
            f"Audit trail verified: {report.walked} entries ({span}), {report.checkpoints} signed checkpoint(s) "
            f"({checkpoint}){extra}; every row older than the seal window is in the chain."
        )
        return
    first = report.findings[0]
    print(f"FAILED: {first.line()}")
    for finding in report.findings[1:]:
        print(f"  also: {finding.line()}")
    row = f"row {first.attestation_id}" if first.attestation_id is not None else f"seq {first.seq}"
    print(f"issuer: error: the audit trail does not verify: first bad {row} ({first.kind})", file=sys.stderr)


def cmd_anchor(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.audit import chain_store as audit_chain
    from issuer.audit.anchors import AnchorResult, Anchors
    from issuer.aws.s3 import s3_client

    if args.retain_days is not None and not 1 <= args.retain_days <= 36500:
        raise fail("--retain-days must be from 1 to 36500", exit_status=2)
    ensure_schema(settings)

    async def read(sessions: Sessions) -> list[Any]:
        async with sessions() as session:
            return await audit_chain.checkpoints(session)

    records = {c.seq: c for c in run(with_sessions(settings, read))}
    anchors = Anchors(s3_client(region=args.region), args.target)
    retention = anchors.retention(now=now(), mode=args.mode, days=args.retain_days)
    result: AnchorResult = anchors.anchor(
        records, retention=retention, progress=lambda line: print(line, file=sys.stderr, flush=True)
    )
    if args.json:
        print_json(
            {
                "location": args.target.uri,
                "written": list(result.written),
                "already": result.already,
                "lock": result.lock,
            }
        )
        return 0
    lock = f"; Object Lock {result.lock}" if result.lock else "; the bucket has no Object Lock"
    print(
        f"Anchored {len(result.written)} new checkpoint(s) in {args.target.uri} "
        f"({result.already} were there already){lock}."
    )
    if not records:
        print("The database has no checkpoint yet: a running `issuer serve` signs one within a minute of new rows.")
    return 0


def cmd_seal(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.audit.checkpoints import CheckpointKeys
    from issuer.audit.sealer import Sealer
    from issuer.service.ca.setup import read_passphrase

    ensure_schema(settings)
    keys = CheckpointKeys(
        ca_dir=settings.ca_dir,
        passphrase=lambda: read_passphrase(settings),
        kms_key=settings.audit.checkpoint_kms_key,
    )

    async def work(sessions: Sessions) -> tuple[int, int | None]:
        sealer = Sealer(
            sessions,
            clock=now,
            keys=keys,
            checkpoint_rows=settings.audit.checkpoint_rows,
            checkpoint_interval=settings.audit.checkpoint_interval,
        )
        total = 0
        while sealed := await sealer.seal_once():
            total += sealed
        checkpoint = None
        while (made := await sealer.checkpoint_once(force=args.checkpoint)) is not None:
            checkpoint = made.seq
        return total, checkpoint

    sealed, checkpoint = run(with_sessions(settings, work))
    signed = f"; signed checkpoint {checkpoint}" if checkpoint is not None else "; no checkpoint was due"
    print(f"Sealed {sealed} audit row(s){signed}.")
    return 0
