"""``serve()`` as a process, for the server's process tests: ``python -m tests.support.slow_app`` and helpers.

:func:`served` starts ``slow_app`` (the real ``serve`` with a tiny app) with the given
arguments, waits for the URL it prints once listening, and kills whatever is left
(supervisor and workers) afterwards. The other helpers look at processes through ``/proc``
and talk HTTP on a new connection per request, so the kernel hands each to whichever
worker accepts it. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any, TypeVar

__all__ = [
    "REPO",
    "Served",
    "children",
    "fetch",
    "is_alive",
    "leftovers",
    "pids_answering",
    "process_state",
    "served",
    "wait_for",
]

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, timeout: float = 20.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def children(pid: int) -> set[int]:
    """Live (non-zombie) child processes of ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def leftovers(marker: Path) -> list[int]:
    """Processes whose command line names ``marker`` (a test's own directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(marker).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    state: Path
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stderr(self) -> str:
        return self.log.read_text()

    def workers(self, count: int, *, without: int | None = None) -> set[int]:
        def probe() -> set[int] | None:
            found = children(self.proc.pid)
            return found if len(found) == count and without not in found else None

        return wait_for(probe, what=f"{count} workers")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@contextmanager
def served(tmp_path: Path, *args: str) -> Iterator[Served]:
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.slow_app", "--state", str(state), *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        lines: Queue[str] = Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        try:
            url = lines.get(timeout=60).strip()
        except Empty:
            url = ""
        assert url.startswith("http://"), f"no URL on stdout; stderr:\n{log.read_text()}"
        yield Served(proc, url, state, log)
    finally:
        # The supervisor and its workers, also workers that outlived a killed supervisor: every
        # process whose command line names this test's state directory.
        for pid in leftovers(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()


def fetch(url: str, *, timeout: float = 30.0) -> tuple[int, Any]:
    """(status, JSON body) of a GET on a connection of its own (urllib closes it)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` in /proc (``R``, ``S``, ``T`` stopped, ``Z`` zombie...), None if gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def is_alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    return process_state(pid) not in (None, "Z")


def pids_answering(url: str, expected: set[int], *, attempts: int = 200) -> set[int]:
    """The worker pids that answer new connections, until all of ``expected`` have (bounded)."""
    seen: set[int] = set()
    for _ in range(attempts):
        _, body = fetch(f"{url}/pid")  # a new connection each time, taken by whichever worker accepts first
        seen.add(body["pid"])
        if seen >= expected:
            break
    return seen
