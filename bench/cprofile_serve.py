"""``issuer serve`` under cProfile, timed by CPU rather than the wall clock (``--cprofile DIR``).

    python -m bench.cprofile_serve OUT.pstats serve --port ... --workers 1

Profiling is switched on by SIGUSR1 and off by SIGUSR2 (the benchmark sends them when
its timed window opens and closes), then the statistics are written to OUT.pstats.
The timer is ``time.process_time``: on a machine where other processes compete for
the cores, a sampling profiler also counts the time a server waits to be scheduled
(it piles up right after a socket write wakes Postgres); CPU time does not.
Deterministic profiling slows Python-heavy code more than C-heavy code (SQLAlchemy
more than OpenSSL), so read the shares as an upper bound for Python frames.
Only one process is profiled: use ``--workers 1``.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

__all__ = ["CProfileSwitch", "Hotspot", "main", "top_functions"]


@dataclass(frozen=True, slots=True)
class Hotspot:
    """A function's CPU seconds: its own (``tottime``) and with its callees (``cumtime``)."""

    function: str
    calls: int
    own: float
    cumulative: float


def _name(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":  # a built-in
        return function
    parts = Path(filename).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else filename
    return f"{function} ({short}:{line})"


def top_functions(path: Path, *, top: int = 60) -> tuple[float, list[Hotspot], list[Hotspot]]:
    """(total CPU seconds, the top by own time, the top by cumulative time) of a pstats file."""
    stats = pstats.Stats(str(path))
    entries = [
        Hotspot(function=_name(key), calls=int(value[1]), own=float(value[2]), cumulative=float(value[3]))
        for key, value in stats.stats.items()  # type: ignore[attr-defined]
    ]
    total = float(stats.total_tt)  # type: ignore[attr-defined]
    by_own = sorted(entries, key=lambda h: -h.own)[:top]
    by_cumulative = sorted(entries, key=lambda h: -h.cumulative)[:top]
    return total, by_own, by_cumulative


class CProfileSwitch:
    """The benchmark's side: SIGUSR1 to ``pid`` when the window opens, SIGUSR2 when it closes."""

    def __init__(self, pid: int, output: Path) -> None:
        self._pid = pid
        self.output = output

    def start(self) -> None:
        self.output.unlink(missing_ok=True)
        os.kill(self._pid, signal.SIGUSR1)

    def stop(self) -> None:
        os.kill(self._pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not self.output.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m bench.cprofile_serve OUT.pstats serve [issuer serve options]", file=sys.stderr)
        return 2
    output, issuer_args = Path(args[0]), args[1:]
    # A fresh profiler per window: each file holds one timed window only.
    current: list[cProfile.Profile] = []

    def on(signum: int, frame: FrameType | None) -> None:
        profiler = cProfile.Profile(timer=time.process_time)
        current[:] = [profiler]
        profiler.enable()

    def off(signum: int, frame: FrameType | None) -> None:
        if current:
            profiler = current.pop()
            profiler.disable()
            # Written aside and renamed: the benchmark reads the file as soon as it exists.
            partial = output.with_name(output.name + ".partial")
            profiler.dump_stats(str(partial))
            os.replace(partial, output)

    signal.signal(signal.SIGUSR1, on)
    signal.signal(signal.SIGUSR2, off)
    from issuer.cli import main as issuer_main

    return issuer_main(issuer_args)


if __name__ == "__main__":
    raise SystemExit(main())
