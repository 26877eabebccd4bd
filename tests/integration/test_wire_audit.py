"""Refusals at the wire leave an audit row, as the README says: requests the HTTP parser refuses
(Content-Length with Transfer-Encoding, a 20 KB header), a body whose framing breaks mid-way, and
405s on the issuance paths.

The real application is served by the real server (``start_app`` on a bound socket, so aiohttp's
parser and the server's protocol layer are the ones in production) on a migrated Postgres; the
clients are raw TCP streams.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from issuer.app import create_app
from issuer.http.server import ServerLimits, bind_socket, start_app
from issuer.store.engine import make_engine, make_session_factory
from issuer.store.models import Attestation
from tests.support.harness import BASE_CONFIG, PASSPHRASE, new_csr, write_ca

WAIT = 10.0


@dataclass
class Served:
    port: int
    url: str

    async def exchange(self, *parts: bytes, pause: float = 0.0) -> tuple[int, dict[str, str], dict[str, object]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            for part in parts:
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(pause)
            data = await asyncio.wait_for(reader.read(), WAIT)  # the server closes after a refusal
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return int(status_line.split()[1]), headers, json.loads(body)

    async def rows(self, request_id: str, *, tries: int = 100) -> list[Attestation]:
        """The audit rows of ``request_id``, waiting up to ``tries`` × 0.1 s for one written in the background."""
        engine = make_engine(self.url, pool_size=1)
        try:
            sessions = make_session_factory(engine)
            for _ in range(tries):
                async with sessions() as session:
                    found = list(
                        (await session.scalars(select(Attestation).where(Attestation.request_id == request_id))).all()
                    )
                if found:
                    return found
                await asyncio.sleep(0.1)
            return []
        finally:
            await engine.dispose()


@pytest.fixture
async def served(tmp_path: Path, pg_url: str) -> AsyncIterator[Served]:
    from issuer.settings import load_settings

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    write_ca(state)
    (tmp_path / "issuer.toml").write_text(BASE_CONFIG)
    settings = load_settings(
        tmp_path / "issuer.toml",
        env={"ISSUER_STATE_DIR": str(state), "ISSUER_DATABASE_URL": pg_url, "ISSUER_CA_PASSPHRASE": PASSPHRASE},
    )
    sock = bind_socket("127.0.0.1", 0)
    runner = await start_app(create_app(settings), sock, ssl_context=None, limits=ServerLimits())
    try:
        yield Served(port=int(sock.getsockname()[1]), url=pg_url)
    finally:
        await runner.cleanup()
        sock.close()


def body(csr: str) -> bytes:
    return json.dumps({"csr": csr, "token": "ijt_" + "a" * 43}).encode()


PARSER_REFUSALS = [
    (
        "content-length with transfer-encoding",
        b"POST /v1/issue/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "transfer-encoding with content-length",
        b"POST /v1/renew HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "a 20 KB header",
        b"POST /v1/issue/token HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 20_000 + b"\r\n\r\n",
        431,
        "request_header_too_large",
    ),
    ("garbage", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
]


@pytest.mark.parametrize(("name", "raw", "status", "code"), PARSER_REFUSALS, ids=[c[0] for c in PARSER_REFUSALS])
async def test_a_request_the_parser_refuses_leaves_an_audit_row(
    served: Served, name: str, raw: bytes, status: int, code: str
) -> None:
    got, _, problem = await served.exchange(raw)
    assert (got, problem["code"]) == (status, code)
    (row,) = await served.rows(str(problem["request_id"]))
    assert (row.method, row.outcome, row.code, row.remote_addr) == ("http", "failure", code, "127.0.0.1")
    assert row.reason is not None and f"HTTP parser ({status})" in row.reason and "p" * 100 not in row.reason
    assert row.principal is None and row.certificate_serial is None


@pytest.mark.parametrize(
    ("method", "path", "audited_as"),
    [("GET", "/v1/issue/token", "token"), ("PUT", "/v1/renew", "renew"), ("DELETE", "/v1/issue/aws-iam", "aws-iam")],
)
async def test_a_405_on_an_issuance_path_leaves_an_audit_row(
    served: Served, method: str, path: str, audited_as: str
) -> None:
    raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode()
    got, headers, problem = await served.exchange(raw)
    assert (got, problem["code"]) == (405, "method_not_allowed")
    assert headers["allow"] == "POST"
    (row,) = await served.rows(str(problem["request_id"]))
    assert (row.method, row.outcome, row.code) == (audited_as, "failure", "method_not_allowed")
    assert row.reason == f"HTTP method {method} on {path}"


async def test_a_405_elsewhere_is_not_an_attempt(served: Served) -> None:
    raw = b"POST /v1/bundle HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    got, _, problem = await served.exchange(raw)
    assert got == 405
    await asyncio.sleep(0.5)
    assert await served.rows(str(problem["request_id"]), tries=5) == []


@pytest.mark.parametrize(("pause", "audited_as"), [(0.0, "http"), (0.3, "token")], ids=["at once", "mid-body"])
async def test_a_body_whose_chunks_break_is_audited_as_bad_request(
    served: Served, pause: float, audited_as: str
) -> None:
    """Sent at once, the parser refuses the request before its handler starts (a wire refusal);
    after a pause, the handler is reading the body when it breaks (the method's refusal)."""
    payload = body(new_csr()[1])
    first, rest = payload[:20], payload[20:]
    head = (
        b"POST /v1/issue/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(first), first)
    )
    got, _, problem = await served.exchange(head, b"ZZ\r\n" + rest + b"\r\n0\r\n\r\n", pause=pause)
    assert (got, problem["code"]) == (400, "bad_request")
    (row,) = await served.rows(str(problem["request_id"]))
    assert (row.method, row.code) == (audited_as, "bad_request")  # never internal_error
