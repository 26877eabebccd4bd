"""``DIR/denied.json``: the issuer's last word that it denies this machine's identity.

When ``bootstrap``, ``renew`` or ``run`` get 403 ``identity_denied`` they stop (exit 77) and note it
here, so that ``status`` (which has no credential to ask the issuer with) can say so too: what
the issuer said, when, and which request. The next certificate installed removes the note (an
operator lifted the denial and the machine got a certificate again).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from clients.agent.files import atomic_write
from clients.errors import FilesystemError, ServerProblem
from clients.wire import parse_timestamp

__all__ = ["DENIAL_FILE", "Denial", "clear_denial", "read_denial", "record_denial"]

DENIAL_FILE: Final = "denied.json"


@dataclass(frozen=True)
class Denial:
    detail: str
    at: datetime
    request_id: str | None
    serial: str | None  # the certificate installed then, if any

    def to_json(self) -> dict[str, object]:
        return {
            "code": "identity_denied",
            "detail": self.detail,
            "at": self.at.isoformat(),
            "request_id": self.request_id,
            "serial": self.serial,
        }


def record_denial(out_dir: Path, problem: ServerProblem, *, serial: str | None, now: datetime) -> Denial:
    """Write what the issuer said; a failure to write is not fatal (the exit status says it all)."""
    denial = Denial(detail=problem.detail, at=now, request_id=problem.request_id, serial=serial)
    with contextlib.suppress(FilesystemError):
        atomic_write(out_dir / DENIAL_FILE, json.dumps(denial.to_json(), indent=2).encode() + b"\n", mode=0o644)
    return denial


def read_denial(out_dir: Path) -> Denial | None:
    """The recorded denial, or None (also for a file that does not parse: it is only a note)."""
    try:
        document = json.loads((out_dir / DENIAL_FILE).read_bytes())
        return Denial(
            detail=str(document["detail"]),
            at=parse_timestamp(str(document["at"])),
            request_id=document.get("request_id") if isinstance(document.get("request_id"), str) else None,
            serial=document.get("serial") if isinstance(document.get("serial"), str) else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_denial(out_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (out_dir / DENIAL_FILE).unlink()
