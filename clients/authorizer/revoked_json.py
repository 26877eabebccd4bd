"""The older, unsigned revocation list (``GET /v1/revoked``, JSON), read when no CRLs are configured.

It is not signed: whoever can change it in transit or in its bucket can remove a serial. Set
``ISSUER_CRLS_URL`` to enforce the signed CRLs instead. Hostile shapes are refused before and
while parsing (too many containers, nesting past the decoder's limit) as a bad document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from .errors import SourceError

__all__ = ["RevocationList", "describe_revocation_list", "parse_revocation_document"]

_SERIAL: Final = re.compile(r"0|[1-9a-f][0-9a-f]*")
# A well-formed document has one object per entry and three more containers; this many is far
# beyond any real list of the size the fetch accepts, and bounds the Python objects built.
MAX_CONTAINERS: Final = 100_000


@dataclass(frozen=True)
class RevocationList:
    serials: frozenset[str]
    generated_at: str


def describe_revocation_list(listed: RevocationList) -> dict[str, Any]:
    return {"serials": len(listed.serials), "generated_at": listed.generated_at}


def parse_revocation_document(body: bytes) -> RevocationList:
    """Validate the ``/v1/revoked`` JSON; the revoked set is ``serials`` plus every entry's serial.

    Raises :class:`SourceError` (``revocation_document_invalid``) for any other shape.
    """

    def bad(why: str) -> SourceError:
        return SourceError(f"revocation list refused: {why}", code="revocation_document_invalid")

    if body.count(b"{") + body.count(b"[") > MAX_CONTAINERS:
        raise bad(f"more than {MAX_CONTAINERS} JSON objects and arrays")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("not JSON") from None
    except RecursionError:
        raise bad("nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or isinstance(doc.get("version"), bool):
        raise bad("not an object with version 1")
    generated_at, serials, entries = doc.get("generated_at"), doc.get("serials"), doc.get("entries")
    if not _is_timestamp(generated_at):
        raise bad("generated_at is not an ISO 8601 time with an offset")
    if not isinstance(serials, list) or not all(isinstance(s, str) and _SERIAL.fullmatch(s) for s in serials):
        raise bad("serials must be lowercase hex strings without leading zeros")
    if not isinstance(entries, list):
        raise bad("entries must be a list")
    revoked = set(serials)
    for entry in entries:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("serial"), str)
            and _SERIAL.fullmatch(entry["serial"])
            and isinstance(entry.get("issuer_fingerprint"), str)
            and re.fullmatch(r"[0-9a-fA-F]{64}", entry["issuer_fingerprint"])
            and _is_timestamp(entry.get("revoked_at"))
            and _is_timestamp(entry.get("not_after"))
            and isinstance(entry.get("reason"), str)
        ):
            raise bad("an entry lacks serial, issuer_fingerprint, revoked_at, reason or not_after")
        revoked.add(entry["serial"])
    return RevocationList(serials=frozenset(revoked), generated_at=str(generated_at))


def _is_timestamp(value: object) -> bool:
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False
