"""The access log line of a refused request names its problem code (log-based metrics count refusals by it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from issuer.logs import JsonFormatter
from tests.support.harness import new_csr, running_issuer


def _access_lines(caplog: pytest.LogCaptureFixture, path: str) -> list[dict[str, object]]:
    formatter = JsonFormatter()
    records = [r for r in caplog.records if r.name == "issuer.access" and getattr(r, "path", None) == path]
    return [json.loads(formatter.format(r)) for r in records]


async def test_refusals_carry_their_code_and_successes_none(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="issuer.access")
    async with running_issuer(tmp_path, pg_url) as h:
        status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": "ijt_" + "A" * 40})
        assert 400 <= status < 500
        status_bad_json, body_bad_json = await h.post("/v1/issue/token", b"{not json")
        assert status_bad_json == 400
        ready = await h.client.get("/healthz")
        assert ready.status == 200

    refused = _access_lines(caplog, "/v1/issue/token")
    assert [(line["status"], line["code"]) for line in refused] == [
        (status, body["code"]),
        (400, body_bad_json["code"]),
    ]
    (healthy,) = _access_lines(caplog, "/healthz")
    assert healthy["status"] == 200 and "code" not in healthy
