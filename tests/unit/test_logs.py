"""JSON log lines carry a call's ``extra`` facts as fields of their own, never over the formatter's."""

from __future__ import annotations

import json
import logging

from issuer.logs import JsonFormatter, request_id_var


def record(msg: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("issuer.service", logging.INFO, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_extra_facts_are_fields() -> None:
    line = JsonFormatter().format(record("issued", serial="5d60", principal="edge-1", role="onprem", renewed_from=None))
    entry = json.loads(line)
    assert (entry["serial"], entry["principal"], entry["role"], entry["renewed_from"]) == (
        "5d60",
        "edge-1",
        "onprem",
        None,
    )
    assert (entry["msg"], entry["level"], entry["logger"]) == ("issued", "info", "issuer.service")
    assert not {"args", "levelno", "pathname", "lineno", "msecs", "thread", "taskName"} & set(entry)


def test_the_formatters_own_fields_win() -> None:
    token = request_id_var.set("ours-0123456789ab")
    try:
        entry = json.loads(JsonFormatter().format(record("hello", request_id="forged", level="fatal", msg_extra=1)))
    finally:
        request_id_var.reset(token)
    assert (entry["request_id"], entry["level"], entry["msg_extra"]) == ("ours-0123456789ab", "info", 1)


def test_values_that_are_not_json_become_text() -> None:
    from datetime import UTC, datetime

    entry = json.loads(JsonFormatter().format(record("x", when=datetime(2026, 12, 8, tzinfo=UTC))))
    assert entry["when"] == "2026-12-08 00:00:00+00:00"
