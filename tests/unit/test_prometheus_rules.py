"""``deploy/prometheus/alerts.yml`` is valid (``promtool check rules``) and does what its tests in
``deploy/prometheus/tests/`` say (``promtool test rules``): each alert fires on its case and stays
quiet on its near miss. Needs ``promtool`` (Debian: ``apt-get install prometheus``); without it the
tests skip loudly, except under ``CI``, where they fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(f"SKIPPING PROMETHEUS RULE TESTS: {message}")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def test_the_rules_are_valid(promtool: str) -> None:
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_the_rule_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no rule tests in deploy/prometheus/tests/"
    tested = run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_test() -> None:
    alerts = {line.split(":", 1)[1].strip() for line in RULES.read_text().splitlines() if "- alert:" in line}
    tested = {
        line.split(":", 1)[1].strip()
        for path in RULE_TESTS
        for line in path.read_text().splitlines()
        if line.strip().startswith("alertname:")
    }
    assert alerts and alerts <= tested, sorted(alerts - tested)
