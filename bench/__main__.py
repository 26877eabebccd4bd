"""``python -m bench``: certificates per second through ``issuer serve``, beside cfssl and in-process figures.

    python -m bench [--requests N] [--concurrency C] [--workers W] [--json] [--no-cfssl]
                    [--method token|aws-ec2|renew|both|all] [--load-generator wrk|python|auto] [--py-spy DIR]

Steps: a throwaway Postgres database (``ISSUER_TEST_DATABASE_URL``'s server),
``issuer migrate`` and ``issuer ca init``; preloaded join tokens and signed EC2
identity documents; ``issuer serve --workers W``; per method a warm-up and a timed
window driven by ``wrk`` (:mod:`bench.wrk`) or, without it, the Python load generator in
its own process (:mod:`bench.load`); for ``renew``, certificates issued over HTTP first
(untimed) and renewal bodies built just before its run (:mod:`bench.renewal`); the
certificate rows counted against the 201s; in-process figures; then the same load
against ``cfssl serve`` with its Postgres certdb when ``cfssl`` is installed. Progress goes to stderr,
the report to stdout. Exit status: 0 when every answered certificate was
committed, 1 when a step failed or a certificate was answered without a row, 2 usage.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from bench import BenchError
from bench.cfssl import cfssl_binary
from bench.cpu import backend, load_average
from bench.issuer_server import EC2_ROLE, RENEW_ROLE, TOKEN_ROLE, prepare_issuer
from bench.load import Workload
from bench.options import Options, parse_args
from bench.postgres import base_url, throwaway_database
from bench.report import BenchReport, combine, render_text, to_json
from bench.runs import Later, Progress, cfssl_run, inprocess_figures, issuer_runs, renewals
from bench.workload import ec2_workload, token_workload
from tests.support.fake_aws_iid import FakeAwsSigner


async def run_rounds(opts: Options, progress: Progress) -> BenchReport:
    """``opts.rounds`` rounds of :func:`run_bench`, each run's median round reported (see :func:`combine`)."""
    reports = []
    for number in range(1, opts.rounds + 1):
        if opts.rounds > 1:
            progress(f"round {number} of {opts.rounds}")
        reports.append(await run_bench(opts, progress))
    return combine(reports)


async def run_bench(opts: Options, progress: Progress) -> BenchReport:
    """Run every step of the benchmark once; raises :class:`BenchError` when one fails."""
    pg = base_url(os.environ)
    load_before = load_average()
    work_dir = Path(tempfile.mkdtemp(prefix="issuer-bench-"))
    notes: list[str] = []
    try:
        async with throwaway_database(pg, prefix="bench_issuer", keep=opts.keep) as database_url:
            progress("issuer migrate, issuer ca init")
            aws = FakeAwsSigner.create(kind="rsa2048")
            aws_pem = aws.cert.public_bytes(serialization.Encoding.PEM)
            setup = await asyncio.to_thread(prepare_issuer, work_dir, database_url=database_url, aws_cert_pem=aws_pem)
            now = datetime.now(UTC)
            workloads: list[Workload | Later] = []
            total = opts.requests + opts.warmup
            if "token" in opts.methods:
                progress(f"token: inserting {total} join tokens in one transaction, making CSRs")
                tokens = await token_workload(
                    database_url, role=TOKEN_ROLE, count=opts.requests, warmup=opts.warmup, now=now
                )
                workloads.append(tokens)
            if "aws-ec2" in opts.methods:
                progress(f"aws-ec2: signing {total} identity documents (distinct instances), making CSRs")
                launched = now - timedelta(minutes=1)  # well inside the role's max_instance_age of 1h
                workloads.append(
                    await asyncio.to_thread(
                        ec2_workload, aws, role=EC2_ROLE, count=opts.requests, warmup=opts.warmup, launched=launched
                    )
                )
            if "renew" in opts.methods:
                workloads.append(renewals(opts, setup, progress))
                notes.append(
                    f"renew: {total} certificates (role {RENEW_ROLE}) were issued over HTTP through the token path "
                    "before its run, untimed; its renewal tokens (the agent's, 120 s) were made just before it"
                )
            found = await issuer_runs(opts, setup, workloads, work_dir, progress)
            runs, notes = found.runs, notes + found.notes
            progress(f"in-process figures ({opts.inprocess_count} iterations each)")
            inprocess = await inprocess_figures(opts, setup, found.workloads)
        if not opts.cfssl:
            notes.append("cfssl: skipped (--no-cfssl)")
        elif cfssl_binary() is None:
            notes.append("cfssl: skipped, no `cfssl` on PATH (Debian: apt-get install golang-cfssl)")
        else:
            runs.append(await cfssl_run(opts, pg, work_dir, progress))
        if opts.keep:
            notes.append(f"kept {work_dir} (logs, CA, load files) and the databases")
        notes.append(
            "Postgres CPU counts every `postgres` process on this machine and the backends they reaped "
            "(connections closed in the window), other databases' clients included: read it beside `machine`"
        )
        return BenchReport(
            cores=os.cpu_count() or 1,
            workers=opts.workers,
            concurrency=opts.concurrency,
            requests=opts.requests,
            warmup=opts.warmup,
            max_seconds=opts.max_seconds,
            cpu_backend=backend(),
            load_average=load_before,
            runs=runs,
            inprocess=inprocess,
            notes=notes,
            profiles=found.profiles,
            cprofiles=found.cprofiles,
        )
    finally:
        if not opts.keep:
            shutil.rmtree(work_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)

    def progress(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    try:
        report = asyncio.run(run_rounds(opts, progress))
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(to_json(report), indent=2) if opts.as_json else render_text(report))
    broken = [r.load.name for r in report.runs if r.missing or r.load.successes == 0]
    if broken:
        print(f"bench: error: runs with no success or with answered certificates missing: {broken}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
