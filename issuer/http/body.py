"""Reading an untrusted request body: media type, size, time, a client that leaves, and bounded JSON.

Each way a body can be bad has its own error, so nothing reaches a handler as a
500: the wrong media type (415), too large (413), too slow (408), a client gone
mid-body (499, logged quietly), not JSON, nested too deep or with absurd numbers (400).
Depth and number sizes are bounded before and while parsing, so a hostile body
costs linear time and no recursion.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Collection
from typing import Any

from aiohttp import web

from issuer.errors import ClientError, ClientGone, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

__all__ = ["MAX_DEPTH", "MAX_NUMBER_CHARS", "parse_json", "read_body", "read_json_object"]

MAX_DEPTH = 16
MAX_NUMBER_CHARS = 32
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


async def read_json_object(
    request: web.Request, *, allowed: Collection[str], max_bytes: int, read_timeout: float
) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` keys.

    Raises the errors of :func:`read_body`, and :class:`ClientError` ``body_not_json``,
    ``body_not_object``, ``field_unknown``.
    """
    body = parse_json(await read_body(request, max_bytes=max_bytes, read_timeout=read_timeout))
    if not isinstance(body, dict):
        raise ClientError("The request body must be a JSON object.", code="body_not_object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ClientError(
            f"Unknown field {unknown[0][:64]!r}; this endpoint takes {', '.join(sorted(allowed))}.",
            code="field_unknown",
        )
    return body


async def read_body(request: web.Request, *, max_bytes: int, read_timeout: float) -> bytes:
    """The raw bytes of a JSON request body, read within bounds.

    Raises :class:`UnsupportedMediaType` ``unsupported_media_type``, :class:`PayloadTooLarge`
    ``payload_too_large``, :class:`RequestTimeout` ``body_timeout``, :class:`ClientGone`
    ``client_disconnected``, and :class:`ClientError` ``bad_request`` (body framing), ``body_not_json``,
    ``body_not_object``, ``field_unknown``.
    """
    if request.content_type != "application/json" or (request.charset or "utf-8").lower() != "utf-8":
        given = request.headers.get("Content-Type", "none")
        raise UnsupportedMediaType(
            "Send the request body as JSON with Content-Type: application/json (UTF-8).",
            reason=f"Content-Type {given[:100]!r}",
        )
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than this service accepts ({max_bytes} bytes).")
    try:
        async with asyncio.timeout(read_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"The request body is larger than this service accepts ({max_bytes} bytes).") from None
    except web.HTTPBadRequest as exc:
        # The parser gave up mid-body (a bad chunk after good ones): a client error with its own audit code.
        raise ClientError("The request body framing is invalid.", code="bad_request", reason=exc.text) from None
    except TimeoutError:
        raise RequestTimeout(f"The request body did not arrive within {read_timeout:g} s.") from None
    except ConnectionResetError:
        raise ClientGone("The client closed the connection mid-body.", reason="connection lost while reading") from None
    except asyncio.CancelledError:
        # A server with handler cancellation cancels the handler when the client goes away:
        # still a client that left, and still worth its audit row.
        transport = request.transport
        task = asyncio.current_task()
        if task is None or (transport is not None and not transport.is_closing()):
            raise
        task.uncancel()
        raise ClientGone("The client closed the connection mid-body.", reason="connection lost while reading") from None


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, refusing nesting deeper than :data:`MAX_DEPTH`, numbers longer than
    :data:`MAX_NUMBER_CHARS` characters, non-finite numbers and duplicate keys.

    Raises :class:`ClientError` ``body_not_json`` with what was wrong.
    """
    depth = _max_depth(raw)
    if depth > MAX_DEPTH:
        raise ClientError(f"The JSON body is nested deeper than {MAX_DEPTH} levels.", code="body_not_json")
    try:
        text = raw.decode("utf-8")
        return json.loads(
            text,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
            object_pairs_hook=_no_duplicates,
        )
    except UnicodeDecodeError:
        raise ClientError("The request body is not UTF-8.", code="body_not_json") from None
    except (ValueError, RecursionError) as exc:
        raise ClientError(f"The request body is not valid JSON: {str(exc)[:200]}.", code="body_not_json") from None


def _max_depth(raw: bytes) -> int:
    if raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH:
        return 0  # cannot nest deeper than it has brackets: skip the walk (the usual case)
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b"", raw)):
        if bracket in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number has more than {MAX_NUMBER_CHARS} digits")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number has more than {MAX_NUMBER_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is out of range")
    return value


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return out
