"""``--on-change CMD``: tell the application that new files are in place.

The command is split with :func:`shlex.split` and run without a shell, with a
timeout, stdin closed and its output sent to the agent's stderr (the log). Its
failure is reported, never fatal: the new certificate is installed either way and
the application keeps working with the old one until it reloads. The command gets
``ISSUER_AGENT_EVENT`` (bootstrap, renew, reattest), ``ISSUER_AGENT_SERIAL``,
``ISSUER_AGENT_NOT_AFTER`` and ``ISSUER_AGENT_OUT`` in its environment, and not
``ISSUER_JOIN_TOKEN`` (a secret the command has no business with).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from clients.errors import UsageError

__all__ = ["ChangeEvent", "ChangeHook", "CommandHook", "EventKind", "parse_command"]

EventKind = Literal["bootstrap", "renew", "reattest"]
_WITHHELD = frozenset({"ISSUER_JOIN_TOKEN"})


@dataclass(frozen=True)
class ChangeEvent:
    kind: EventKind
    serial: str
    not_after: datetime
    out_dir: Path

    def environment(self) -> dict[str, str]:
        return {
            "ISSUER_AGENT_EVENT": self.kind,
            "ISSUER_AGENT_SERIAL": self.serial,
            "ISSUER_AGENT_NOT_AFTER": self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ISSUER_AGENT_OUT": str(self.out_dir),
        }


class ChangeHook(Protocol):
    def __call__(self, event: ChangeEvent) -> str | None:
        """Run after files changed; return None on success, else one line saying what went wrong."""
        ...


def parse_command(command: str) -> tuple[str, ...]:
    """``shlex.split(command)``; raise :class:`UsageError` when it is empty or does not split."""
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise UsageError(f"--on-change {command!r} does not parse: {exc}", code="on_change_invalid") from None
    if not argv:
        raise UsageError("--on-change needs a command", code="on_change_invalid")
    return argv


@dataclass(frozen=True)
class CommandHook:
    """Runs ``argv`` (no shell) for each change; at most ``timeout`` seconds."""

    argv: Sequence[str]
    timeout: float = 30.0
    env: Mapping[str, str] | None = None

    def __call__(self, event: ChangeEvent) -> str | None:
        inherited = os.environ if self.env is None else self.env
        environment = {k: v for k, v in inherited.items() if k not in _WITHHELD} | event.environment()
        name = self.argv[0]
        try:
            done = subprocess.run(
                list(self.argv),
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr.fileno() if _has_fileno() else subprocess.DEVNULL,
                stderr=None if _has_fileno() else subprocess.DEVNULL,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"{name} did not finish within {self.timeout:g}s and was killed"
        except OSError as exc:
            return f"{name} could not be started: {exc.strerror or exc}"
        if done.returncode != 0:
            how = f"signal {-done.returncode}" if done.returncode < 0 else f"status {done.returncode}"
            return f"{name} exited with {how}"
        return None


def _has_fileno() -> bool:
    # Under pytest's capture sys.stderr may be an object without a file descriptor.
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True
