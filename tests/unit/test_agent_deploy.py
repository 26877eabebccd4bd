"""The deployment files in clients/deploy/ run command lines the agent accepts, with the exit-status
policy it documents: they cannot drift from the CLI without this failing."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from clients.agent.cli import parse
from clients.errors import EX_CONFIG, EX_USAGE

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
    assert Path(argv[0]).name == "issuer-agent", command
    return argv[1:]


def test_the_daemon_service_restarts_only_what_a_restart_can_fix() -> None:
    service = unit("issuer-agent.service")
    args = parse(agent_argv(value(service, "Service", "ExecStart")), NO_ENV)
    assert args.command == "run" and not args.once
    assert value(service, "Service", "Restart") == "on-failure"
    assert set(value(service, "Service", "RestartPreventExitStatus").split()) == {str(EX_USAGE), str(EX_CONFIG)}
    # systemd must wait for an exchange under way (--timeout) before it kills.
    assert int(value(service, "Service", "TimeoutStopSec").removesuffix("s")) > args.timeout
    assert value(service, "Service", "KillSignal") == "SIGTERM"
    assert str(args.out) in value(service, "Service", "ReadWritePaths").split()


def test_the_timer_runs_renew_every_15_minutes_with_a_random_delay() -> None:
    service, timer = unit("issuer-agent-renew.service"), unit("issuer-agent-renew.timer")
    args = parse(agent_argv(value(service, "Service", "ExecStart")), NO_ENV)
    assert args.command == "renew" and args.quiet and not args.force
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


@pytest.fixture(scope="module")
def task() -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "ecs-sidecar-task.json").read_text()))


def container(task: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in task["containerDefinitions"] if c["name"] == name]
    return dict(found)


def test_the_ecs_sidecar_runs_the_daemon_with_the_task_role(task: dict[str, Any]) -> None:
    agent = container(task, "issuer-agent")
    args = parse(agent["command"], NO_ENV)  # the image's entrypoint is issuer-agent
    assert (args.command, args.method, args.once) == ("run", "aws-iam", False)
    assert args.server_id and args.server.startswith("https://")
    assert agent["essential"] is True  # without the agent nobody renews: replace the task
    assert agent["stopTimeout"] > args.timeout
    check = agent["healthCheck"]["command"]
    assert check[:2] == ["CMD", "issuer-agent"]
    health = parse(check[2:], NO_ENV)
    assert health.command == "status" and health.out == args.out
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
