"""``issuer-agent run --metrics-file PATH``: node_exporter textfile-collector metrics.

Point PATH into the collector's directory (``--collector.textfile.directory``) with a ``.prom``
name. The file is replaced atomically (a temporary file in the same directory, fsync, rename),
so node_exporter never reads half of it. Every series carries ``out="<DIR>"`` so that several
agents on one machine can share the directory (each with its own file)::

    issuer_agent_certificate_not_after_seconds            when the installed certificate expires
    issuer_agent_certificate_renewal_due_seconds          when the daemon will renew it
    issuer_agent_last_renewal_attempt_timestamp_seconds   last bootstrap/renewal/re-attestation tried
    issuer_agent_last_renewal_success_timestamp_seconds   last one that installed a certificate
    issuer_agent_renewal_consecutive_failures             failures since the last success

A time not known yet (no attempt since the daemon started) is left out rather than written as 0,
so ``absent()`` tells it apart. Alert on ``issuer_agent_certificate_not_after_seconds - time()``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from clients.agent.files import atomic_write
from clients.errors import FilesystemError

__all__ = ["MetricsFile", "render"]

_HELP = {
    "issuer_agent_certificate_not_after_seconds": "Not-after time of the installed certificate (Unix seconds).",
    "issuer_agent_certificate_renewal_due_seconds": "When the daemon renews the installed certificate (Unix seconds).",
    "issuer_agent_last_renewal_attempt_timestamp_seconds": "Last bootstrap, renewal or re-attestation attempt.",
    "issuer_agent_last_renewal_success_timestamp_seconds": "Last bootstrap, renewal or re-attestation that succeeded.",
    "issuer_agent_renewal_consecutive_failures": "Failed attempts since the last success.",
}


def _label(value: str) -> str:
    # The exposition format's escapes for label values: backslash, double quote, newline.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(values: dict[str, float | None], *, out_dir: Path) -> str:
    """The textfile for ``values`` (name → value; None leaves the series out)."""
    labels = f'{{out="{_label(str(out_dir))}"}}'
    lines: list[str] = []
    for name, help_text in _HELP.items():
        value = values.get(name)
        if value is None:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{labels} {value:.17g}"]
    return "\n".join(lines) + "\n"


class MetricsFile:
    """A :class:`clients.agent.daemon.Observer` that keeps the metrics file current.

    A failure to write is logged (once per kind of failure), never fatal: the certificate matters more.
    """

    def __init__(self, path: Path, *, out_dir: Path, log: Callable[[str], None]) -> None:
        self._path = path
        self._out_dir = out_dir
        self._log = log
        self._values: dict[str, float | None] = {"issuer_agent_renewal_consecutive_failures": 0.0}
        self._written: str | None = None
        self._complained: str | None = None

    def attempted(self, step: str, at: datetime) -> None:
        self._set(issuer_agent_last_renewal_attempt_timestamp_seconds=at.timestamp())

    def succeeded(self, step: str, at: datetime) -> None:
        self._set(
            issuer_agent_last_renewal_success_timestamp_seconds=at.timestamp(),
            issuer_agent_renewal_consecutive_failures=0.0,
        )

    def failed(self, step: str, at: datetime) -> None:
        failures = self._values.get("issuer_agent_renewal_consecutive_failures") or 0.0
        self._set(issuer_agent_renewal_consecutive_failures=failures + 1)

    def installed(self, *, not_after: datetime, due: datetime) -> None:
        self._set(
            issuer_agent_certificate_not_after_seconds=not_after.timestamp(),
            issuer_agent_certificate_renewal_due_seconds=due.timestamp(),
        )

    def _set(self, **values: float) -> None:
        self._values.update(values)
        text = render(self._values, out_dir=self._out_dir)
        if text == self._written:
            return
        try:
            atomic_write(self._path, text.encode("utf-8"), mode=0o644)
        except FilesystemError as exc:
            if exc.message != self._complained:
                self._log(f"warning: --metrics-file: {exc.message}")
                self._complained = exc.message
            return
        self._written = text
