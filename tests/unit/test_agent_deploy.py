"""The deployment files in clients/deploy/ run command lines the agent accepts, with the exit-status
policy it documents: they cannot drift from the CLI without this failing. They find issuer-agent on
the PATH where the README's install puts it (never a guessed absolute path), and systemd itself
checks the units (`systemd-analyze verify`) where it is installed."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clients.agent.cli import parse
from clients.agent.remembered import resolve
from clients.errors import EX_CONFIG, EX_NOPERM, EX_USAGE

DEPLOY = Path(__file__).resolve().parents[2] / "clients" / "deploy"
NO_ENV: dict[str, str] = {}


def unit(name: str) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as {section: [(key, value), ...]} (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in (DEPLOY / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if match := re.fullmatch(r"\[(\w+)\]", line):
            current = match.group(1)
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        assert current and key and _, f"{name}: {raw!r}"
        sections[current].append((key, value))
    return sections


def value(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    (found,) = [v for k, v in sections[section] if k == key]
    return found


def agent_argv(command: str) -> list[str]:
    argv = shlex.split(command)
    # systemd runs /usr/bin/env, which finds issuer-agent on the service's PATH (/usr/local/bin, /usr/bin, ...).
    if argv[0] == "/usr/bin/env":
        argv = argv[1:]
    assert argv[0] == "issuer-agent", command  # a name on the PATH, not a guessed absolute path
    return argv[1:]


def effective(argv: list[str]) -> argparse.Namespace:
    """The options as the agent runs them with nothing remembered yet (the built-in defaults filled in)."""
    return resolve(parse(argv, NO_ENV), None)[0]


def test_the_daemon_service_restarts_only_what_a_restart_can_fix() -> None:
    service = unit("issuer-agent.service")
    args = effective(agent_argv(value(service, "Service", "ExecStart")))
    assert args.command == "run" and not args.once
    assert value(service, "Service", "Restart") == "on-failure"
    never = {str(EX_USAGE), str(EX_NOPERM), str(EX_CONFIG)}
    assert set(value(service, "Service", "RestartPreventExitStatus").split()) == never
    # systemd must wait for an exchange under way (--timeout) before it kills.
    assert int(value(service, "Service", "TimeoutStopSec").removesuffix("s")) > args.timeout
    assert value(service, "Service", "KillSignal") == "SIGTERM"
    assert str(args.out) in value(service, "Service", "ReadWritePaths").split()


def test_the_timer_runs_renew_every_15_minutes_with_a_random_delay() -> None:
    service, timer = unit("issuer-agent-renew.service"), unit("issuer-agent-renew.timer")
    args = parse(agent_argv(value(service, "Service", "ExecStart")), NO_ENV)
    assert args.command == "renew" and args.quiet and not args.force
    assert args.server is None and args.on_change is None  # remembered from the bootstrap
    assert value(service, "Service", "Type") == "oneshot"
    assert str(args.out) in value(service, "Service", "ReadWritePaths").split()
    assert value(timer, "Timer", "OnCalendar") == "*:0/15"
    assert value(timer, "Timer", "RandomizedDelaySec")
    assert value(timer, "Install", "WantedBy") == "timers.target"


def test_the_cron_line_runs_renew_quietly() -> None:
    (line,) = [
        raw for raw in (DEPLOY / "issuer-agent.cron").read_text().splitlines()
        if raw.strip() and not raw.startswith("#") and "=" not in raw.split()[0]
    ]  # fmt: skip
    fields = line.split(maxsplit=6)
    assert fields[:5] == ["*/15", "*", "*", "*", "*"] and fields[5] == "root"
    args = parse(agent_argv(fields[6]), NO_ENV)
    assert args.command == "renew" and args.quiet
    (path,) = [raw for raw in (DEPLOY / "issuer-agent.cron").read_text().splitlines() if raw.startswith("PATH=")]
    # The two places the README's install puts issuer-agent (pip as root; the .pyz copied there).
    assert {"/usr/local/bin", "/usr/bin"} <= set(path.removeprefix("PATH=").split(":"))


@pytest.mark.parametrize("name", ["issuer-agent.service", "issuer-agent-renew.service"])
def test_the_units_give_the_single_file_agent_a_writable_cache(name: str) -> None:
    service = unit(name)
    # ProtectHome keeps ~/.cache read-only; the .pyz unpacks into the unit's own cache directory.
    assert value(service, "Service", "ProtectHome") == "read-only"
    assert value(service, "Service", "CacheDirectory") == "issuer-agent"
    assert value(service, "Service", "CacheDirectoryMode") == "0700"
    assert value(service, "Service", "Environment") == "ISSUER_AGENT_CACHE=%C/issuer-agent"


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is not installed; CI requires it (apt-get install systemd)")
        pytest.skip("SKIPPING: systemd-analyze is not installed")
    names = ["issuer-agent.service", "issuer-agent-renew.service", "issuer-agent-renew.timer"]
    for name in names:
        shutil.copy(DEPLOY / name, tmp_path / name)
    checked = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify also checks that ExecStart's program exists: /usr/bin/env does, everywhere.
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "issuer-agent" not in checked.stderr, checked.stderr


@pytest.fixture(scope="module")
def task() -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "ecs-sidecar-task.json").read_text()))


def container(task: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in task["containerDefinitions"] if c["name"] == name]
    return dict(found)


def test_the_ecs_sidecar_runs_the_daemon_with_the_task_role(task: dict[str, Any]) -> None:
    agent = container(task, "issuer-agent")
    args = effective(agent["command"])  # the image's entrypoint is issuer-agent
    assert (args.command, args.method, args.once) == ("run", "aws-iam", False)
    assert args.server_id and args.server.startswith("https://")
    assert agent["essential"] is True  # without the agent nobody renews: replace the task
    assert agent["stopTimeout"] > args.timeout
    check = agent["healthCheck"]["command"]
    assert check[:2] == ["CMD", "issuer-agent"]
    health = parse(check[2:], NO_ENV)
    assert health.command == "status" and health.out == args.out
    assert health.offline  # every 30 s per task: the files decide, the issuer is not asked
    assert task["taskRoleArn"].startswith("arn:aws:iam::")


def test_the_app_waits_for_a_certificate_and_reads_the_same_files(task: dict[str, Any]) -> None:
    agent, app = container(task, "issuer-agent"), container(task, "app")
    out = parse(agent["command"], NO_ENV).out
    assert app["dependsOn"] == [{"containerName": "issuer-agent", "condition": "HEALTHY"}]
    (agent_mount,), (app_mount,) = agent["mountPoints"], app["mountPoints"]
    assert agent_mount["sourceVolume"] == app_mount["sourceVolume"] in {v["name"] for v in task["volumes"]}
    assert app_mount["readOnly"] is True and not agent_mount.get("readOnly")
    assert out.is_relative_to(agent_mount["containerPath"])
    # The app sees the agent's --out at the same path and uses what is in it.
    assert agent_mount["containerPath"] == app_mount["containerPath"]
    paths = {e["value"] for e in app["environment"]}
    assert paths == {str(out / "fullchain.pem"), str(out / "key.pem")}
