"""The HTTP server's own protocol layer over raw sockets: problem+json for requests aiohttp's
parser rejects, the header and keep-alive timeouts, the connection cap.

The server is the real one (``start_app`` on a bound socket) serving the small app of
``tests/support/slow_app.py``; clients are raw TCP streams, so the tests see exactly the
bytes on the wire. These tests pin the aiohttp behaviour the server relies on (the
``handle_error`` hook, ``LineTooLong``'s limit argument, the parser's exception classes,
the idle-connection attributes the header timer reads).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from issuer.http.server import ServerLimits, bind_socket, start_app
from tests.support.slow_app import create_app

MARKER = b"XMARKERX"
WAIT = 10.0  # bound on any single read; generous, never the thing under test

Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Start the server with some limits; returns its port. Stopped after the test."""
    runners = []

    async def start(**limits: Any) -> int:
        sock = bind_socket("127.0.0.1", 0)
        runners.append(
            (await start_app(create_app(tmp_path), sock, ssl_context=None, limits=ServerLimits(**limits)), sock)
        )
        return int(sock.getsockname()[1])

    yield start
    for runner, sock in runners:
        await runner.cleanup()
        sock.close()


async def exchange(port: int, *chunks: bytes, pause: float = 0.0) -> bytes:
    """Send ``chunks`` (``pause`` apart) and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def responses(raw: bytes) -> int:
    return len(re.findall(rb"HTTP/1\.[01] \d{3} ", raw))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One Content-Length framed response from a keep-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    status, headers, _ = parse(head)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WAIT)
    return status, body


GET_PID = b"GET /pid HTTP/1.1\r\nHost: test\r\n\r\n"

# name, request bytes, status, code, the aiohttp exception class named in the log line
# (C parser|pure-Python parser where they differ: AIOHTTP_NO_EXTENSIONS=1 runs the latter)
CASES = [
    ("garbage request line", b"GARBAGE " + MARKER + b"\r\n\r\n", 400, "bad_request", "BadHttpMethod"),
    ("bad method", b"G@T /" + MARKER + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request", "BadHttpMethod"),
    ("bad version", b"GET /" + MARKER + b" HTTP/1.x\r\nHost: x\r\n\r\n", 400, "bad_request", "BadStatusLine"),
    (
        "bad header name",
        b"GET /pid HTTP/1.1\r\nHost: x\r\nBad " + MARKER + b": v\r\n\r\n",
        400,
        "bad_request",
        "BadHttpMessage|InvalidHeader",
    ),
    (
        "content-length with transfer-encoding",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX-M: "
        + MARKER
        + b"\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
        "BadHttpMessage",
    ),
    (
        "duplicate content-length",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nX-M: " + MARKER + b"\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
        "bad_request",
        "BadHttpMessage",
    ),
    (
        "invalid chunk size",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ" + MARKER + b"\r\nabc\r\n0\r\n\r\n",
        400,
        "bad_request",
        "BadHttpMessage|TransferEncodingError",
    ),
    ("missing host", b"GET /" + MARKER + b" HTTP/1.1\r\n\r\n", 400, "bad_request", "BadHttpMessage"),
    (
        "TLS on the plain port",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + MARKER + b"\r\n\r\n",
        400,
        "bad_request",
        "BadHttpMethod",
    ),
    (
        "request line too long",
        b"GET /" + MARKER * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        "request_line_too_long",
        "LineTooLong",
    ),
    (
        "header too long",
        b"GET /pid HTTP/1.1\r\nHost: x\r\nX-A: " + MARKER * 1100 + b"\r\n\r\n",
        431,
        "request_header_too_large",
        "LineTooLong",
    ),
    (
        "too many headers",
        b"GET /pid HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, MARKER) for i in range(120)) + b"\r\n",
        431,
        "request_header_too_large",
        "BadHttpMessage",
    ),
]


@pytest.mark.parametrize(("name", "request_bytes", "status", "code", "error_class"), CASES, ids=[c[0] for c in CASES])
async def test_protocol_error_is_problem_json_and_echoes_nothing(
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
    name: str,
    request_bytes: bytes,
    status: int,
    code: str,
    error_class: str,
) -> None:
    port = await serve()
    with caplog.at_level(logging.DEBUG):
        raw = await exchange(port, request_bytes)  # returns only once the server closed the connection

    got_status, headers, body = parse(raw)
    assert got_status == status
    assert headers["content-type"].split(";")[0] == "application/problem+json"
    problem = json.loads(body)
    assert set(problem) == {"type", "title", "status", "detail", "code", "request_id"}
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"].endswith("#" + code)
    assert re.fullmatch(r"[0-9a-f]{16}", problem["request_id"])
    assert headers["x-request-id"] == problem["request_id"]
    assert MARKER not in raw
    assert responses(raw) == 1

    ours = [r for r in caplog.records if r.name == "issuer.http.server"]
    assert len(ours) == 1
    assert ours[0].levelno == logging.INFO
    assert "127.0.0.1" in ours[0].getMessage()
    assert re.search(rf"127\.0\.0\.1: ({error_class}) \(", ours[0].getMessage())
    assert "XMARKERX" not in ours[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_each_protocol_error_gets_a_fresh_request_id_not_the_clients(serve: Serve) -> None:
    port = await serve()
    bad = b"G@T / HTTP/1.1\r\nHost: x\r\nX-Request-ID: client-chosen-" + MARKER + b"\r\n\r\n"
    first = json.loads(parse(await exchange(port, bad))[2])["request_id"]
    second = json.loads(parse(await exchange(port, bad))[2])["request_id"]
    assert first != second


async def test_a_good_request_is_served(serve: Serve) -> None:
    port = await serve()
    status, headers, body = parse(await exchange(port, b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert isinstance(json.loads(body)["pid"], int)


@pytest.mark.parametrize("pause", [0.0, 0.2], ids=["no-pause", "after-the-handler-started"])
async def test_bad_chunk_after_a_good_one_gets_one_400_not_a_hang(serve: Serve, pause: float) -> None:
    # The head and a good chunk arrive first, the bad chunk later: aiohttp's C parser leaves
    # the body open, and without the server's fix the handler waits for it forever.
    port = await serve()
    raw = await exchange(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"ZZ" + MARKER + b"\r\nabc\r\n0\r\n\r\n",
        pause=pause,
    )
    status, headers, body = parse(raw)
    assert status == 400
    assert headers["content-type"].split(";")[0] == "application/problem+json"
    assert json.loads(body)["code"] == "bad_request"
    assert MARKER not in raw
    assert responses(raw) == 1


async def test_bad_chunk_in_a_pipelined_request_waiting_its_turn_gets_one_400(serve: Serve) -> None:
    # The first request is still being handled when the second one's body turns bad.
    port = await serve()
    raw = await exchange(
        port,
        b"GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"ZZ" + MARKER + b"\r\nabc\r\n0\r\n\r\n",
        pause=0.2,
    )
    first, _, second = raw.partition(b"}")  # the end of the first JSON body
    assert parse(first)[0] == 200
    status, _, body = parse(second)
    assert (status, json.loads(body)["code"]) == (400, "bad_request")
    assert responses(raw) == 2
    assert MARKER not in raw


async def test_chunked_body_that_is_valid_is_read_whole(serve: Serve) -> None:
    port = await serve()
    raw = await exchange(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"2\r\nde\r\n0\r\n\r\n",
        pause=0.2,
    )
    status, _, body = parse(raw)
    assert (status, json.loads(body)) == (200, {"length": 5})


# -- timeouts ------------------------------------------------------------------------------


async def trickle_until_closed(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, lines: int
) -> tuple[bool, bytes]:
    """Send a header line every 0.1 s; (closed by the server?, anything it sent)."""
    for i in range(lines):
        try:
            writer.write(b"X-Slow-%d: a\r\n" % i)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1), 0.1)
        except TimeoutError:
            continue
        except ConnectionError:
            return True, b""
        return data == b"", data
    return False, b""


async def test_header_timeout_closes_a_client_trickling_its_head(serve: Serve) -> None:
    port = await serve(header_timeout=0.3, keepalive_timeout=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /pid HTTP/1.1\r\n")
    closed, sent = await trickle_until_closed(writer, reader, lines=100)  # 10 s of trickle
    writer.close()
    assert closed and sent == b""


async def test_header_timeout_applies_to_the_next_request_on_a_kept_alive_connection(serve: Serve) -> None:
    port = await serve(header_timeout=0.3, keepalive_timeout=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET_PID)
    assert (await read_response(reader))[0] == 200
    writer.write(b"GET /pid HTTP/1.1\r\n")
    closed, sent = await trickle_until_closed(writer, reader, lines=100)
    writer.close()
    assert closed and sent == b""


async def test_header_timeout_closes_a_connection_that_sends_nothing(serve: Serve) -> None:
    port = await serve(header_timeout=0.3, keepalive_timeout=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()


async def test_header_timeout_does_not_cut_a_slow_body(serve: Serve) -> None:
    port = await serve(header_timeout=0.3, keepalive_timeout=60)
    raw = await exchange(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 8\r\n\r\n",
        *[b"b"] * 8,
        pause=0.1,  # the body takes ~0.8 s, well past the header timeout
    )
    status, _, body = parse(raw)
    assert (status, json.loads(body)) == (200, {"length": 8})


async def test_idle_keepalive_connection_is_closed(serve: Serve) -> None:
    port = await serve(header_timeout=60, keepalive_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET_PID)
    status, _ = await read_response(reader)
    assert status == 200
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()


async def test_normal_client_is_unaffected_by_small_timeouts(serve: Serve) -> None:
    port = await serve(header_timeout=0.5, keepalive_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(3):
        writer.write(GET_PID)
        assert (await read_response(reader))[0] == 200
    writer.close()


# -- connection cap ------------------------------------------------------------------------


async def test_connections_beyond_the_cap_are_closed_at_accept(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    port = await serve(max_connections=2)
    kept = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET_PID)
        assert (await read_response(reader))[0] == 200
        kept.append(writer)

    with caplog.at_level(logging.WARNING):
        raw = await exchange(port, GET_PID)
        await asyncio.sleep(0.1)  # let the refused connection's close run its callbacks
    assert raw == b""
    assert any("connection limit reached (2)" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    kept.pop().close()
    for _ in range(100):  # the server notices the close on its next loop turns
        raw = await exchange(port, b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        if raw:
            break
        await asyncio.sleep(0.05)
    assert parse(raw)[0] == 200
    for writer in kept:
        writer.close()


# -- the aiohttp internals the server reads -------------------------------------------------


def test_the_aiohttp_internals_the_server_relies_on_are_there() -> None:
    # After an aiohttp upgrade that fails this, re-read server_protocol.py's hooks against the new source.
    assert {"_waiter", "_messages", "_current_request"} <= set(RequestHandler.__slots__)
    assert list(inspect.signature(RequestHandler.handle_error).parameters) == [
        "self",
        "request",
        "status",
        "exc",
        "message",
    ]
    err = _ErrInfo(status=400, exc=LineTooLong(b"x", 4096), message="")
    assert (err.status, err.exc.args[1]) == (400, 4096)
