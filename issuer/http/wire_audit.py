"""Audit rows for requests refused at the wire, before any issuance handler ran.

Two kinds never reach the pipeline, which writes every other refusal's row:

* requests aiohttp's HTTP parser refuses (``bad_request``: Content-Length with
  Transfer-Encoding, a malformed request line or header; ``request_header_too_large``;
  ``request_line_too_long``), answered by the server's protocol layer
  (:mod:`issuer.http.server_protocol`). Nothing of the request can be trusted or is even
  known — not its path — so the row's method is ``http`` and it names the client's address,
  our request id, the code and the parser's reason;
* requests for an issuance path with the wrong HTTP method (405 ``method_not_allowed``),
  which the router refuses: the row names the method the path belongs to.

A protocol refusal's row is written in the background (the answer is made synchronously
by the protocol); at most :data:`MAX_PENDING` such writes are in flight per process, and
beyond that a refusal is logged instead of written, so a flood of garbage cannot queue
unbounded work. A 405's row is written before the answer is sent, as the pipeline does.
A failed write is logged in one line and never changes the answer.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.service.issuance.model import Clock
from issuer.store import audit
from issuer.store.records import AuditEntry

__all__ = ["MAX_PENDING", "PROTOCOL_METHOD", "WireAudit", "issuance_method"]

log = logging.getLogger("issuer.audit")

MAX_PENDING = 64
# The audit method of a request refused before even its path was known.
PROTOCOL_METHOD = "http"
_ISSUE_PREFIX = "/v1/issue/"
_RENEW_PATH = "/v1/renew"


def issuance_method(path: str) -> str | None:
    """The audit method of an issuance path (``/v1/issue/<method>``, ``/v1/renew``), else None."""
    if path == _RENEW_PATH:
        return "renew"
    if path.startswith(_ISSUE_PREFIX):
        method = path.removeprefix(_ISSUE_PREFIX)
        return method if method and "/" not in method and len(method) <= 16 else None
    return None


class WireAudit:
    """Writes the audit rows of wire refusals; one per application. :meth:`close` on shutdown."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()

    def refused(self, *, request_id: str, remote: str | None, status: int, code: str, reason: str) -> None:
        """A request the HTTP parser refused (the protocol layer's hook): its row, written in the background."""
        entry = AuditEntry(
            method=PROTOCOL_METHOD,
            outcome="failure",
            request_id=request_id,
            code=code,
            reason=f"refused by the HTTP parser ({status}): {reason}"[:4000],
            remote_addr=remote,
        )
        if len(self._pending) >= MAX_PENDING:
            log.warning("audit: %d wire refusals are being written; not writing request %s", MAX_PENDING, request_id)
            return
        task = asyncio.get_running_loop().create_task(self._write(entry, now=self._clock()))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def method_not_allowed(self, request: web.Request, *, request_id: str, remote: str | None) -> None:
        """A 405 on an issuance path: its row, written before the answer. Other paths leave none."""
        method = issuance_method(request.path)
        if method is None:
            return
        entry = AuditEntry(
            method=method,
            outcome="failure",
            request_id=request_id,
            code="method_not_allowed",
            reason=f"HTTP method {request.method[:16]} on {request.path}",
            remote_addr=remote,
        )
        await self._write(entry, now=self._clock())

    async def close(self) -> None:
        """Wait for the rows still being written."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _write(self, entry: AuditEntry, *, now: datetime) -> None:
        try:
            async with self._sessions() as session, session.begin():
                await audit.record(session, entry, now=now)
        except Exception as exc:
            # The refusal stands even if its row cannot be written; say so in one line.
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            name = type(exc).__name__
            log.error("could not record a wire refusal (request %s): %s: %s", entry.request_id, name, first)
