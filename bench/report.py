"""The benchmark's findings, as text for a person or JSON for a machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bench.cprofile_serve import Hotspot
from bench.cpu import CpuUse
from bench.inprocess import Rate
from bench.load import LoadResult
from bench.pyspy import Profile

__all__ = ["BenchReport", "CpuProfile", "RunReport", "combine", "render_text", "to_json"]

# The issues' goals for this 2-core machine, shown beside the figures (never asserted).
TARGET_RATE = 1000.0
TARGET_P99_MS = 50.0
# Issue 21: each issuer run's rate over cfssl's.
TARGET_CFSSL_RATIO = {"token": 1.5, "aws-ec2": 1.0, "renew": 1.0}


@dataclass(frozen=True, slots=True)
class RunReport:
    """One HTTP run: the load generator's view, the rows in the database, and the CPU it cost."""

    load: LoadResult
    rows: int  # certificate rows this run left in its database
    missing: int | None  # successes whose serial has no row (None: serials not collected)
    cpu: Mapping[str, CpuUse]
    # Connections the server opened to its database during the run, warm-up included (pool fill + churn).
    connections: int | None = None

    @property
    def answered(self) -> int:
        """Successes including the warm-up: what ``rows`` must equal."""
        return self.load.successes + self.load.warmup_successes

    @property
    def all_committed(self) -> bool:
        return self.rows == self.answered and not self.missing


@dataclass(frozen=True, slots=True)
class CpuProfile:
    """cProfile's CPU seconds over one timed window and the certificates issued in it."""

    total: float
    certificates: int
    own: Sequence[Hotspot]
    cumulative: Sequence[Hotspot]


@dataclass(frozen=True, slots=True)
class BenchReport:
    cores: int
    workers: int
    concurrency: int
    requests: int
    warmup: int
    max_seconds: float
    cpu_backend: str
    load_average: float | None
    runs: Sequence[RunReport]
    inprocess: Sequence[Rate]
    notes: Sequence[str] = ()
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    cprofiles: Mapping[str, CpuProfile] = field(default_factory=dict)
    # With several rounds: every round's runs, in order (``runs`` holds each run's median round).
    rounds: Sequence[Sequence[RunReport]] = ()

    def run(self, name: str) -> RunReport | None:
        return next((r for r in self.runs if r.load.name == name), None)


def combine(reports: Sequence[BenchReport]) -> BenchReport:
    """Rounds of the same benchmark as one report: for each run its median round by certificates/s
    (the lower middle of an even count), the last round's in-process figures and profiles, every
    round's rates kept in ``rounds``. Ratios are then the median runs' (each a real run, not a mean)."""
    if len(reports) == 1:
        return reports[0]
    first = reports[0]
    medians = []
    for run in first.runs:
        same = sorted((r for report in reports if (r := report.run(run.load.name)) is not None), key=_rate)
        medians.append(same[(len(same) - 1) // 2])
    notes = [*first.notes, f"{len(reports)} rounds, one after another: each run is its median round (see Rounds)"]
    return replace(
        reports[-1],
        load_average=first.load_average,
        runs=medians,
        notes=notes,
        rounds=[report.runs for report in reports],
    )


def _rate(run: RunReport) -> float:
    return run.load.rate


def _ms_per_cert(use: CpuUse | None, certs: int) -> str:
    if use is None or certs == 0:
        return "-"
    return f"{1000 * use.seconds / certs:.2f}"


def _errors(load: LoadResult) -> str:
    if not load.errors:
        return "none"
    return ", ".join(f"{k} ×{v}" for k, v in sorted(load.errors.items(), key=lambda kv: -kv[1]))


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _cfssl_ratios(report: BenchReport) -> list[tuple[str, float]]:
    """(run, its rate over cfssl's), one per issuer run with a target, when cfssl ran."""
    cfssl = report.run("cfssl")
    out: list[tuple[str, float]] = []
    for name in TARGET_CFSSL_RATIO:
        run = report.run(name)
        if run is not None and cfssl is not None and cfssl.load.rate > 0:
            out.append((name, run.load.rate / cfssl.load.rate))
    return out


def _targets(report: BenchReport) -> dict[str, dict[str, Any]]:
    """Issue 21's targets per issuer run: rate over cfssl's, p99; shown, never asserted."""
    ratios = dict(_cfssl_ratios(report))
    out: dict[str, dict[str, Any]] = {}
    for run in (r for r in report.runs if r.load.name in TARGET_CFSSL_RATIO):
        name, ratio = run.load.name, ratios.get(run.load.name)
        out[name] = {
            "cfssl_ratio": None if ratio is None else round(ratio, 3),
            "cfssl_ratio_target": TARGET_CFSSL_RATIO[name],
            "cfssl_ratio_met": None if ratio is None else ratio >= TARGET_CFSSL_RATIO[name],
            "p99_ms_target": TARGET_P99_MS,
            "p99_met": run.load.p99_ms <= TARGET_P99_MS,
        }
    return out


def _ratios(report: BenchReport) -> list[tuple[str, float]]:
    out = [(f"issuer {name} / cfssl", ratio) for name, ratio in _cfssl_ratios(report)]
    pipelines = {"token": "token: parse_csr + decide + sign", "aws-ec2": "aws-ec2: verify + parse_csr + decide + sign"}
    for name, label in pipelines.items():
        run = report.run(name)
        rate = next((r for r in report.inprocess if r.name == label), None)
        if run is not None and rate is not None and rate.per_second > 0:
            out.append((f"issuer {name} over HTTP / same steps in process", run.load.rate / rate.per_second))
    signer = next((r for r in report.inprocess if r.name.startswith("signer.issue")), None)
    for run in report.runs:
        if run.load.name != "cfssl" and signer is not None and signer.per_second > 0:
            out.append((f"issuer {run.load.name} over HTTP / signer alone", run.load.rate / signer.per_second))
    return out


def render_text(report: BenchReport) -> str:
    """The report a person reads: one table of HTTP runs, the in-process figures, ratios, targets."""
    lines = [
        f"issuer benchmark: {report.cores} cores, issuer serve --workers {report.workers}, "
        f"{report.concurrency} connections, {report.requests} timed requests per run "
        f"(+{report.warmup} warm-up), cap {report.max_seconds:g}s per phase; CPU from {report.cpu_backend}; "
        f"load average before: {'-' if report.load_average is None else f'{report.load_average:.2f}'}",
        "",
        "HTTP (load generator in its own process: see `load:` below). CPU over the timed window in % of one core,",
        f"with ms of CPU per certificate; machine = every core's busy time (at most {100 * report.cores}%), other "
        "processes included.",
        f"{'run':<8} {'certs/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} {'ok/sent':>11} "
        f"{'committed':>15} {'server CPU':>14} {'postgres CPU':>14} {'loadgen':>7} {'machine':>7}",
    ]
    for run in report.runs:
        load = run.load
        committed = f"{run.rows}/{run.answered} {'ok' if run.all_committed else 'NO'}"
        cpu = []
        for key in ("server", "postgres"):
            use = run.cpu.get(key)
            cpu.append(f"{use.percent:4.0f}% {_ms_per_cert(use, load.successes):>5}ms" if use else "-")
        client = 100 * load.client_cpu / load.elapsed if load.elapsed else 0.0
        machine = run.cpu.get("machine")
        lines.append(
            f"{load.name:<8} {load.rate:8.1f} {load.p50_ms:7.1f} {load.p95_ms:7.1f} {load.p99_ms:7.1f} "
            f"{load.max_ms:7.1f} {f'{load.successes}/{load.sent}':>11} {committed:>15} {cpu[0]:>14} "
            f"{cpu[1]:>14} {client:6.0f}% {f'{machine.percent:.0f}%' if machine else '-':>7}"
        )
    for run in report.runs:
        server = run.cpu.get("server")
        if server is not None and server.seconds > 0:
            opened = "" if run.connections is None else f"; {run.connections} Postgres connections opened in the run"
            lines.append(
                f"  {run.load.name} server CPU: {100 * server.system / server.seconds:.0f}% in the kernel "
                f"({server.processes} process{'es' if server.processes != 1 else ''}){opened}"
            )
    for run in report.runs:
        lines.append(f"  {run.load.name} load: {run.load.generator or '-'}")
    for run in report.runs:
        capped = " (stopped by the wall-clock cap)" if run.load.capped else ""
        missing = f"; {run.missing} answered serials have no row" if run.missing else ""
        lines.append(f"  {run.load.name} errors: {_errors(run.load)}{missing}{capped}")
    if report.rounds:
        names = [run.load.name for run in report.runs]
        lines += ["", "Rounds (certificates/s; the table above shows each run's median round)"]
        lines.append(f"{'round':<8} " + " ".join(f"{name:>8}" for name in names) + "   issuer/cfssl")
        for number, runs in enumerate(report.rounds, 1):
            rates = {run.load.name: run.load.rate for run in runs}
            cfssl = rates.get("cfssl")
            against = ", ".join(
                f"{name} {rates[name] / cfssl:.2f}" for name in TARGET_CFSSL_RATIO if name in rates and cfssl
            )
            row = " ".join(f"{rates[name]:8.1f}" if name in rates else f"{'-':>8}" for name in names)
            lines.append(f"{number:<8} {row}   {against or '-'}")
    if report.inprocess:
        lines += ["", "In process (no HTTP, no database; one core)"]
        lines += [f"  {r.name:<62} {r.per_second:9.1f}/s {r.micros:9.1f} µs" for r in report.inprocess]
    ratios = _ratios(report)
    targets = _targets(report)
    if ratios:
        lines += ["", "Ratios (issue 21's targets beside: shown, never asserted)"]
        for name, value in ratios:
            run_name = name.removeprefix("issuer ").removesuffix(" / cfssl")
            target = targets.get(run_name) if name.endswith(" / cfssl") else None
            beside = ""
            if target is not None:
                beside = (
                    f"   target >= {target['cfssl_ratio_target']:g}x: {_met(bool(target['cfssl_ratio_met']))}; "
                    f"p99 <= {TARGET_P99_MS:g} ms: {_met(bool(target['p99_met']))}"
                )
            lines.append(f"  {name:<62} {value:6.2f}{beside}")
    lines += ["", "Targets (issues; 2-core machine, load generator and Postgres beside it; never asserted)"]
    for run in (r for r in report.runs if r.load.name != "cfssl"):
        checks = []
        target = targets.get(run.load.name)
        if target is not None:
            met = target["cfssl_ratio_met"]
            checks.append(f">= {target['cfssl_ratio_target']:g}x cfssl: {'-' if met is None else _met(met)}")
        checks += [
            f">= {TARGET_RATE:g}/s: {_met(run.load.rate >= TARGET_RATE)}",
            f"p99 <= {TARGET_P99_MS:g} ms: {_met(run.load.p99_ms <= TARGET_P99_MS)}",
            f"all committed: {'yes' if run.all_committed else 'NO'}",
        ]
        lines.append(f"  {run.load.name:<8} " + "; ".join(checks))
    for label, profile in report.profiles.items():
        lines += ["", f"py-spy profile of the server during {label} ({profile.samples} samples; share of samples)"]
        lines.append("  self time:")
        lines += [f"    {100 * n / max(profile.samples, 1):5.1f}%  {frame}" for frame, n in profile.self_time[:15]]
        lines.append("  inclusive:")
        lines += [f"    {100 * n / max(profile.samples, 1):5.1f}%  {frame}" for frame, n in profile.inclusive[:25]]
    for label, prof in report.cprofiles.items():
        per = max(prof.certificates, 1)
        lines += [
            "",
            f"cProfile (CPU time) of the server during {label}: {prof.total:.2f} s for {prof.certificates} "
            f"certificates = {1e6 * prof.total / per:.0f} µs each; µs per certificate, share of the total",
            "  own time:",
        ]
        lines += [_hotspot(h.own, h, prof) for h in prof.own[:20]]
        lines.append("  with callees:")
        lines += [_hotspot(h.cumulative, h, prof) for h in prof.cumulative[:40]]
    if report.notes:
        lines += [""] + [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _hotspot(seconds: float, spot: Hotspot, cpu: CpuProfile) -> str:
    share = 100 * seconds / cpu.total if cpu.total else 0.0
    return f"    {1e6 * seconds / max(cpu.certificates, 1):8.1f} µs {share:5.1f}%  {spot.function} ×{spot.calls}"


def _cpu_json(use: CpuUse) -> dict[str, Any]:
    return {
        "seconds": round(use.seconds, 3),
        "system_seconds": round(use.system, 3),
        "wall": round(use.wall, 3),
        "percent": round(use.percent, 1),
    }


def to_json(report: BenchReport) -> dict[str, Any]:
    """The report as plain JSON values (serials left out)."""
    runs = []
    for run in report.runs:
        load = run.load
        runs.append(
            {
                "name": load.name,
                "certificates_per_second": round(load.rate, 2),
                "latency_ms": {
                    "p50": round(load.p50_ms, 2),
                    "p95": round(load.p95_ms, 2),
                    "p99": round(load.p99_ms, 2),
                    "max": round(load.max_ms, 2),
                },
                "sent": load.sent,
                "successes": load.successes,
                "elapsed_s": round(load.elapsed, 3),
                "errors": dict(load.errors),
                "capped": load.capped,
                "warmup": {"sent": load.warmup_sent, "successes": load.warmup_successes},
                "committed": {
                    "rows": run.rows,
                    "answered": run.answered,
                    "missing": run.missing,
                    "all": run.all_committed,
                },
                "cpu": {k: _cpu_json(v) for k, v in run.cpu.items()},
                "client_cpu_s": round(load.client_cpu, 3),
                "load_generator": load.generator,
                "postgres_connections_opened": run.connections,
            }
        )
    return {
        "cores": report.cores,
        "workers": report.workers,
        "concurrency": report.concurrency,
        "requests": report.requests,
        "warmup": report.warmup,
        "max_seconds": report.max_seconds,
        "cpu_backend": report.cpu_backend,
        "load_average": report.load_average,
        "runs": runs,
        "inprocess": [
            {"name": r.name, "count": r.count, "per_second": round(r.per_second, 1), "micros": round(r.micros, 1)}
            for r in report.inprocess
        ],
        "load_generators": sorted({r.load.generator for r in report.runs}),
        "ratios": {name: round(value, 3) for name, value in _ratios(report)},
        "targets": _targets(report),
        "profiles": {
            label: {"samples": p.samples, "self": list(p.self_time), "inclusive": list(p.inclusive)}
            for label, p in report.profiles.items()
        },
        "cprofiles": {
            label: {
                "cpu_seconds": round(p.total, 3),
                "certificates": p.certificates,
                "own": [[h.function, h.calls, round(h.own, 4)] for h in p.own],
                "cumulative": [[h.function, h.calls, round(h.cumulative, 4)] for h in p.cumulative],
            }
            for label, p in report.cprofiles.items()
        },
        "rounds": [{run.load.name: round(run.load.rate, 2) for run in runs} for runs in report.rounds],
        "notes": list(report.notes),
    }
