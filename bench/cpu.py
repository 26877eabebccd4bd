"""CPU time of processes: the issuer's parent and workers, Postgres's backends.

psutil when it is installed; otherwise ``/proc/<pid>/stat`` (Linux). Each process
counts its own time and that of its children it has reaped, so the backends of
short-lived database connections (forked by the postmaster, gone before the window
closes) are still counted. The figures are for a person reading the report, not
for assertions.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "CpuMeter",
    "CpuUse",
    "MachineMeter",
    "Meter",
    "backend",
    "cpu_seconds",
    "load_average",
    "postgres_pids",
    "process_tree",
]

_PROC = Path("/proc")


def _psutil() -> Any | None:
    try:
        return importlib.import_module("psutil")
    except ImportError:
        return None


_PS = _psutil()


def backend() -> str:
    """Where the figures come from: ``psutil``, ``/proc`` or ``unavailable``."""
    if _PS is not None:
        return "psutil"
    return "/proc" if (_PROC / "self" / "stat").exists() else "unavailable"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces; fields follow the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the issuer's parent and its forked workers)."""
    if _PS is not None:
        try:
            proc = _PS.Process(pid)
            return [pid, *(p.pid for p in proc.children(recursive=True))]
        except _PS.Error:
            return []
    parents: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])  # field 4: ppid
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        tree.extend(children)
        frontier.extend(children)
    return tree


def postgres_pids() -> list[int]:
    """Processes named ``postgres`` on this machine (empty when Postgres runs elsewhere)."""
    if _PS is not None:
        return [p.pid for p in _PS.process_iter(["name"]) if p.info.get("name") == "postgres"]
    if not _PROC.exists():
        return []
    pids = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def cpu_seconds(pids: Sequence[int]) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds of each pid still alive, its reaped children's included."""
    out: dict[int, tuple[float, float]] = {}
    if _PS is not None:
        for pid in pids:
            try:
                t = _PS.Process(pid).cpu_times()
            except _PS.Error:
                continue
            children = (getattr(t, "children_user", 0.0), getattr(t, "children_system", 0.0))
            out[pid] = (float(t.user + children[0]), float(t.system + children[1]))
        return out
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime, cutime, cstime: fields 14-17 of /proc/<pid>/stat.
            user, system, child_user, child_system = (int(v) / ticks for v in fields[11:15])
            out[pid] = (user + child_user, system + child_system)
    return out


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU seconds used over a wall-clock window; ``percent`` of one core (200 = two cores busy)."""

    seconds: float
    wall: float
    processes: int
    system: float = 0.0  # of ``seconds``, in the kernel (system calls: sockets, pipes)

    @property
    def percent(self) -> float:
        return 100.0 * self.seconds / self.wall if self.wall > 0 else 0.0


class CpuMeter:
    """Measures the CPU the processes from ``pids()`` use between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: Callable[[], Sequence[int]]) -> None:
        self._pids = pids
        self._before: dict[int, tuple[float, float]] = {}
        self._started = 0.0

    def start(self) -> None:
        self._before = cpu_seconds(self._pids())
        self._started = time.monotonic()

    def stop(self) -> CpuUse:
        after = cpu_seconds(self._pids())
        wall = time.monotonic() - self._started
        # Processes born during the window count from zero; ones that died are lost (rare: a worker restart).
        user = system = 0.0
        for pid, (u, k) in after.items():
            u0, k0 = self._before.get(pid, (0.0, 0.0))
            user, system = user + max(0.0, u - u0), system + max(0.0, k - k0)
        return CpuUse(seconds=user + system, wall=wall, processes=len(after), system=system)


class Meter(Protocol):
    """Measures CPU between :meth:`start` and :meth:`stop`."""

    def start(self) -> None: ...

    def stop(self) -> CpuUse: ...


def _machine_busy() -> float | None:
    """Busy CPU seconds of the whole machine since boot (all cores), from ``/proc/stat``; None elsewhere."""
    try:
        first = (_PROC / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    # cpu user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    values = [int(v) for v in first[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class MachineMeter:
    """Every core's busy time between :meth:`start` and :meth:`stop`: shows what else competed for the CPU."""

    def __init__(self) -> None:
        self._before: float | None = None
        self._started = 0.0

    def start(self) -> None:
        self._before = _machine_busy()
        self._started = time.monotonic()

    def stop(self) -> CpuUse:
        after = _machine_busy()
        wall = time.monotonic() - self._started
        used = after - self._before if after is not None and self._before is not None else 0.0
        return CpuUse(seconds=max(used, 0.0), wall=wall, processes=0)


def load_average() -> float | None:
    """The 1-minute load average, or None where there is none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
