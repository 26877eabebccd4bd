"""``python -m bench.kms`` with tiny counts: it runs end to end and every issuance it times succeeded.

No figure is judged here (speed belongs to the benchmark's report, not to a test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_kms_runs_and_reports_every_figure(pg_template: str) -> None:  # skips without Postgres
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bench.kms", "--requests", "3", "--inprocess", "3", "--concurrency", "2", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = {f["name"]: f for f in json.loads(result.stdout)}
    assert set(figures) == {
        f"{where} {backend} c={c}" for where in ("http", "in-process") for backend in ("file", "kms") for c in (1, 2)
    }
    assert all(f["successes"] == f["count"] == 3 and f["seconds"] > 0 for f in figures.values())
