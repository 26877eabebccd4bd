"""The load generator under ``wrk`` (C, epoll, LuaJIT): the same contract as :func:`bench.load.drive`.

The Python generator (:mod:`bench.load`) spends about as much CPU per request as the
server on this 2-core machine; wrk spends little. Per phase (warm-up first, when there is
one, then the timed window) :func:`drive` writes the requests to a file, one per line, and a
Lua script from ``wrk.lua`` beside this module, and runs ``wrk -t T -c C -d CAP -s SCRIPT``.

How the script bounds a run by count, and what it does after socket errors, is at the top
of ``wrk.lua``. In short: thread ``i`` takes lines ``i, i+T, ...``; each request is sent
once; a thread stops itself when every request it sent is answered and says so on stdout;
once every thread has, :func:`drive` interrupts wrk (SIGINT ends its sleep of ``-d``) and
reads what ``done()`` wrote. ``-d`` (``max_seconds``, rounded up to whole seconds) is the
wall-clock cap: when it passes first the run is ``capped`` and requests still in flight
are counted ``sent`` but not answered (``errors["unanswered"]``). So
``sent == successes + sum(errors.values())`` always.

wrk gives every thread ``C // T`` connections: ``T`` is at most 2 and at most ``C`` and, when
``C`` is odd, 1, so that all ``C`` connections are used (:func:`threads_for`).

Latency: wrk records each response's latency (µs, from the first byte written) in one
histogram, and before ``done()`` adds synthetic samples to it (its coordinated-omission
correction, meant for a fixed request rate; this is a closed loop). The script undoes
that exactly; :func:`drive` then checks that the histogram holds one sample per answered
request and computes the nearest-rank percentiles like the Python generator.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import BenchError
from bench.cpu import CpuUse, Meter, cpu_seconds
from bench.load import LoadResult, Window, Workload, error_code

__all__ = ["Phase", "drive", "run_phase", "threads_for", "wrk_binary", "wrk_version"]

_SCRIPT = Path(__file__).with_name("wrk.lua")
_GRACE = 30.0  # beyond the cap: start-up, the last answers, done() writing the result
_MARK = b"wrk-bench "


def wrk_binary() -> str | None:
    """``wrk`` on PATH, or None."""
    return shutil.which("wrk")


def wrk_version(binary: str) -> str:
    """``4.1.0`` from ``wrk -v`` (which prints its version and exits 1), or ``?``."""
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    found = re.search(r"wrk\s+(?:\S*/)?(\d+(?:\.\d+)+)", result.stdout + result.stderr)
    return found.group(1) if found else "?"


def threads_for(concurrency: int) -> int:
    """wrk threads for ``concurrency`` connections: 2 when that divides them, else 1 (see the module)."""
    return 2 if concurrency >= 2 and concurrency % 2 == 0 else 1


def _lua_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass(slots=True)
class Phase:
    """What one wrk run counted (``done()``'s file, read back)."""

    sent: int = 0
    answered: int = 0
    successes: int = 0
    lost: int = 0  # requests before a resend after a socket error
    bodies: int = 0  # requests the threads were given
    errors: Counter[str] = field(default_factory=Counter)
    serials: list[str] = field(default_factory=list)
    latencies: list[tuple[int, int]] = field(default_factory=list)  # (µs, how many), ascending
    socket_errors: dict[str, int] = field(default_factory=dict)
    wrk_samples: int = 0  # what wrk's own histogram counted, its synthetic samples included
    elapsed: float = 0.0
    client_cpu: float = 0.0
    capped: bool = False

    def percentile_ms(self, q: float) -> float:
        """Nearest rank over the histogram, as :func:`bench.load.percentile` over the raw values."""
        total = sum(n for _, n in self.latencies)
        if total == 0:
            return 0.0
        rank, seen = max(1, math.ceil(q / 100 * total)), 0
        for micros, n in self.latencies:
            seen += n
            if seen >= rank:
                return micros / 1000
        return self.latencies[-1][0] / 1000


def _parse(result: Path) -> Phase:
    phase = Phase()
    complete = False
    for raw in result.read_text().splitlines():
        kind, _, rest = raw.partition(" ")
        if kind == "thread":
            _, total, taken, answered, lost, successes = (int(v) for v in rest.split())
            phase.bodies += total
            phase.sent += taken
            phase.answered += answered
            phase.lost += lost
            phase.successes += successes
        elif kind == "serial":
            phase.serials.append(rest)
        elif kind == "failure":
            status, _, body = rest.partition(" ")
            phase.errors[f"{status} {error_code(bytes.fromhex(body))}"] += 1
        elif kind == "latency":
            micros, count = rest.split()
            phase.latencies.append((int(micros), int(float(count))))
        elif kind == "summary":
            values = [int(v) for v in rest.split()]
            phase.wrk_samples = values[7]
            phase.socket_errors = {
                k: v for k, v in zip(("connect", "read", "write", "timeout"), values[2:6], strict=True) if v
            }
        elif kind == "end":
            complete = True
    if not complete:
        raise BenchError(f"wrk's result file {result} is incomplete", code="load_failed")
    phase.latencies.sort()
    unanswered = phase.sent - phase.answered
    if unanswered:
        detail = ", ".join(f"{k} {v}" for k, v in phase.socket_errors.items())
        phase.errors[f"unanswered ({detail or 'in flight at the cap'})"] += unanswered
    assert phase.successes + sum(phase.errors.values()) == phase.sent, "every sent request is counted once"
    if phase.answered != sum(n for _, n in phase.latencies) + phase.socket_errors.get("timeout", 0):
        raise BenchError(
            f"wrk's latency histogram holds {sum(n for _, n in phase.latencies)} samples for "
            f"{phase.answered} answers: it is not one sample per request",
            code="load_failed",
        )
    return phase


async def run_phase(
    binary: str,
    workload: Workload,
    *,
    warmup: bool,
    base_url: str,
    concurrency: int,
    threads: int,
    max_seconds: float,
    work_dir: Path,
    on_start: Sequence[Window] = (),
    on_stop: Sequence[Window] = (),
) -> Phase:
    """One wrk run over the warm-up or the timed bodies of ``workload``.

    ``on_start`` windows start when the first thread starts sending; ``on_stop`` ones stop
    when the last thread is done (or wrk exits at its cap). Raises :class:`BenchError`
    ``load_failed`` when wrk fails or outlives the cap by more than its grace.
    """
    if not 1 <= threads <= concurrency:
        raise ValueError(f"wrk needs 1 <= threads ({threads}) <= connections ({concurrency})")
    stem = f"wrk-{workload.name}-{'warmup' if warmup else 'timed'}"
    bodies, result, script = (work_dir / f"{stem}{ext}" for ext in (".lines", ".result", ".lua"))
    with bodies.open("wb") as fh:
        for line in workload.lines(warmup=warmup):
            fh.write(line + b"\n")
    result.unlink(missing_ok=True)
    constants = {
        "BODIES": _lua_string(str(bodies)),
        "RESULT": _lua_string(str(result)),
        "PATH": _lua_string(workload.path),
        "THREADS": str(threads),
        "CONNECTIONS": str(concurrency),
        "SUCCESS": str(workload.success_status),
        "SERIAL_PATTERN": (
            "nil" if workload.serial_field is None else _lua_string(f'"{workload.serial_field}"%s*:%s*"([^"]*)"')
        ),
    }
    text = _SCRIPT.read_text()
    for name, value in constants.items():
        text = text.replace(f"@{name}@", value)
    script.write_text(text)
    cap = max(1, math.ceil(max_seconds))
    command = [binary, "-t", str(threads), "-c", str(concurrency), "-d", f"{cap}s", "--timeout", f"{cap}s"]
    child = await asyncio.create_subprocess_exec(
        *command, "-s", str(script), base_url.rstrip("/") + workload.path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stderr is not None
    phase = Phase()
    started_at: float | None = None
    cpu_before = 0.0
    done: set[str] = set()
    deadline = time.monotonic() + cap + _GRACE

    def stop_window() -> None:
        nonlocal started_at
        if started_at is not None:
            phase.elapsed = time.monotonic() - started_at
            phase.client_cpu = sum(sum(v) for v in cpu_seconds([child.pid]).values()) - cpu_before
            started_at = None
            for window in on_stop:
                window.stop()

    try:
        while True:
            line = await asyncio.wait_for(child.stdout.readline(), timeout=max(deadline - time.monotonic(), 0.1))
            if not line:
                break
            if not line.startswith(_MARK):
                continue  # wrk's own summary
            what, _, thread = line[len(_MARK) :].decode().strip().partition(" ")
            if what == "start" and started_at is None and not done:
                cpu_before = sum(sum(v) for v in cpu_seconds([child.pid]).values())
                for window in on_start:
                    window.start()
                started_at = time.monotonic()
            elif what == "done":
                done.add(thread)
                if len(done) == threads:
                    stop_window()
                    asyncio.get_running_loop().create_task(_interrupt(child))
        await asyncio.wait_for(child.wait(), timeout=max(deadline - time.monotonic(), 0.1))
    except TimeoutError:
        child.kill()
        await child.wait()
        raise BenchError(
            f"wrk for {workload.name} ran past its cap ({cap}s + grace) and was killed", code="load_failed"
        ) from None
    finally:
        stop_window()  # the cap, or a failure: the windows still stop
    stderr = (await child.stderr.read()).decode(errors="replace").strip()
    if child.returncode != 0 or not result.exists():
        tail = stderr.splitlines()[-1] if stderr else "no output"
        raise BenchError(f"wrk for {workload.name} exited {child.returncode}: {tail}", code="load_failed")
    parsed = _parse(result)
    parsed.elapsed, parsed.client_cpu = phase.elapsed, phase.client_cpu
    parsed.capped = len(done) < threads
    if parsed.bodies != len(workload.warmup if warmup else workload.bodies):
        raise BenchError(f"wrk's threads took {parsed.bodies} bodies of {workload.name}", code="load_failed")
    return parsed


async def _interrupt(child: asyncio.subprocess.Process) -> None:
    """SIGINT until wrk exits: it ends wrk's sleep of ``-d`` (and is ignored while wrk starts its threads)."""
    while child.returncode is None:
        child.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.shield(child.wait()), timeout=0.5)
        except TimeoutError:
            continue


class _MeterWindow:
    """Meters as windows: their CPU use kept when the window stops."""

    def __init__(self, meters: Mapping[str, Meter]) -> None:
        self.meters = meters
        self.cpu: dict[str, CpuUse] = {}

    def start(self) -> None:
        for meter in self.meters.values():
            meter.start()

    def stop(self) -> None:
        self.cpu = {name: meter.stop() for name, meter in self.meters.items()}


async def drive(
    workload: Workload,
    *,
    base_url: str,
    concurrency: int,
    max_seconds: float,
    work_dir: Path,
    meters: Mapping[str, Meter] | None = None,
    observers: Sequence[Window] = (),
    threads: int | None = None,
    binary: str | None = None,
) -> LoadResult:
    """Run ``workload`` against ``base_url`` with wrk: :func:`bench.load.drive`'s contract.

    ``threads`` defaults to :func:`threads_for`; ``binary`` to ``wrk`` on PATH. Meters, then
    ``observers``, start and stop with the timed window.
    """
    binary = binary or wrk_binary()
    if binary is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)", code="load_failed")
    threads = threads or threads_for(concurrency)
    common = {
        "base_url": base_url,
        "concurrency": concurrency,
        "threads": threads,
        "max_seconds": max_seconds,
        "work_dir": work_dir,
    }
    warm = Phase()
    if workload.warmup:
        warm = await run_phase(binary, workload, warmup=True, **common)  # type: ignore[arg-type]
    metered = _MeterWindow(meters or {})
    timed = await run_phase(
        binary,
        workload,
        warmup=False,
        on_start=[metered, *observers],
        on_stop=[metered, *observers],
        **common,  # type: ignore[arg-type]
    )
    return LoadResult(
        name=workload.name,
        sent=timed.sent,
        successes=timed.successes,
        elapsed=timed.elapsed,
        p50_ms=timed.percentile_ms(50),
        p95_ms=timed.percentile_ms(95),
        p99_ms=timed.percentile_ms(99),
        max_ms=timed.latencies[-1][0] / 1000 if timed.latencies else 0.0,
        errors=dict(timed.errors),
        capped=timed.capped,
        client_cpu=timed.client_cpu,
        warmup_sent=warm.sent,
        warmup_successes=warm.successes,
        serials=[*warm.serials, *timed.serials],
        cpu=metered.cpu,
        generator=f"wrk {wrk_version(binary)}, {threads} thread{'s' if threads != 1 else ''}, "
        f"{concurrency // threads * threads} connections",
    )
