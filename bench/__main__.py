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

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from bench import BenchError, load, wrk
from bench.cfssl import CERTDB_SCHEMA, CfsslServer, cfssl_binary
from bench.cprofile_serve import CProfileSwitch, top_functions
from bench.cpu import CpuMeter, MachineMeter, Meter, backend, load_average, postgres_pids, process_tree
from bench.inprocess import Rate, measure
from bench.issuer_server import EC2_ROLE, PASSPHRASE, RENEW_ROLE, TOKEN_ROLE, IssuerServer, IssuerSetup, prepare_issuer
from bench.load import LoadResult, Window, Workload
from bench.postgres import base_url, execute, fetch, sessions_opened, throwaway_database
from bench.pyspy import Profile, PySpy, py_spy_binary, summarise
from bench.renewal import issue_for_renewal, renew_workload
from bench.report import BenchReport, CpuProfile, RunReport, combine, render_text, to_json
from bench.workload import Ec2Document, cfssl_workload, ec2_workload, token_workload
from ca.files import load_local_signer
from issuer.attest.ec2_certs import AwsCertStore, load_extra_certs
from issuer.settings import load_settings
from tests.support.fake_aws_iid import FakeAwsSigner

Progress = Callable[[str], None]
Drive = Callable[..., Awaitable[LoadResult]]
# A workload made once the server is up (renew: its certificates are issued over HTTP first).
Later = Callable[[str], Awaitable[Workload]]
METHODS = ("token", "aws-ec2", "renew")
# Which certificate rows each run leaves: renewals keep the identity's method (token) and set renewed_from.
ROWS = {
    "token": (
        "SELECT serial FROM certificates WHERE method = 'token' AND role = $1 AND renewed_from IS NULL",
        TOKEN_ROLE,
    ),
    "aws-ec2": ("SELECT serial FROM certificates WHERE method = 'aws-ec2' AND renewed_from IS NULL", None),
    "renew": ("SELECT serial FROM certificates WHERE renewed_from IS NOT NULL", None),
}


@dataclass(frozen=True, slots=True)
class Options:
    requests: int
    concurrency: int
    workers: int
    warmup: int
    methods: tuple[str, ...]
    cfssl: bool
    max_seconds: float
    inprocess_count: int
    py_spy: Path | None
    cprofile: Path | None
    keep: bool
    as_json: bool
    load_generator: str = "python"  # resolved: wrk or python
    rounds: int = 1


def parse_args(argv: Sequence[str] | None) -> Options:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure certificates/s, latency and CPU of `issuer serve` on a throwaway Postgres database, "
        "with in-process figures and cfssl (when installed) for comparison.",
        epilog="example: python -m bench --requests 5000 --concurrency 16 --workers 2",
    )
    parser.add_argument("--requests", type=int, default=5000, metavar="N", help="timed requests per run (5000)")
    parser.add_argument("--concurrency", type=int, default=16, metavar="C", help="client connections (16)")
    parser.add_argument(
        "--workers", type=int, default=cores, metavar="W", help=f"issuer serve --workers (one per core: {cores})"
    )
    parser.add_argument("--warmup", type=int, default=200, metavar="N", help="untimed requests first, per run (200)")
    parser.add_argument(
        "--method",
        choices=(*METHODS, "both", "all"),
        default="all",
        help="issuer runs: one method, both (token and aws-ec2) or all (token, aws-ec2, renew; default)",
    )
    parser.add_argument(
        "--load-generator",
        choices=("wrk", "python", "auto"),
        default="auto",
        help="wrk, or the Python fallback (aiohttp in a child process; takes CPU from the servers); "
        "auto (default): wrk when it is on PATH",
    )
    parser.add_argument("--no-cfssl", action="store_true", help="skip the cfssl comparison")
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, metavar="S", help="wall-clock cap per warm-up and timed window (60)"
    )
    parser.add_argument(
        "--inprocess-count", type=int, default=1000, metavar="N", help="iterations of each in-process figure (1000)"
    )
    parser.add_argument(
        "--py-spy", type=Path, metavar="DIR", help="profile the server with py-spy during each timed window into DIR"
    )
    parser.add_argument(
        "--cprofile",
        type=Path,
        metavar="DIR",
        help="profile the server's CPU time with cProfile during each timed window into DIR (needs --workers 1)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="R",
        help="run everything R times, one round after another, and report each run's median round; on a shared "
        "machine a minute's rates vary by a fifth, cfssl's as much as ours (default 3; 1 with --py-spy or --cprofile)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and databases (for debugging)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    profiling = args.py_spy is not None or args.cprofile is not None
    if args.rounds is None:
        args.rounds = 1 if profiling else 3
    for name in ("requests", "concurrency", "workers", "inprocess_count", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.cprofile and args.workers != 1:
        parser.error("--cprofile profiles one process: use it with --workers 1")
    if args.warmup < 0 or args.max_seconds <= 0:
        parser.error("--warmup must be >= 0 and --max-seconds > 0")
    generator = args.load_generator
    if generator == "auto":
        generator = "wrk" if wrk.wrk_binary() is not None else "python"
    elif generator == "wrk" and wrk.wrk_binary() is None:
        parser.error("--load-generator wrk: no `wrk` on PATH (Debian: apt-get install wrk)")
    methods = {"both": ("token", "aws-ec2"), "all": METHODS}.get(args.method, (args.method,))
    return Options(
        requests=args.requests,
        concurrency=args.concurrency,
        workers=args.workers,
        warmup=args.warmup,
        methods=methods,
        cfssl=not args.no_cfssl,
        max_seconds=args.max_seconds,
        inprocess_count=args.inprocess_count,
        py_spy=args.py_spy,
        cprofile=args.cprofile,
        keep=args.keep,
        as_json=args.json,
        load_generator=generator,
        rounds=args.rounds,
    )


def _drive(opts: Options) -> Drive:
    return wrk.drive if opts.load_generator == "wrk" else load.drive


async def _issuer_rows(database_url: str, run: str, serials: Sequence[str]) -> tuple[int, int]:
    """(the certificate rows ``run`` left, answered serials with no row): see :data:`ROWS`."""
    query, arg = ROWS[run]
    rows = await fetch(database_url, query, *((arg,) if arg is not None else ()))
    stored = {r["serial"] for r in rows}
    return len(stored), len(set(serials) - stored)


def _meters(server_pid: int) -> dict[str, Meter]:
    return {
        "server": CpuMeter(lambda: process_tree(server_pid)),
        "postgres": CpuMeter(postgres_pids),
        "machine": MachineMeter(),
    }


def _profiler(opts: Options, pids: Sequence[int], label: str, notes: list[str]) -> PySpy | None:
    if opts.py_spy is None:
        return None
    binary = py_spy_binary()
    if binary is None:
        notes.append("py-spy: not installed (.venv/bin/pip install py-spy); no profile taken")
        return None
    return PySpy(binary, pids, opts.py_spy, label=label)


@dataclass(slots=True)
class _Findings:
    runs: list[RunReport]
    profiles: dict[str, Profile]
    cprofiles: dict[str, CpuProfile]
    notes: list[str]
    workloads: list[Workload]


async def _issuer_runs(
    opts: Options, setup: IssuerSetup, planned: Sequence[Workload | Later], work_dir: Path, progress: Progress
) -> _Findings:
    found = _Findings(runs=[], profiles={}, cprofiles={}, notes=[], workloads=[])
    if opts.cprofile is not None:
        opts.cprofile.mkdir(parents=True, exist_ok=True)
    cprofile_live = opts.cprofile / "issuer.pstats" if opts.cprofile is not None else None
    server = IssuerServer(setup, workers=opts.workers, log_path=work_dir / "issuer.log", cprofile_output=cprofile_live)
    try:
        progress(f"starting issuer serve --workers {opts.workers} on {server.url}")
        await server.wait_ready()
        for plan in planned:
            workload = plan if isinstance(plan, Workload) else await plan(server.url)
            found.workloads.append(workload)
            meters = _meters(server.pid)
            spy = _profiler(opts, process_tree(server.pid), f"issuer-{workload.name}", found.notes)
            observers: list[Window] = [spy] if spy is not None else []
            switch = CProfileSwitch(server.pid, cprofile_live) if cprofile_live is not None else None
            if switch is not None:
                observers.append(switch)
            progress(
                f"{workload.name}: {len(workload.warmup)} warm-up + {len(workload.bodies)} timed requests, "
                f"{opts.concurrency} connections"
            )
            sessions_before = await sessions_opened(setup.database_url)
            result = await _drive(opts)(
                workload,
                base_url=server.url,
                concurrency=opts.concurrency,
                max_seconds=opts.max_seconds,
                work_dir=work_dir,
                meters=meters,
                observers=observers,
            )
            # Minus one: our own connection that asks.
            opened = await sessions_opened(setup.database_url) - sessions_before - 1
            rows, missing = await _issuer_rows(setup.database_url, workload.name, result.serials)
            found.runs.append(RunReport(load=result, rows=rows, missing=missing, cpu=result.cpu, connections=opened))
            progress(f"{workload.name}: {result.rate:.1f} certificates/s, p99 {result.p99_ms:.1f} ms")
            if spy is not None:
                found.profiles[workload.name] = summarise(spy.outputs)
                found.notes.append(f"py-spy: collapsed stacks in {opts.py_spy}; rates under profiling are lower")
            if switch is not None and opts.cprofile is not None and switch.output.exists():
                kept = opts.cprofile / f"issuer-{workload.name}.pstats"
                switch.output.replace(kept)
                total, own, cumulative = top_functions(kept)
                found.cprofiles[workload.name] = CpuProfile(
                    total=total, certificates=result.successes, own=own, cumulative=cumulative
                )
                found.notes.append(f"cProfile: {kept} (python -m pstats); rates under profiling are lower")
    finally:
        server.stop()
    return found


def _proofs(workloads: Sequence[Workload], limit: int) -> tuple[list[str], list[Ec2Document]]:
    csrs: list[str] = []
    documents: list[Ec2Document] = []
    for workload in workloads:
        for body in list(workload.warmup or workload.bodies)[:limit]:
            fields = json.loads(body)
            csrs.append(fields["csr"])
            if "document" in fields:
                documents.append(Ec2Document(document=fields["document"], rsa2048=fields["rsa2048"]))
    return csrs, documents


def _renewals(opts: Options, setup: IssuerSetup, progress: Progress) -> Later:
    async def build(server_url: str) -> Workload:
        total = opts.requests + opts.warmup
        progress(f"renew: issuing {total} certificates to renew over HTTP (token path, untimed)")
        held = await issue_for_renewal(
            setup.database_url,
            server_url,
            role=RENEW_ROLE,
            count=total,
            now=datetime.now(UTC),
            concurrency=opts.concurrency,
        )
        progress(f"renew: building {total} renewals (new key's CSR + token signed by the old key)")
        audience = load_settings(setup.config_path, env=setup.env).audience
        return await asyncio.to_thread(
            renew_workload, held, audience=audience, warmup=opts.warmup, now=datetime.now(UTC)
        )

    return build


async def _inprocess(opts: Options, setup: IssuerSetup, workloads: Sequence[Workload]) -> list[Rate]:
    settings = load_settings(setup.config_path, env=setup.env)
    roles = {r.name: r for r in settings.roles}
    csrs, documents = _proofs(workloads, limit=min(opts.inprocess_count, 200))
    return await measure(
        signer=load_local_signer(setup.ca_dir, passphrase=PASSPHRASE.encode()),
        csrs=csrs,
        token_role=roles[TOKEN_ROLE] if {"token", "renew"} & set(opts.methods) else None,
        ec2_role=roles[EC2_ROLE] if "aws-ec2" in opts.methods else None,
        documents=documents,
        aws_certs=AwsCertStore.builtin(load_extra_certs(settings.ec2.extra_certs)),
        trust_domain=settings.trust_domain,
        count=opts.inprocess_count,
    )


async def _cfssl_run(opts: Options, pg: str, work_dir: Path, progress: Progress) -> RunReport:
    binary = cfssl_binary()
    assert binary is not None
    async with throwaway_database(pg, prefix="bench_cfssl", keep=opts.keep) as database_url:
        await execute(database_url, CERTDB_SCHEMA)
        progress(f"cfssl: making {opts.warmup + opts.requests} CSRs")
        workload = await asyncio.to_thread(cfssl_workload, count=opts.requests, warmup=opts.warmup)
        server = CfsslServer(binary, work_dir, database_url=database_url)
        try:
            progress(f"starting cfssl serve on {server.url} (certdb in Postgres)")
            await server.wait_ready()
            progress(f"cfssl: {opts.warmup} warm-up + {opts.requests} timed requests, {opts.concurrency} connections")
            meters = _meters(server.pid)
            sessions_before = await sessions_opened(database_url)
            result: LoadResult = await _drive(opts)(
                workload,
                base_url=server.url,
                concurrency=opts.concurrency,
                max_seconds=opts.max_seconds,
                work_dir=work_dir,
                meters=meters,
            )
            opened = await sessions_opened(database_url) - sessions_before - 1
        finally:
            server.stop()
        rows = (await fetch(database_url, "SELECT count(*) AS n FROM certificates"))[0]["n"]
        progress(f"cfssl: {result.rate:.1f} certificates/s, p99 {result.p99_ms:.1f} ms")
        return RunReport(load=result, rows=int(rows), missing=None, cpu=result.cpu, connections=opened)


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
                workloads.append(_renewals(opts, setup, progress))
                notes.append(
                    f"renew: {total} certificates (role {RENEW_ROLE}) were issued over HTTP through the token path "
                    "before its run, untimed; its renewal tokens (the agent's, 120 s) were made just before it"
                )
            found = await _issuer_runs(opts, setup, workloads, work_dir, progress)
            runs, notes = found.runs, notes + found.notes
            progress(f"in-process figures ({opts.inprocess_count} iterations each)")
            inprocess = await _inprocess(opts, setup, found.workloads)
        if not opts.cfssl:
            notes.append("cfssl: skipped (--no-cfssl)")
        elif cfssl_binary() is None:
            notes.append("cfssl: skipped, no `cfssl` on PATH (Debian: apt-get install golang-cfssl)")
        else:
            runs.append(await _cfssl_run(opts, pg, work_dir, progress))
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
