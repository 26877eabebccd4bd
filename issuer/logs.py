"""Structured logs: one JSON object a line, carrying the request id of the request being served.

Every fact a log call passes as ``extra={...}`` (``serial``, ``principal``, ``role``, ``code``,
``method``, …) is a field of its own in the JSON line, beside the human-readable ``msg``, so a log
pipeline can filter and count by them without parsing messages. The fields ``ts``, ``level``,
``logger``, ``msg``, ``request_id``, ``client_request_id`` and ``exc`` are the formatter's own and
are never overwritten by an ``extra``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# The caller's own X-Request-ID, kept beside ours so logs can be joined up; never trusted as ours.
client_request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_request_id", default=None)


# What every LogRecord has; anything else on a record came from a call's ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
_OWN = frozenset({"ts", "level", "logger", "msg", "request_id", "client_request_id", "exc"})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        client_id = client_request_id_var.get()
        if client_id:
            entry["client_request_id"] = client_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _OWN and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        request_id = request_id_var.get()
        prefix = f"[{request_id}] " if request_id else ""
        base = f"{record.levelname.lower():7} {record.name}: {prefix}{record.getMessage()}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def configure_logging(*, level: str = "info", json_format: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    # Neither formatter prints where a call was made, nor its thread or process: don't collect them
    # for every record (the logging HOWTO's "Optimization" table; each request logs two lines).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log duplicates ours; Alembic's INFO lines are noise unless a migration runs.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
