"""Wire schemas: untrusted JSON in, typed values out, or a 400 with a stable code.

Every field is checked for presence, type and size here, at the edge, before any
of it reaches attestation or policy.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from issuer.durations import parse_duration
from issuer.errors import ClientError, PayloadTooLarge
from issuer.http.keys import SETTINGS
from issuer.service import IssueRequest

MAX_CSR = 16 * 1024
MAX_DOCUMENT = 16 * 1024
MAX_BLOB = 16 * 1024
COMMON_FIELDS = frozenset({"csr", "role", "ttl"})
TOKEN_FIELDS = COMMON_FIELDS | {"token"}
EC2_FIELDS = COMMON_FIELDS | {"document", "rsa2048", "pkcs7", "signature", "nonce"}
IAM_FIELDS = COMMON_FIELDS | {
    "sts_request",
    "iam_http_request_method",
    "iam_request_url",
    "iam_request_headers",
    "iam_request_body",
}


async def read_json_object(request: web.Request, *, allowed: Collection[str]) -> dict[str, Any]:
    """The request body as a JSON object with only ``allowed`` keys.

    Raises :class:`ClientError` ``body_not_json``, ``body_not_object``, ``field_unknown``;
    an oversize body ends in aiohttp's 413 before it is read whole.
    """
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"The request body is larger than this service accepts ({request.app[SETTINGS].max_body_bytes} bytes).",
        ) from None
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClientError(f"The request body is not valid JSON: {exc}.", code="body_not_json") from None
    if not isinstance(body, dict):
        raise ClientError("The request body must be a JSON object.", code="body_not_object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ClientError(
            f"Unknown field {unknown[0]!r}; this endpoint takes {', '.join(sorted(allowed))}.",
            code="field_unknown",
        )
    return body


def text_field(body: Mapping[str, Any], name: str, *, max_len: int, required: bool = True) -> str | None:
    """A string field: None when absent and optional; ClientError ``field_missing``/``field_invalid``."""
    value = body.get(name)
    if value is None:
        if required:
            raise ClientError(f"The field {name!r} is required.", code="field_missing")
        return None
    if not isinstance(value, str):
        raise ClientError(f"The field {name!r} must be a string.", code="field_invalid")
    if not value or len(value) > max_len:
        raise ClientError(f"The field {name!r} must be 1 to {max_len} characters long.", code="field_invalid")
    return value


def issue_request(body: Mapping[str, Any]) -> IssueRequest:
    """The fields every issue endpoint shares: ``csr``, optional ``role`` and ``ttl``."""
    csr = text_field(body, "csr", max_len=MAX_CSR)
    assert csr is not None
    role = text_field(body, "role", max_len=64, required=False)
    ttl_text = body.get("ttl")
    ttl = None
    if ttl_text is not None:
        if not isinstance(ttl_text, str | int) or isinstance(ttl_text, bool):
            raise ClientError("The field 'ttl' must be a duration such as \"12h\".", code="field_invalid")
        try:
            ttl = parse_duration(ttl_text)
        except ValueError as exc:
            raise ClientError(f"The field 'ttl': {exc}.", code="field_invalid") from None
    return IssueRequest(csr_pem=csr, role=role, ttl=ttl)
