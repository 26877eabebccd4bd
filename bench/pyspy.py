"""Optional sampling profile of the server during the timed window (``--py-spy DIR``).

``py-spy record --format raw`` on every issuer process while the load runs
(installed separately: ``.venv/bin/pip install py-spy``; sampling another process
needs root or ptrace permission). :func:`summarise` turns the collapsed stacks into
the top frames by self time and by inclusive time, with line numbers dropped so a
function's samples add up.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Profile", "PySpy", "py_spy_binary", "summarise"]

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_LINENO = re.compile(r":\d+\)$")


def py_spy_binary() -> str | None:
    """py-spy next to this interpreter or on PATH, or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class PySpy:
    """One ``py-spy record`` per pid, started and stopped around the timed window."""

    def __init__(self, binary: str, pids: Sequence[int], out_dir: Path, *, label: str, rate: int = 200) -> None:
        self._binary = binary
        self._pids = list(pids)
        self._rate = rate
        self.outputs = [out_dir / f"{label}-{pid}.txt" for pid in self._pids]
        self._procs: list[subprocess.Popen[bytes]] = []
        out_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        for pid, output in zip(self._pids, self.outputs, strict=True):
            self._procs.append(
                subprocess.Popen(
                    [
                        self._binary,
                        "record",
                        "--pid",
                        str(pid),
                        "--format",
                        "raw",
                        "--rate",
                        str(self._rate),
                        "--nonblocking",
                        "--output",
                        str(output),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def stop(self) -> None:
        # py-spy writes its output when interrupted.
        for proc in self._procs:
            proc.send_signal(signal.SIGINT)
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass(frozen=True, slots=True)
class Profile:
    """Samples in total, and the heaviest frames (``function (file)``) with their sample counts."""

    samples: int
    self_time: Sequence[tuple[str, int]]
    inclusive: Sequence[tuple[str, int]]


def _frame(raw: str) -> str:
    return _LINENO.sub(")", raw.strip())


def summarise(paths: Sequence[Path], *, top: int = 25) -> Profile:
    """The top ``top`` frames by self and inclusive samples over the collapsed-stack files ``paths``."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            match = _LINE.match(line)
            if match is None:
                continue
            count = int(match["count"])
            frames = [_frame(f) for f in match["stack"].split(";") if f.strip()]
            if not frames:
                continue
            total += count
            self_time[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    return Profile(samples=total, self_time=self_time.most_common(top), inclusive=inclusive.most_common(top))
