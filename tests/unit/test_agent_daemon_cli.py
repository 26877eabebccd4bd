"""``issuer-agent run`` through ``main``: ``--once`` over real HTTP, and the checks made before the loop."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from clients.agent.cli import main
from tests.unit import agent_support
from tests.unit.test_agent_fake_issuer import FakeIssuer

# The fixtures shared with the other agent tests that run main against the fake issuer.
ca, clean_env, fake, url = agent_support.ca, agent_support.clean_env, agent_support.fake, agent_support.url


def test_once_bootstraps_then_does_nothing_until_due(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, token = tmp_path / "out", tmp_path / "token"
    token.write_text("t-1\n")
    record = tmp_path / "events"
    hook = f"sh -c 'echo $ISSUER_AGENT_EVENT $ISSUER_AGENT_SERIAL >> {record}'"
    argv = ["run", "--once", "--method", "token", "--token-file", str(token), "--server", url, "--out", str(out)]
    assert main([*argv, "--on-change", hook]) == 0
    first = json.loads((out / "issuer.json").read_text())["serial"]
    log = capsys.readouterr().err
    assert f"bootstrapped: serial {first}, not after 20" in log and "next renewal at 20" in log
    assert record.read_text() == f"bootstrap {first}\n"

    assert main([*argv, "--on-change", hook]) == 0  # not due: nothing sent, no hook
    assert f"certificate {first} valid until 20" in capsys.readouterr().err
    assert len(fake.seen) == 1 and record.read_text() == f"bootstrap {first}\n"


def test_once_renews_a_due_certificate_and_re_attests_a_revoked_one(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, token = tmp_path / "out", tmp_path / "token"
    token.write_text("t-1\n")
    fake.lifetime = timedelta(seconds=20)  # due as soon as issued
    argv = ["run", "--once", "--method", "token", "--token-file", str(token), "--server", url, "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 0
    assert [s.path for s in fake.seen] == ["/v1/issue/token", "/v1/renew"]
    assert "renewed: serial" in capsys.readouterr().err

    current = json.loads((out / "issuer.json").read_text())["serial"]
    fake.status[current] = "revoked"
    token.write_text("t-2\n")
    assert main(argv) == 0
    assert [s.path for s in fake.seen][2:] == ["/v1/renew", "/v1/issue/token"]
    log = capsys.readouterr().err
    assert "(code certificate_revoked, HTTP 403" in log and "re-attested: serial" in log


def test_the_daemon_checks_its_configuration_before_the_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--method", "token", "--server", "https://127.0.0.1:1", "--out", str(tmp_path / "out")]
    assert main([*argv, "--ca-bundle", str(tmp_path / "missing.pem")]) == 78
    assert "(code ca_bundle_invalid)" in capsys.readouterr().err
    iam = ["run", "--method", "aws-iam", "--server", "https://127.0.0.1:1", "--out", str(tmp_path / "out")]
    assert main(iam) == 64
    assert main([*argv, "--once"]) == 78  # no certificate and no token to get one
    assert "(code token_missing)" in capsys.readouterr().err
