"""Where the workers' metrics go: the directory ``issuer serve`` sets up before prometheus_client is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from issuer.observability.multiprocess import ENV, forget_dead_processes, metrics_directory


def test_one_process_needs_no_directory(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    with metrics_directory(tmp_path / "state", workers=1, environ=env) as path:
        assert path is None and env == {}
    assert not (tmp_path / "state").exists()


def test_an_operators_directory_is_used_and_last_runs_values_dropped(tmp_path: Path) -> None:
    given = tmp_path / "prom"
    given.mkdir()
    for name in ("counter_123.db", "histogram_9.db", "gauge_livesum_77.db", "notes.txt"):
        (given / name).write_text("x")
    env = {ENV: str(given)}
    with metrics_directory(tmp_path / "state", workers=4, environ=env) as path:
        assert path == given
        assert sorted(p.name for p in given.iterdir()) == ["notes.txt"]
    assert given.is_dir() and env == {ENV: str(given)}  # the operator's: left in place


def test_too_late_once_prometheus_client_is_imported(tmp_path: Path) -> None:
    import prometheus_client  # noqa: F401  (the point: it is imported already)

    with pytest.raises(RuntimeError, match="imported before PROMETHEUS_MULTIPROC_DIR"):
        with metrics_directory(tmp_path / "state", workers=2, environ={}):
            pass


def test_a_fresh_directory_for_workers_is_removed_afterwards(tmp_path: Path) -> None:
    # In a process of its own: this one has imported prometheus_client already.
    script = f"""
import os, sys
from pathlib import Path
from issuer.observability.multiprocess import metrics_directory
with metrics_directory(Path({str(tmp_path / "state")!r}), workers=2) as path:
    import prometheus_client.values as values
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(path) and path.parent.name == "state"
    assert values.ValueClass is not values.MutexValue  # files, not memory
    print(path)
assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ and not path.exists()
"""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700"


def test_live_gauges_of_dead_processes_are_dropped(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    mine = os.getpid()
    for name in (f"gauge_livesum_{dead_pid}.db", f"gauge_liveall_{dead_pid}.db", f"gauge_livesum_{mine}.db"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"")  # a dead worker's counts still count
    assert forget_dead_processes(tmp_path) == [dead_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"counter_{dead_pid}.db", f"gauge_livesum_{mine}.db"])
