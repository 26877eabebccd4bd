"""The load generator: a separate process that POSTs pre-built bodies over C keep-alive connections.

Parent side, :func:`drive`: write the workload to a file, start ``python -m
bench.load FILE``, and measure the CPU of the watched processes between the
child's ``started`` and ``finished`` lines; the child's last line is its result
as JSON. Child side, :func:`main`: read every body first (bodies, CSRs and proofs
were all made before), send the warm-up bodies (not timed), then the timed ones,
C at a time, until they are all answered or the wall-clock cap passes.

A response counts as a success when its status is the workload's success status;
every other outcome is counted by ``"<status> <code>"`` (the problem+json
``code``, cfssl's first error code) or by the client exception's class name.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bench import BenchError
from bench.cpu import CpuUse, Meter

PYTHON_GENERATOR = "python fallback (aiohttp in a child process; takes CPU from the servers)"

__all__ = ["PYTHON_GENERATOR", "LoadResult", "Window", "Workload", "drive", "error_code", "main", "percentile"]

_GRACE = 30.0  # beyond the cap: the child's start-up, reading the file, in-flight requests
_LINE_LIMIT = 256 * 1024 * 1024  # the result line carries every answered serial


@dataclass(frozen=True, slots=True)
class Workload:
    """What one run sends: a path, and one pre-built JSON body per request."""

    name: str
    path: str
    success_status: int
    bodies: Sequence[bytes]
    warmup: Sequence[bytes] = ()
    # Where a success's serial is in its response body (None: do not collect serials).
    serial_field: str | None = "serial"
    # ``Authorization`` header values, one per body and one per warm-up body (empty: none sent).
    authorizations: Sequence[str] = ()
    warmup_authorizations: Sequence[str] = ()

    def __post_init__(self) -> None:
        for auths, bodies in ((self.authorizations, self.bodies), (self.warmup_authorizations, self.warmup)):
            if auths and len(auths) != len(bodies):
                raise ValueError(f"{self.name}: {len(auths)} authorizations for {len(bodies)} bodies")

    def lines(self, *, warmup: bool) -> Iterator[bytes]:
        """The requests as ``<Authorization value or nothing>\\t<body>`` lines (no newline), in order.

        JSON bodies never hold a raw tab or newline, so a tab splits a line and a newline ends it.
        """
        bodies, auths = (self.warmup, self.warmup_authorizations) if warmup else (self.bodies, self.authorizations)
        for i, body in enumerate(bodies):
            yield (auths[i].encode() if auths else b"") + b"\t" + body


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The timed window of one run (warm-up excluded, except ``warmup_*`` and ``serials``)."""

    name: str
    sent: int
    successes: int
    elapsed: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: Mapping[str, int]
    capped: bool
    client_cpu: float
    warmup_sent: int = 0
    warmup_successes: int = 0
    serials: Sequence[str] = ()
    cpu: Mapping[str, CpuUse] = field(default_factory=dict)
    # What drove the load, for the report: "wrk 4.1.0, 2 threads, 16 connections" or the Python fallback.
    generator: str = ""

    @property
    def rate(self) -> float:
        """Successful issuances per second of the timed window."""
        return self.successes / self.elapsed if self.elapsed > 0 else 0.0


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, nearest rank; 0 for none."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# Parent side ---------------------------------------------------------------------------


class Window(Protocol):
    """Something to start when the timed window opens and stop when it closes (a profiler)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


async def drive(
    workload: Workload,
    *,
    base_url: str,
    concurrency: int,
    max_seconds: float,
    work_dir: Path,
    meters: Mapping[str, Meter] | None = None,
    observers: Sequence[Window] = (),
) -> LoadResult:
    """Run ``workload`` against ``base_url`` from a child process; the result with the meters' CPU use.

    ``observers`` are started and stopped with the timed window (after the meters, each time).

    Raises :class:`BenchError` ``load_failed`` when the child fails or outlives the cap by more than its grace.
    """
    meters = meters or {}
    spec = work_dir / f"load-{workload.name}.jsonl"
    header = {
        "name": workload.name,
        "url": base_url.rstrip("/") + workload.path,
        "concurrency": concurrency,
        "max_seconds": max_seconds,
        "success_status": workload.success_status,
        "serial_field": workload.serial_field,
        "warmup": len(workload.warmup),
    }
    with spec.open("wb") as fh:
        fh.write(json.dumps(header).encode() + b"\n")
        for line in (*workload.lines(warmup=True), *workload.lines(warmup=False)):
            fh.write(line + b"\n")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.load",
        str(spec),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": _project_root()},
        limit=_LINE_LIMIT,
    )
    assert child.stdout is not None
    assert child.stderr is not None
    cpu: dict[str, CpuUse] = {}
    result: dict[str, Any] | None = None
    # The cap bounds warm-up and timed window each; the grace covers start-up and the last answers.
    deadline = time.monotonic() + 2 * max_seconds + _GRACE
    try:
        while True:
            remaining = deadline - time.monotonic()
            line = await asyncio.wait_for(child.stdout.readline(), timeout=max(remaining, 0.1))
            if not line:
                break
            text = line.decode().strip()
            if text == "started":
                for meter in meters.values():
                    meter.start()
                for observer in observers:
                    observer.start()
            elif text == "finished":
                cpu = {name: meter.stop() for name, meter in meters.items()}
                for observer in observers:
                    observer.stop()
            elif text.startswith("{"):
                result = json.loads(text)
        await asyncio.wait_for(child.wait(), timeout=max(deadline - time.monotonic(), 0.1))
    except TimeoutError:
        child.kill()
        await child.wait()
        raise BenchError(
            f"the load generator for {workload.name} ran past its cap ({max_seconds:g}s + grace) and was killed",
            code="load_failed",
        ) from None
    stderr = (await child.stderr.read()).decode(errors="replace").strip()
    if child.returncode != 0 or result is None:
        tail = stderr.splitlines()[-1] if stderr else "no output"
        raise BenchError(
            f"the load generator for {workload.name} exited {child.returncode}: {tail}", code="load_failed"
        )
    return LoadResult(**{**result, "cpu": cpu})


def _project_root() -> str:
    root = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{existing}" if existing else root


# Child side ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    serials: list[str] = field(default_factory=list)
    sent: int = 0
    successes: int = 0


async def _phase(
    session: aiohttp.ClientSession,
    header: Mapping[str, Any],
    bodies: Sequence[bytes],
    *,
    deadline: float,
) -> tuple[_Tally, bool]:
    tally = _Tally()
    pending: Iterator[bytes] = iter(bodies)
    capped = False
    url, success, serial_field = header["url"], header["success_status"], header["serial_field"]
    headers = {"Content-Type": "application/json"}

    async def connection() -> None:
        nonlocal capped
        for line in pending:
            if time.monotonic() >= deadline:
                capped = True
                return
            authorization, _, body = line.partition(b"\t")
            sent = {**headers, "Authorization": authorization.decode()} if authorization else headers
            tally.sent += 1
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=sent) as resp:
                    payload = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.errors[type(exc).__name__] += 1
                continue
            tally.latencies.append(time.perf_counter() - started)
            if status == success:
                tally.successes += 1
                if serial_field:
                    tally.serials.append(str(json.loads(payload)[serial_field]))
            else:
                tally.errors[f"{status} {error_code(payload)}"] += 1

    await asyncio.gather(*(connection() for _ in range(header["concurrency"])))
    return tally, capped


def error_code(payload: bytes) -> str:
    """The problem+json ``code``, else cfssl's first error code, else ``-``."""
    try:
        body = json.loads(payload)
    except ValueError:
        return "-"
    if isinstance(body, dict):
        if isinstance(body.get("code"), str):
            return str(body["code"])
        errors = body.get("errors")  # cfssl: {"success": false, "errors": [{"code": 1000, "message": ...}]}
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("code", "-"))
    return "-"


def _cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(lines: Sequence[bytes]) -> dict[str, Any]:
    header = json.loads(lines[0])
    warmup_count = int(header["warmup"])
    warmup, bodies = lines[1 : 1 + warmup_count], lines[1 + warmup_count :]
    cap = float(header["max_seconds"])
    connector = aiohttp.TCPConnector(limit=int(header["concurrency"]), ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=max(cap, 1.0))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm, _ = await _phase(session, header, warmup, deadline=time.monotonic() + cap)
        print("started", flush=True)
        cpu_before, started = _cpu_now(), time.perf_counter()
        timed, capped = await _phase(session, header, bodies, deadline=time.monotonic() + cap)
        elapsed, client_cpu = time.perf_counter() - started, _cpu_now() - cpu_before
        print("finished", flush=True)
    ordered = sorted(timed.latencies)
    result = LoadResult(
        name=str(header["name"]),
        sent=timed.sent,
        successes=timed.successes,
        elapsed=elapsed,
        p50_ms=percentile(ordered, 50) * 1000,
        p95_ms=percentile(ordered, 95) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        max_ms=(ordered[-1] if ordered else 0.0) * 1000,
        errors=dict(timed.errors),
        capped=capped,
        client_cpu=client_cpu,
        warmup_sent=warm.sent,
        warmup_successes=warm.successes,
        serials=[*warm.serials, *timed.serials],
        generator=PYTHON_GENERATOR,
    )
    out = asdict(result)
    del out["cpu"]  # the parent measures those
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bench.load SPEC.jsonl  (written by bench.load.drive)", file=sys.stderr)
        return 2
    lines = Path(args[0]).read_bytes().splitlines()  # every body in memory before the first request
    print(json.dumps(asyncio.run(_run(lines))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
