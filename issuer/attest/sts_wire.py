"""The wire forms of a signed STS request: the native ``sts_request`` object and Vault's ``iam_*`` fields.

Untrusted JSON in, an :class:`issuer.attest.sts.StsRequest` out (nothing in it
trusted yet: :func:`issuer.attest.sts.validate_sts_request` decides), or a
``ClientError`` (400; ``PayloadTooLarge``, 413, for size limits).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import NoReturn

from issuer.attest.sts import StsRequest
from issuer.errors import ClientError, PayloadTooLarge

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_URL_BYTES",
    "VAULT_FIELDS",
    "parse_sts_request",
]

MAX_HEADERS = 50
MAX_HEADER_BYTES = 8 * 1024  # name + value
MAX_BODY_BYTES = 1024
MAX_URL_BYTES = 2 * 1024
_NATIVE_FIELDS = frozenset({"method", "url", "headers", "body"})
VAULT_FIELDS = ("iam_http_request_method", "iam_request_url", "iam_request_headers", "iam_request_body")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def parse_sts_request(payload: Mapping[str, object]) -> StsRequest:
    """Read the signed request from an issue request's JSON body.

    Accepts ``sts_request = {method, url, headers, body}`` (body base64; headers an
    object of name to string or one-element list) or Vault's ``iam_http_request_method``,
    ``iam_request_url``, ``iam_request_headers`` and ``iam_request_body`` (base64 as Vault
    sends them; the headers may also be a plain object). Raises ``ClientError`` with code
    ``sts_request_malformed`` or ``sts_header_duplicate``, and ``PayloadTooLarge``
    (a ``ClientError``, 413) with code ``sts_request_too_large``.
    """
    vault = [k for k in VAULT_FIELDS if k in payload]
    if "sts_request" in payload and vault:
        _malformed("send either sts_request or the Vault iam_request_* fields, not both")
    if "sts_request" in payload:
        native = payload["sts_request"]
        if not isinstance(native, Mapping) or set(native) != _NATIVE_FIELDS:
            _malformed("sts_request must be an object with exactly method, url, headers and body")
        return StsRequest(
            method=_string(native["method"], "sts_request.method", 16),
            url=_url(_string(native["url"], "sts_request.url", MAX_URL_BYTES)),
            headers=_headers(native["headers"], "sts_request.headers"),
            body=_b64(native["body"], "sts_request.body", MAX_BODY_BYTES),
            vault_style=False,
        )
    if not vault:
        _malformed("no signed STS request: send sts_request (or Vault's iam_request_* fields)")
    missing = [k for k in VAULT_FIELDS if k not in payload]
    if missing:
        _malformed(f"missing {', '.join(missing)}")
    raw_headers = payload["iam_request_headers"]
    if isinstance(raw_headers, str):
        blob = _b64(raw_headers, "iam_request_headers", MAX_HEADERS * (MAX_HEADER_BYTES + 16))
        try:
            raw_headers = json.loads(blob, object_pairs_hook=_no_duplicate_keys)
        except (ValueError, RecursionError):
            _malformed("iam_request_headers is not base64 of a JSON object")
    url = _b64(payload["iam_request_url"], "iam_request_url", MAX_URL_BYTES)
    try:
        url_text = url.decode("ascii")
    except UnicodeDecodeError:
        _malformed("iam_request_url is not an ASCII URL")
    return StsRequest(
        method=_string(payload["iam_http_request_method"], "iam_http_request_method", 16),
        url=_url(url_text),
        headers=_headers(raw_headers, "iam_request_headers"),
        body=_b64(payload["iam_request_body"], "iam_request_body", MAX_BODY_BYTES),
        vault_style=True,
    )


def _malformed(detail: str) -> NoReturn:
    raise ClientError(detail, code="sts_request_malformed")


def _too_large(detail: str) -> NoReturn:
    raise PayloadTooLarge(detail, code="sts_request_too_large")


def _string(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str):
        _malformed(f"{field} must be a string")
    if len(value) > limit:
        _too_large(f"{field} is longer than {limit} characters")
    return value


def _url(value: str) -> str:
    if len(value) > MAX_URL_BYTES:
        _too_large(f"the STS request URL is longer than {MAX_URL_BYTES} characters")
    return value


def _b64(value: object, field: str, limit: int) -> bytes:
    """Strict base64 (no whitespace, no URL-safe alphabet), at most ``limit`` bytes decoded."""
    text = _string(value, field, 4 * (limit // 3 + 1))
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        _malformed(f"{field} is not valid base64")
    if len(data) > limit:
        _too_large(f"{field} is larger than {limit} bytes")
    return data


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads would silently keep the last of two equal keys: a smuggling vector.
    # One set of lower-cased names, not one per key: the blob may hold thousands before the count is checked.
    lowered: set[str] = set()
    for key, _ in pairs:
        if key.lower() in lowered:
            raise ClientError(f"header {key!r} is sent more than once", code="sts_header_duplicate")
        lowered.add(key.lower())
    return dict(pairs)


def _headers(value: object, field: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        _malformed(f"{field} must be an object of header name to value")
    if len(value) > MAX_HEADERS:
        _too_large(f"{field} has more than {MAX_HEADERS} headers")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, raw in value.items():
        if isinstance(raw, list) and len(raw) > 1:
            raise ClientError(f"header {name!r} is sent more than once", code="sts_header_duplicate")
        one = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            _malformed(f"{field}: {str(name)[:64]!r} is not a header name")
        if not isinstance(one, str):
            _malformed(f"{field}: {name} must be a string or a list of one string")
        if len(name) + len(one) > MAX_HEADER_BYTES:
            _too_large(f"{field}: {name} is larger than {MAX_HEADER_BYTES} bytes")
        if not _HEADER_VALUE.fullmatch(one):
            _malformed(f"{field}: {name} contains characters not allowed in a header value")
        if name.lower() in seen:
            raise ClientError(f"header {name!r} is sent more than once", code="sts_header_duplicate")
        seen.add(name.lower())
        out.append((name, one))
    return tuple(out)
