"""``--on-change``: the real command runner (no shell, timeout, environment, failures as one line)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from clients.agent.hooks import ChangeEvent, CommandHook, parse_command
from clients.errors import UsageError

EVENT = ChangeEvent("renew", "5d60ce9d", datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc), Path("/etc/issuer-agent"))


def test_the_command_gets_the_event_in_its_environment_and_no_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISSUER_JOIN_TOKEN", "secret-join-token")
    monkeypatch.setenv("APP_SETTING", "kept")
    record = tmp_path / "seen.json"
    script = "import json, os, sys; json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, open(sys.argv[1], 'w'))"
    hook = CommandHook(parse_command(f"{sys.executable} -c {json.dumps(script)} {record} '$HOME' ';' 'a b'"))
    assert hook(EVENT) is None
    seen = json.loads(record.read_text())
    assert seen["argv"] == [str(record), "$HOME", ";", "a b"]  # split like a shell would, but nothing expanded
    assert seen["env"]["APP_SETTING"] == "kept"
    assert "ISSUER_JOIN_TOKEN" not in seen["env"]
    assert {k: v for k, v in seen["env"].items() if k.startswith("ISSUER_AGENT_")} == {
        "ISSUER_AGENT_EVENT": "renew",
        "ISSUER_AGENT_SERIAL": "5d60ce9d",
        "ISSUER_AGENT_NOT_AFTER": "2031-01-02T03:04:05Z",
        "ISSUER_AGENT_OUT": "/etc/issuer-agent",
    }


@pytest.mark.parametrize(
    ("argv", "timeout", "expected"),
    [
        (["sh", "-c", "exit 3"], 30.0, "sh exited with status 3"),
        (["sh", "-c", "kill -9 $$"], 30.0, "sh exited with signal 9"),
        (["/nonexistent/reload-app"], 30.0, "/nonexistent/reload-app could not be started: No such file or directory"),
        (["sleep", "30"], 0.2, "sleep did not finish within 0.2s and was killed"),
    ],
)
def test_failures_are_one_line(argv: list[str], timeout: float, expected: str) -> None:
    assert CommandHook(argv, timeout=timeout)(EVENT) == expected


@pytest.mark.parametrize("command", ["", "   ", "'unbalanced"])
def test_commands_that_do_not_split_are_usage_errors(command: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_command(command)
    assert err.value.code == "on_change_invalid"
