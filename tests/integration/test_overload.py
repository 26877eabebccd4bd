"""Load shedding: beyond ``max_in_flight`` issuance requests, 503 ``overloaded`` at once; never for
health, readiness, metrics or the trust bundle.

Requests are held inside the real signer (``ScriptedSigner``) so the process is full for as
long as the test needs; nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import PG_URL
from tests.support.harness import PASSPHRASE, Harness, new_csr, running_issuer
from tests.support.metrics_scrape import Scrape
from tests.support.scripted_signer import ScriptedSigner

TOKEN = "/v1/issue/token"
JSON = {"Content-Type": "application/json"}


async def scrape(h: Harness) -> Scrape:
    resp = await h.client.get("/metrics")
    assert resp.status == 200
    return Scrape.parse(await resp.text())


async def issue(h: Harness, token: str) -> tuple[int, dict[str, Any]]:
    return await h.post(TOKEN, {"csr": new_csr()[1], "token": token})


async def test_a_full_process_refuses_more_issuance_at_once_and_serves_the_rest(tmp_path: Path, pg_url: str) -> None:
    signer = ScriptedSigner.for_state(tmp_path)
    async with running_issuer(tmp_path, pg_url, signer=signer, max_in_flight=2) as h:
        tokens = [await h.token(name=f"machine-{i}") for i in range(4)]
        signer.hold()
        admitted = [asyncio.create_task(issue(h, tokens[i])) for i in range(2)]
        await signer.arrivals(2)  # both are inside the pipeline, holding their slots

        # The third is refused before its body is read: even a malformed one gets 503, not 400.
        for body in (json.dumps({"csr": new_csr()[1], "token": tokens[2]}), "{not json"):
            resp = await h.client.post(TOKEN, data=body, headers=JSON)
            problem = await resp.json(content_type=None)
            assert (resp.status, problem["code"]) == (503, "overloaded"), problem
            assert resp.headers["Content-Type"].startswith("application/problem+json")
            assert resp.headers["Retry-After"] == "1"
            assert problem["request_id"] == resp.headers["X-Request-ID"]
        resp = await h.client.post("/v1/renew", data="{}", headers={**JSON, "Authorization": "Bearer x"})
        assert (resp.status, (await resp.json(content_type=None))["code"]) == (503, "overloaded")

        # Never shed: liveness, readiness, metrics, the trust material.
        for path in ("/healthz", "/readyz", "/v1/bundle", "/v1/truststore", "/v1/revoked"):
            assert (await h.client.get(path)).status == 200, path
        during = await scrape(h)
        assert during.total("issuer_http_in_flight_requests") == 2
        assert during.total("issuer_http_shed_total", route=TOKEN) == 2
        assert during.total("issuer_http_shed_total", route="/v1/renew") == 1
        assert all(not task.done() for task in admitted)

        signer.release()
        results = await asyncio.gather(*admitted)
        assert [status for status, _ in results] == [201, 201], results
        # A shed request never reached the pipeline: no audit row, and its token is unspent.
        assert [a.outcome for a in await h.attestations()] == ["success", "success"]
        status, body = await issue(h, tokens[2])
        assert status == 201, body
        after = await scrape(h)
        assert after.total("issuer_http_in_flight_requests") == 0
        assert after.total("issuer_http_shed_total") == 3
        assert after.total("issuer_http_requests_total", route=TOKEN, status="503") == 2
        assert after.total("issuer_http_requests_total", route=TOKEN, status="201") == 3


async def test_a_request_that_fails_frees_its_slot(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, max_in_flight=1) as h:
        for _ in range(3):  # refusals, bad bodies and a 404 each give the one slot back
            status, body = await issue(h, "not-a-token")
            assert (status, body["code"]) == (401, "token_invalid"), body
            resp = await h.client.post(TOKEN, data="{", headers=JSON)
            assert resp.status == 400
            assert (await h.client.post("/v1/issue/nothing", data="{}", headers=JSON)).status == 404
        status, body = await issue(h, await h.token())
        assert status == 201, body
        assert (await scrape(h)).total("issuer_http_shed_total") == 0


def test_the_flag_is_checked(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")},
        "ISSUER_STATE_DIR": str(tmp_path / "state"),
        "ISSUER_DATABASE_URL": PG_URL,
        "ISSUER_CA_PASSPHRASE": PASSPHRASE,
    }
    result = subprocess.run(
        [sys.executable, "-m", "issuer.cli", "serve", "--max-in-flight", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["issuer: error: --max-in-flight must be at least 1"]
