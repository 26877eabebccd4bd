"""The runs ``python -m bench`` makes: the issuer's, cfssl's and the in-process figures (see :mod:`bench.__main__`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import load, wrk
from bench.cfssl import CERTDB_SCHEMA, CfsslServer, cfssl_binary
from bench.cprofile_serve import CProfileSwitch, top_functions
from bench.cpu import CpuMeter, MachineMeter, Meter, postgres_pids, process_tree
from bench.inprocess import Rate, measure
from bench.issuer_server import EC2_ROLE, PASSPHRASE, RENEW_ROLE, TOKEN_ROLE, IssuerServer, IssuerSetup
from bench.load import LoadResult, Window, Workload
from bench.options import Options
from bench.postgres import execute, fetch, sessions_opened, throwaway_database
from bench.pyspy import Profile, PySpy, py_spy_binary, summarise
from bench.renewal import issue_for_renewal, renew_workload
from bench.report import CpuProfile, RunReport
from bench.workload import Ec2Document, cfssl_workload
from ca.files import load_local_signer
from issuer.attest.ec2_certs import AwsCertStore, load_extra_certs
from issuer.settings import load_settings

Progress = Callable[[str], None]
Drive = Callable[..., Awaitable[LoadResult]]
# A workload made once the server is up (renew: its certificates are issued over HTTP first).
Later = Callable[[str], Awaitable[Workload]]
# Which certificate rows each run leaves: renewals keep the identity's method (token) and set renewed_from.
ROWS = {
    "token": (
        "SELECT serial FROM certificates WHERE method = 'token' AND role = $1 AND renewed_from IS NULL",
        TOKEN_ROLE,
    ),
    "aws-ec2": ("SELECT serial FROM certificates WHERE method = 'aws-ec2' AND renewed_from IS NULL", None),
    "renew": ("SELECT serial FROM certificates WHERE renewed_from IS NOT NULL", None),
}


def drive_for(opts: Options) -> Drive:
    return wrk.drive if opts.load_generator == "wrk" else load.drive


async def issuer_rows(database_url: str, run: str, serials: Sequence[str]) -> tuple[int, int]:
    """(the certificate rows ``run`` left, answered serials with no row): see :data:`ROWS`."""
    query, arg = ROWS[run]
    rows = await fetch(database_url, query, *((arg,) if arg is not None else ()))
    stored = {r["serial"] for r in rows}
    return len(stored), len(set(serials) - stored)


def meters_for(server_pid: int) -> dict[str, Meter]:
    return {
        "server": CpuMeter(lambda: process_tree(server_pid)),
        "postgres": CpuMeter(postgres_pids),
        "machine": MachineMeter(),
    }


def profiler_for(opts: Options, pids: Sequence[int], label: str, notes: list[str]) -> PySpy | None:
    if opts.py_spy is None:
        return None
    binary = py_spy_binary()
    if binary is None:
        notes.append("py-spy: not installed (.venv/bin/pip install py-spy); no profile taken")
        return None
    return PySpy(binary, pids, opts.py_spy, label=label)


@dataclass(slots=True)
class Findings:
    runs: list[RunReport]
    profiles: dict[str, Profile]
    cprofiles: dict[str, CpuProfile]
    notes: list[str]
    workloads: list[Workload]


async def issuer_runs(
    opts: Options, setup: IssuerSetup, planned: Sequence[Workload | Later], work_dir: Path, progress: Progress
) -> Findings:
    found = Findings(runs=[], profiles={}, cprofiles={}, notes=[], workloads=[])
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
            meters = meters_for(server.pid)
            spy = profiler_for(opts, process_tree(server.pid), f"issuer-{workload.name}", found.notes)
            observers: list[Window] = [spy] if spy is not None else []
            switch = CProfileSwitch(server.pid, cprofile_live) if cprofile_live is not None else None
            if switch is not None:
                observers.append(switch)
            progress(
                f"{workload.name}: {len(workload.warmup)} warm-up + {len(workload.bodies)} timed requests, "
                f"{opts.concurrency} connections"
            )
            sessions_before = await sessions_opened(setup.database_url)
            result = await drive_for(opts)(
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
            rows, missing = await issuer_rows(setup.database_url, workload.name, result.serials)
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


def proofs_of(workloads: Sequence[Workload], limit: int) -> tuple[list[str], list[Ec2Document]]:
    csrs: list[str] = []
    documents: list[Ec2Document] = []
    for workload in workloads:
        for body in list(workload.warmup or workload.bodies)[:limit]:
            fields = json.loads(body)
            csrs.append(fields["csr"])
            if "document" in fields:
                documents.append(Ec2Document(document=fields["document"], rsa2048=fields["rsa2048"]))
    return csrs, documents


def renewals(opts: Options, setup: IssuerSetup, progress: Progress) -> Later:
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


async def inprocess_figures(opts: Options, setup: IssuerSetup, workloads: Sequence[Workload]) -> list[Rate]:
    settings = load_settings(setup.config_path, env=setup.env)
    roles = {r.name: r for r in settings.roles}
    csrs, documents = proofs_of(workloads, limit=min(opts.inprocess_count, 200))
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


async def cfssl_run(opts: Options, pg: str, work_dir: Path, progress: Progress) -> RunReport:
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
            meters = meters_for(server.pid)
            sessions_before = await sessions_opened(database_url)
            result: LoadResult = await drive_for(opts)(
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
