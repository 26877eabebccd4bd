"""``python -m bench`` with tiny counts, so the benchmark never rots: it runs, issues, commits and reports.

No speed is asserted here (speed goals live in the benchmark's own report); these
tests check that every request the benchmark makes succeeds, that every answered
certificate has its row, and that the report has every figure it promises.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.load import PYTHON_GENERATOR, percentile
from bench.pyspy import summarise
from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parents[2]
REQUESTS, WARMUP = 12, 3
INPROCESS = {
    "signer.issue alone (LocalFileSigner, P-256, verify after sign)",
    "ca.csr.parse_csr alone",
    "token: parse_csr + decide + sign",
    "aws-ec2: verify_instance_identity alone (rsa2048 CMS)",
    "aws-ec2: verify + parse_csr + decide + sign",
    "answer: fingerprint, subject, PEM x3, JSON",
}

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def bench(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    environ = {**os.environ, "ISSUER_TEST_DATABASE_URL": PG_URL, **(env or {})}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--json",
            "--requests",
            str(REQUESTS),
            "--warmup",
            str(WARMUP),
            "--concurrency",
            "4",
            "--workers",
            "1",
            "--inprocess-count",
            "5",
            "--max-seconds",
            "60",
            *(() if "--rounds" in args else ("--rounds", "1")),
            *args,
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result, json.loads(result.stdout)


def needs_wrk() -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed; CI requires it (apt-get install wrk)", pytrace=False)
        pytest.skip("SKIPPING: wrk is not installed (apt-get install wrk)")


def check_issuer_run(run: dict[str, Any]) -> None:
    assert run["sent"] == REQUESTS
    assert run["successes"] == REQUESTS, run["errors"]
    assert run["errors"] == {}
    assert run["warmup"] == {"sent": WARMUP, "successes": WARMUP}
    assert run["committed"] == {"rows": REQUESTS + WARMUP, "answered": REQUESTS + WARMUP, "missing": 0, "all": True}
    latency = run["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert run["certificates_per_second"] > 0
    assert set(run["cpu"]) == {"server", "postgres", "machine"}
    assert run["cpu"]["server"]["wall"] > 0


@pytest.mark.usefixtures("pg_template")  # Postgres is reachable (else skip; under CI, fail)
def test_all_methods_under_wrk_and_cfssl_when_installed() -> None:
    needs_wrk()
    result, report = bench("--load-generator", "wrk")  # --method all is the default
    runs = {r["name"]: r for r in report["runs"]}
    for name in ("token", "aws-ec2", "renew"):
        check_issuer_run(runs[name])  # renew: every renewal answered 201 has its row (renewed_from set)
    for run in runs.values():
        assert re.fullmatch(r"wrk 4\.\d+\.\d+, 2 threads, 4 connections", run["load_generator"]), run["load_generator"]
    assert report["load_generators"][0].startswith("wrk 4.")
    assert {r["name"] for r in report["inprocess"]} == INPROCESS
    assert all(r["count"] == 5 and r["per_second"] > 0 for r in report["inprocess"])
    assert "issuer token over HTTP / signer alone" in report["ratios"]
    assert "issuer renew over HTTP / signer alone" in report["ratios"]
    assert set(report["targets"]) == {"token", "aws-ec2", "renew"}
    assert report["targets"]["token"]["cfssl_ratio_target"] == 1.5
    assert report["targets"]["renew"]["p99_met"] == (runs["renew"]["latency_ms"]["p99"] <= 50)
    assert any(n.startswith("renew: 15 certificates (role bench-renew) were issued over HTTP") for n in report["notes"])
    if shutil.which("cfssl"):
        cfssl = runs["cfssl"]
        assert cfssl["successes"] == REQUESTS, cfssl["errors"]
        assert cfssl["committed"]["rows"] == REQUESTS + WARMUP  # cfssl's certdb got every certificate
        for name in ("token", "aws-ec2", "renew"):
            assert f"issuer {name} / cfssl" in report["ratios"]
            assert report["targets"][name]["cfssl_ratio_met"] is not None
    else:
        assert "cfssl" not in runs
        assert any("cfssl: skipped" in n for n in report["notes"])
    assert "bench: token: " in result.stderr  # progress on stderr, the report alone on stdout


@pytest.mark.usefixtures("pg_template")
def test_rounds_report_each_run_at_its_median_round() -> None:
    result, report = bench("--load-generator", "python", "--method", "token", "--no-cfssl", "--rounds", "3")
    rates = [round_["token"] for round_ in report["rounds"]]
    assert len(rates) == 3 and all(rate > 0 for rate in rates)
    (run,) = report["runs"]
    assert run["certificates_per_second"] == sorted(rates)[1]  # the median round is the one shown
    check_issuer_run(run)  # each round has its own database: the median round's rows are its own
    assert result.stderr.count("bench: round ") == 3
    assert "3 rounds, one after another: each run is its median round (see Rounds)" in report["notes"]


@pytest.mark.usefixtures("pg_template")  # Postgres is reachable (else skip; under CI, fail)
def test_python_fallback_drives_renewals_with_their_tokens() -> None:
    _, report = bench("--load-generator", "python", "--method", "renew", "--no-cfssl")
    (run,) = report["runs"]
    assert run["name"] == "renew"
    check_issuer_run(run)  # every renewal's Authorization reached the issuer: all 201, all committed
    assert run["load_generator"] == PYTHON_GENERATOR


@pytest.mark.usefixtures("pg_template")  # Postgres is reachable (else skip; under CI, fail)
def test_cfssl_missing_is_one_clear_line_and_text_report_with_cprofile(tmp_path: Path) -> None:
    # A PATH with no cfssl on it: the benchmark still runs the issuer and says why cfssl is absent.
    empty = tmp_path / "bin"
    empty.mkdir()
    profiles = tmp_path / "profiles"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--method",
            "token",
            "--requests",
            "5",
            "--warmup",
            "0",
            "--concurrency",
            "2",
            "--workers",
            "1",
            "--inprocess-count",
            "3",
            "--cprofile",
            str(profiles),
        ],
        cwd=ROOT,
        env={**os.environ, "ISSUER_TEST_DATABASE_URL": PG_URL, "PATH": str(empty)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "note: cfssl: skipped, no `cfssl` on PATH (Debian: apt-get install golang-cfssl)" in out
    assert f"  token load: {PYTHON_GENERATOR}" in out  # no wrk on PATH: auto falls back, and says so
    assert "\ntoken " in out and "aws-ec2 " not in out.split("In process")[0]
    assert "5/5" in out and "5/5 ok" in out  # ok/sent and committed/answered
    # The server's CPU profile of the timed window: the issuance pipeline ran under it.
    assert "cProfile (CPU time) of the server during token" in out
    assert (profiles / "issuer-token.pstats").is_file()
    assert "issue (issuance/pipeline.py" in out  # the profile names files by their last two path parts


def test_load_generator_wrk_needs_wrk(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--load-generator", "wrk"],
        cwd=ROOT,
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--load-generator wrk: no `wrk` on PATH (Debian: apt-get install wrk)" in result.stderr


def test_cprofile_needs_one_worker() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--workers", "2", "--cprofile", "x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--cprofile profiles one process: use it with --workers 1" in result.stderr


@pytest.mark.usefixtures("pg_template")  # Postgres is reachable (else skip; under CI, fail)
def test_unreachable_postgres_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--requests", "1", "--no-cfssl"],
        cwd=ROOT,
        env={**os.environ, "ISSUER_TEST_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/none"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("bench: error:")]
    assert len(lines) == 1 and "cannot reach Postgres at 127.0.0.1:1/none" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_profile_summary_adds_up_a_function_across_lines(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text(
        "main (app.py:1);handle (h.py:10);sign (ca.py:5) 6\n"
        "main (app.py:1);handle (h.py:12);sign (ca.py:7) 3\n"
        "main (app.py:1);log (logs.py:3) 1\n"
    )
    profile = summarise([raw, tmp_path / "absent.txt"])
    assert profile.samples == 10
    assert profile.self_time[0] == ("sign (ca.py)", 9)
    assert dict(profile.inclusive)["handle (h.py)"] == 9
    assert dict(profile.inclusive)["main (app.py)"] == 10
