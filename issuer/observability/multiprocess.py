"""Metrics across ``issuer serve --workers N``: the directory of prometheus_client's multi-process mode.

prometheus_client chooses at its first import whether values live in the process
(one process) or in memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR`` (many
processes, aggregated at scrape time). Workers are forked from the CLI process, so
:func:`metrics_directory` must run there before anything imports prometheus_client;
it refuses (``RuntimeError``) if something already did. This module imports
prometheus_client only inside the functions the workers call.

Files of workers that died stay: their counters still count (a counter never goes
down). The *live* gauges of a dead worker (in-flight requests, its start time) are
dropped by :func:`forget_dead_processes`, which each worker runs as it starts, so a
restarted worker tidies up after the one it replaces.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ENV", "forget_dead_processes", "forget_process", "metrics_directory"]

ENV = "PROMETHEUS_MULTIPROC_DIR"
_KINDS = ("counter", "gauge", "histogram", "summary")


@contextmanager
def metrics_directory(
    state_dir: Path, *, workers: int, environ: MutableMapping[str, str] | None = None
) -> Iterator[Path | None]:
    """The multi-process directory for this run, set in ``environ`` (default ``os.environ``) meanwhile.

    - ``PROMETHEUS_MULTIPROC_DIR`` already set (by the operator): that directory, created if
      missing, its old metric files removed (last run's values must not be added to this
      run's); left in place afterwards.
    - otherwise, ``workers`` > 1: a fresh directory under ``state_dir``, removed afterwards.
    - otherwise: None (one process keeps its values in memory).

    Raises ``RuntimeError`` if prometheus_client was imported before a directory could be set.
    """
    env = os.environ if environ is None else environ
    given = env.get(ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for kind in _KINDS:
            for stale in path.glob(f"{kind}_*.db"):
                stale.unlink(missing_ok=True)
        yield path
        return
    if workers <= 1:
        yield None
        return
    if "prometheus_client" in sys.modules:
        raise RuntimeError(f"prometheus_client was imported before {ENV} was set; the workers' metrics would be wrong")
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="metrics-", dir=state_dir))
    env[ENV] = str(path)
    try:
        yield path
    finally:
        env.pop(ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def forget_dead_processes(path: Path) -> list[int]:
    """Drop the live-gauge files of processes that no longer run; the pids dropped, sorted."""
    from prometheus_client.multiprocess import mark_process_dead

    dead = set()
    for file in path.glob("gauge_live*_*.db"):
        pid_text = file.stem.rsplit("_", 1)[-1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            dead.add(int(pid_text))
    for pid in dead:
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return sorted(dead)


def forget_process(path: Path, pid: int) -> None:
    """Drop the live-gauge files of ``pid`` (a worker stopping)."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True
