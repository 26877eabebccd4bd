"""The registration marker: a CA directory remembers that its CA joined a registry, so a restore cannot hurt.

The database is the truth about a CA — which issuer is active, which were retired, every
revocation. The CA directory holds only keys and certificates. Pointing a service at an *empty*
database with an *old* CA directory (a lost or mistaken database URL, a half-done restore) used to
register the directory's CA as active again: a retired issuer signing anew, every revocation gone.

So when a CA directory's CA is (or is found) registered, ``registered.json`` is written beside its
keys. An empty registry that meets a marked directory refuses to register it (one line saying to
restore the database) unless the operator adopts it explicitly (``issuer ca adopt``); and an issuer
the marker records as retired is never registered again, adopt or not.

File I/O only; the use cases are in :mod:`issuer.service.ca.register`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["MARKER_NAME", "Marker", "database_of", "note_retired", "read_marker", "write_marker"]

MARKER_NAME = "registered.json"


@dataclass(frozen=True, slots=True)
class Marker:
    """What a CA directory remembers of the registry it joined."""

    issuer: str  # SHA-256 fingerprint (hex) of the directory's issuing.pem
    registered_at: str  # ISO 8601
    database: str  # host:port/database (no user, no password), for the operator reading the refusal
    retired: dict[str, str] = field(default_factory=dict)  # fingerprint -> when it was retired

    def to_json(self) -> dict[str, object]:
        return {
            "issuer": self.issuer,
            "registered_at": self.registered_at,
            "database": self.database,
            "retired": dict(sorted(self.retired.items())),
        }


def read_marker(ca_dir: Path) -> Marker | None:
    """The directory's marker, or None when there is none; a damaged marker counts as present (fail safe)."""
    path = ca_dir / MARKER_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return Marker(issuer="", registered_at="unknown", database=f"unknown ({path} is unreadable)")
    if not isinstance(raw, dict):
        return Marker(issuer="", registered_at="unknown", database=f"unknown ({path} is damaged)")
    retired = raw.get("retired")
    return Marker(
        issuer=str(raw.get("issuer", "")),
        registered_at=str(raw.get("registered_at", "unknown")),
        database=str(raw.get("database", "unknown")),
        retired={str(k): str(v) for k, v in retired.items()} if isinstance(retired, dict) else {},
    )


def write_marker(ca_dir: Path, marker: Marker) -> None:
    """Write ``marker`` atomically (a temporary file renamed over the old one), mode 0600."""
    ca_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=ca_dir, prefix=".registered.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(marker.to_json(), out, indent=2)
            out.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, ca_dir / MARKER_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def note_retired(ca_dir: Path, fingerprint: str, *, now: datetime) -> bool:
    """Record in the directory's marker that the issuer ``fingerprint`` was retired; whether there was a marker."""
    marker = read_marker(ca_dir)
    if marker is None or not marker.issuer:
        return False
    retired = {**marker.retired, fingerprint.lower(): now.isoformat()}
    write_marker(
        ca_dir,
        Marker(issuer=marker.issuer, registered_at=marker.registered_at, database=marker.database, retired=retired),
    )
    return True


def database_of(sessions: async_sessionmaker[AsyncSession]) -> str:
    """``host:port/database`` of the sessions' engine (never the user or password), for the marker."""
    bind = sessions.kw.get("bind")
    url = getattr(bind, "url", None)
    if url is None:
        return "unknown"
    if url.get_backend_name() == "sqlite":
        return f"sqlite:{url.database}"
    return f"{url.host}:{url.port or 5432}/{url.database}"
