"""The wire schema every issue request shares, and the field readers each method's schema uses.

An untrusted JSON object in (already bounded by :mod:`issuer.http.body`: size, depth,
known keys), a typed :class:`IssueRequest` out, or a 4xx with a stable code. Every field
is checked for presence, type and size here, at the edge; the use cases never see
request dicts. The method's own fields are read first (its :data:`ProofReader`), then
``csr``, ``role`` and ``ttl``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from issuer.durations import parse_duration
from issuer.errors import ClientError
from issuer.service.issuance.entry import MethodEntry, Transport
from issuer.service.issuance.model import IssueRequest

__all__ = ["COMMON_FIELDS", "read_issue_request", "required_text", "text_field"]

P = TypeVar("P")
MAX_CSR = 16 * 1024
COMMON_FIELDS = frozenset({"csr", "role", "ttl"})
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def text_field(
    body: Mapping[str, Any], name: str, *, max_len: int, required: bool = True, blank_ok: bool = False
) -> str | None:
    """A string field: None when absent (or null) and optional; ClientError ``field_missing``/``field_invalid``."""
    value = body.get(name)
    if value is None:
        if required:
            raise ClientError(f"The field {name!r} is required.", code="field_missing")
        return None
    if not isinstance(value, str):
        raise ClientError(f"The field {name!r} must be a string.", code="field_invalid")
    if (not value and not blank_ok) or len(value) > max_len:
        raise ClientError(f"The field {name!r} must be 1 to {max_len} characters long.", code="field_invalid")
    return value


def required_text(body: Mapping[str, Any], name: str, *, max_len: int) -> str:
    """A string field that must be present; ClientError ``field_missing``/``field_invalid``."""
    value = text_field(body, name, max_len=max_len)
    if value is None:  # text_field raised already; for the type checker
        raise ClientError(f"The field {name!r} is required.", code="field_missing")
    return value


def read_issue_request(body: Mapping[str, Any], entry: MethodEntry[P], transport: Transport) -> IssueRequest[P]:
    """``{"csr", "role"?, "ttl"?}`` plus ``entry``'s own fields."""
    proof = entry.read_proof(body, transport)
    csr = required_text(body, "csr", max_len=MAX_CSR)
    role = text_field(body, "role", max_len=64, required=False)
    if role is not None and not _ROLE.fullmatch(role):
        raise ClientError("The field 'role' is not a role name.", code="field_invalid")
    ttl_value = body.get("ttl")
    ttl = None
    if ttl_value is not None:
        if not isinstance(ttl_value, str | int) or isinstance(ttl_value, bool):
            raise ClientError("The field 'ttl' must be a duration such as \"12h\".", code="field_invalid")
        if isinstance(ttl_value, str) and len(ttl_value) > 32:
            raise ClientError("The field 'ttl' must be a duration such as \"12h\".", code="field_invalid")
        try:
            ttl = parse_duration(ttl_value)
        except ValueError as exc:
            raise ClientError(f"The field 'ttl': {exc}.", code="field_invalid") from None
    return IssueRequest(csr_pem=csr, proof=proof, role=role, ttl=ttl)
