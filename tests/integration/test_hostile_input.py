"""Hostile input at every issue endpoint: each gets a specific 4xx problem+json with its audit row, never a 500.

Each case here was a 500 (or was accepted) before the pipeline issue: absurd durations and
numbers, deep nesting, bodies that are not JSON, clients that leave mid-body, a blank
second EC2 signature, and request ids chosen by the client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from issuer.attest.sts_wire import parse_sts_request
from issuer.errors import PayloadTooLarge
from tests.support.harness import Harness, new_csr, running_issuer
from tests.support.tcp_proxy import proxied_database

CONFIG = """
[issuer]
trust_domain = "test.example"
server_id = "issuer.test.example"

[[roles]]
name = "onprem"
methods = ["token"]

[[roles]]
name = "fleet"
methods = ["aws-ec2"]
max_instance_age = "10m"

[[roles]]
name = "tasks"
methods = ["aws-iam"]
"""
ENDPOINTS = {"token": "/v1/issue/token", "aws-ec2": "/v1/issue/aws-ec2", "aws-iam": "/v1/issue/aws-iam"}
JSON = {"Content-Type": "application/json"}


def minimal(method: str) -> dict[str, Any]:
    """A body with the method's fields present, so only the field under test is wrong."""
    base: dict[str, Any] = {"csr": new_csr()[1]}
    if method == "token":
        base["token"] = "ijt_" + "A" * 43
    elif method == "aws-ec2":
        base.update(document="{}", rsa2048="QUJD")
    else:
        base["sts_request"] = {"method": "POST", "url": "https://sts.amazonaws.com/", "headers": {}, "body": ""}
    return base


async def expect(h: Harness, resp: Any, *, status: int, code: str, method: str) -> dict[str, Any]:
    problem: dict[str, Any] = await resp.json(content_type=None)
    assert (resp.status, problem.get("code")) == (status, code), problem
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert problem["request_id"] == resp.headers["X-Request-ID"]
    audit = [a for a in await h.attestations() if a.request_id == problem["request_id"]]
    assert [(a.outcome, a.method, a.code) for a in audit] == [("failure", method, code)]
    assert await h.certificates() == []
    return problem


@pytest.mark.parametrize("method", list(ENDPOINTS))
@pytest.mark.parametrize(
    ("ttl", "code"),
    [
        ("1000000000d", "field_invalid"),  # a timedelta overflow
        ("9" * 40 + "s", "field_invalid"),
        (int("1" * 40), "body_not_json"),  # a number longer than the JSON number cap
    ],
)
async def test_absurd_ttls_are_400_with_an_audit_row(
    tmp_path: Path, pg_url: str, method: str, ttl: object, code: str
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        body = json.dumps({**minimal(method), "ttl": ttl})
        resp = await h.client.post(ENDPOINTS[method], data=body, headers=JSON)
        await expect(h, resp, status=400, code=code, method=method)


@pytest.mark.parametrize("method", list(ENDPOINTS))
async def test_a_4401_digit_integer_and_deep_nesting_are_400(tmp_path: Path, pg_url: str, method: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        huge = '{"csr": "x", "ttl": ' + "1" * 4401 + "}"
        resp = await h.client.post(ENDPOINTS[method], data=huge, headers=JSON)
        problem = await expect(h, resp, status=400, code="body_not_json", method=method)
        assert "1111" not in problem["detail"]  # nothing of the body is echoed
        deep = '{"csr": "x", "role": ' + "[" * 1000 + "]" * 1000 + "}"
        resp = await h.client.post(ENDPOINTS[method], data=deep, headers=JSON)
        problem: dict[str, Any] = await resp.json(content_type=None)
        assert (resp.status, problem["code"]) == (400, "body_not_json")
        assert "nested deeper" in problem["detail"]


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", b'{"csr": "x"}'),
        ("application/x-www-form-urlencoded", b"csr=x&token=y"),
        ("application/json; charset=utf-16", '{"csr": "x"}'.encode("utf-16")),
        (None, b'{"csr": "x"}'),
    ],
)
async def test_bodies_that_are_not_utf8_json_get_415(
    tmp_path: Path, pg_url: str, content_type: str | None, data: bytes
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        headers = {"Content-Type": content_type} if content_type else {}
        resp = await h.client.post(ENDPOINTS["token"], data=data, headers=headers, skip_auto_headers=["Content-Type"])
        await expect(h, resp, status=415, code="unsupported_media_type", method="token")


async def test_json_with_an_explicit_utf8_charset_is_fine(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        token = await h.token()
        body = json.dumps({"csr": new_csr()[1], "token": token})
        resp = await h.client.post(
            ENDPOINTS["token"], data=body, headers={"Content-Type": "application/json; charset=UTF-8"}
        )
        assert resp.status == 201


async def test_duplicate_keys_are_refused(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        # json.loads would keep the last "token": two readers of one body could disagree.
        data = '{"csr": "x", "token": "ijt_a", "token": "ijt_b"}'
        resp = await h.client.post(ENDPOINTS["token"], data=data, headers=JSON)
        await expect(h, resp, status=400, code="body_not_json", method="token")


async def test_a_blank_second_ec2_signature_is_refused(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        body = {**minimal("aws-ec2"), "pkcs7": "   "}
        resp = await h.client.post(ENDPOINTS["aws-ec2"], data=json.dumps(body), headers=JSON)
        await expect(h, resp, status=400, code="ec2_proof_form", method="aws-ec2")


async def test_a_client_that_leaves_mid_body_is_audited_quietly(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        caplog.set_level(logging.INFO)
        port = h.client.port
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/issue/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 5000\r\n\r\n{"csr": "'
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        for _ in range(50):
            rows = await h.attestations()
            if rows:
                break
            await asyncio.sleep(0.05)
        assert [(r.outcome, r.method, r.code) for r in rows] == [("failure", "token", "client_disconnected")]
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], [r.getMessage() for r in errors]
        assert not any("Traceback" in r.getMessage() for r in caplog.records)


async def test_request_ids_are_always_ours(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        ids = []
        for _ in range(2):
            resp = await h.client.post(
                ENDPOINTS["token"], data="{}", headers={**JSON, "X-Request-ID": "chosen-by-the-client"}
            )
            problem = await resp.json(content_type=None)
            assert problem["request_id"] == resp.headers["X-Request-ID"] != "chosen-by-the-client"
            ids.append(problem["request_id"])
        assert ids[0] != ids[1]
        assert sorted(a.request_id for a in await h.attestations()) == sorted(ids)


async def test_a_database_outage_is_503_not_500(tmp_path: Path, pg_url: str) -> None:
    async with proxied_database(pg_url) as (proxy, url), running_issuer(tmp_path, url, config=CONFIG) as h:
        token = await h.token()
        body = json.dumps({"csr": new_csr()[1], "token": token})
        await proxy.cut()
        for _ in range(2):  # a broken pooled connection, then a refused new one
            resp = await h.client.post(ENDPOINTS["token"], data=body, headers=JSON)
            problem = await resp.json(content_type=None)
            assert (resp.status, problem["code"]) == (503, "database_unavailable"), problem
            assert resp.headers["Retry-After"].isdigit()
        ready = await h.client.get("/readyz")
        assert ready.status == 503
        await proxy.restore()
        # Back by itself, and the token whose requests failed still works.
        resp = await h.client.post(ENDPOINTS["token"], data=body, headers=JSON)
        assert resp.status == 201, await resp.text()
        assert (await h.client.get("/readyz")).status == 200


def test_thousands_of_vault_header_names_are_refused_in_linear_time() -> None:
    """iam_request_headers is parsed before its header count is checked: duplicate detection must not be quadratic."""
    names = json.dumps({f"x-h{i}": "" for i in range(20_000)}).encode()
    payload = {
        "iam_http_request_method": "POST",
        "iam_request_url": base64.b64encode(b"https://sts.amazonaws.com/").decode(),
        "iam_request_headers": base64.b64encode(names).decode(),
        "iam_request_body": "",
    }
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge) as refused:
        parse_sts_request(payload)
    assert refused.value.code == "sts_request_too_large"
    assert time.perf_counter() - started < 1.0  # quadratic: about 10 s
