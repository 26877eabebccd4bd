"""The log lines of issuance, refusal and revocation carry their facts as JSON fields (serial, principal,
role, code), not only inside ``msg``: what a log pipeline filters and counts by."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from issuer.logs import JsonFormatter
from issuer.service.revocation.revoke import RevocationTarget, revoke
from tests.support.harness import new_csr, running_issuer


def lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    formatted = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    return [entry for entry in formatted if entry.get("event") == event]


async def test_issued_refused_and_revoked_lines_carry_their_facts(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_issuer(tmp_path, pg_url) as h:
        token = await h.token(name="box-7")
        status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": token})
        assert status == 201, body
        status, refused = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": token})
        assert (status, refused["code"]) == (401, "token_used")
        await revoke(
            h.service.sessions,
            RevocationTarget(kind="serial", value=body["serial"]),
            reason="keyCompromise",
            now=datetime.now(UTC),
        )

    (issued,) = lines(caplog, "issued")
    assert (issued["serial"], issued["principal"], issued["role"], issued["method"]) == (
        body["serial"],
        "box-7",
        "onprem",
        "token",
    )
    assert issued["not_after"] == body["not_after"] and issued["renewed_from"] is None

    (refusal,) = lines(caplog, "refused")
    assert (refusal["code"], refusal["principal"], refusal["role"], refusal["method"]) == (
        "token_used",
        "box-7",
        "onprem",
        "token",
    )

    (revoked,) = lines(caplog, "revoked")
    assert (revoked["serial"], revoked["principal"], revoked["role"], revoked["code"], revoked["reason"]) == (
        body["serial"],
        "box-7",
        "onprem",
        "certificate_revoked",
        "keyCompromise",
    )
