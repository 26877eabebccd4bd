"""``DIR/issuer.json``: what the agent knows about the certificate beside it.

Written at bootstrap and at every renewal into the same generation as the key and
the certificate (see :mod:`clients.agent.files`), so it always describes the pair
it sits next to. It holds what ``renew`` and ``run`` need beyond the certificate
itself: which issuer (URL and ``server_id``, the audience of renewal tokens), how
the machine first proved who it is (for re-attestation) and the issuer's own
``renew_after``, and the settings the last issuance was made with (see
:mod:`clients.agent.remembered`), so that ``renew --out DIR`` needs nothing else.
Nothing in it is secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Final

from clients.agent.remembered import Remembered, parse_remembered
from clients.wire import METHODS, Method, method_named, parse_timestamp

__all__ = ["STATE_VERSION", "AgentState", "parse_state"]

# Still 1: ``settings`` was added without a bump, so that an older agent keeps reading the file.
STATE_VERSION: Final = 1


@dataclass(frozen=True)
class AgentState:
    server: str
    server_id: str | None
    method: Method | None
    role: str | None
    serial: str
    not_after: datetime
    renew_after: datetime
    settings: Remembered = field(default_factory=Remembered)

    def to_json(self) -> bytes:
        """Stable, human-readable JSON (sorted keys, one field a line)."""
        document: dict[str, object] = {
            "version": STATE_VERSION,
            "server": self.server,
            "server_id": self.server_id,
            "method": self.method,
            "role": self.role,
            "serial": self.serial,
            "not_after": _iso(self.not_after),
            "renew_after": _iso(self.renew_after),
        }
        settings = self.settings.to_json()
        if settings:
            document["settings"] = settings
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def parse_state(raw: bytes) -> AgentState:
    """Read what :meth:`AgentState.to_json` wrote; raise ``ValueError`` saying what is wrong."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("version") != STATE_VERSION:
        raise ValueError(f"version {document.get('version')!r} is not {STATE_VERSION}")
    method = _optional(document, "method")
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    return AgentState(
        server=_required(document, "server"),
        server_id=_optional(document, "server_id"),
        method=method_named(method),
        role=_optional(document, "role"),
        serial=_required(document, "serial"),
        not_after=_time(document, "not_after"),
        renew_after=_time(document, "renew_after"),
        settings=parse_remembered(document.get("settings")),
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def _optional(document: dict[str, object], name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name!r} is not a non-empty string")
    return value


def _required(document: dict[str, object], name: str) -> str:
    value = _optional(document, name)
    if value is None:
        raise ValueError(f"{name!r} is missing")
    return value


def _time(document: dict[str, object], name: str) -> datetime:
    text = _required(document, name)
    try:
        return parse_timestamp(text)
    except ValueError:
        raise ValueError(f"{name!r} is not an ISO-8601 time") from None
