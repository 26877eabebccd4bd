"""``python -m bench.floor`` end to end: a bare aiohttp server driven by the real ``wrk``.

The floor is the figure the benchmark's "server CPU per certificate" is read against, so what is
checked is what a reader relies on: every request it sends is answered, the CPU it reports is the
server's and non-zero, and it leaves no server process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _needs_wrk() -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed; CI requires it (apt-get install wrk)", pytrace=False)
        pytest.skip("SKIPPING WRK TEST: wrk is not installed (apt-get install wrk)")


def _floor_servers() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"bench.floor" in cmdline and b"--serve" in cmdline:
            found.append(int(proc.name))
    return found


def test_the_floor_answers_every_request_and_reports_the_servers_cpu_per_request() -> None:
    before = set(_floor_servers())
    run = subprocess.run(
        [sys.executable, "-m", "bench.floor", "--requests", "300", "--warmup", "20", "--workers", "2", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)
    assert figures["answered"] == figures["sent"] == 300
    assert figures["requests_per_second"] > 0
    assert 0 < figures["server_cpu_us_per_request"] < 1_000_000
    assert figures["load"].startswith("wrk ")
    assert set(_floor_servers()) <= before  # the server and its forked worker are gone


def test_the_floor_refuses_nonsense_options_with_usage() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.floor", "--workers", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "--workers must be at least 1" in run.stderr
