"""Admin API requests for tests: an operator's proof signed by botocore, sent through the test client.

:func:`admin_proof` signs an STS ``GetCallerIdentity`` (``tests/support/sts_signing.py``, with
the signing time as a parameter) carrying the three headers an operator's proof signs;
:func:`call` sends one admin request with it and returns the status, the JSON and the proof
(to replay it).
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from issuer.attest.admin_proof import ADMIN_PROOF_HEADER, request_digest
from tests.support.harness import Harness
from tests.support.moto_iam import AwsKey
from tests.support.sts_signing import SignedStsRequest, sign_get_caller_identity

__all__ = ["admin_proof", "call", "encode_proof"]


def encode_proof(signed: SignedStsRequest) -> str:
    return base64.b64encode(json.dumps(signed.sts_request()).encode()).decode()


def admin_proof(
    key: AwsKey,
    *,
    method: str,
    target: str,
    body: bytes = b"",
    server_id: str = "issuer.test.example",
    now: datetime | None = None,
    purpose: str | None = "admin",
    host: str = "sts.us-east-1.amazonaws.com",
    nonce: bool = True,
) -> SignedStsRequest:
    """A signed proof for ``method target`` with ``body`` (``purpose=None`` leaves the purpose out)."""
    # A fresh nonce, as the issuer command signs one: the same request twice in a second is two proofs.
    extra = {"X-Issuer-Admin-Request": request_digest(method, target, body)}
    if nonce:
        extra["X-Issuer-Admin-Nonce"] = secrets.token_hex(16)
    if purpose is not None:
        extra["X-Issuer-Purpose"] = purpose
    return sign_get_caller_identity(
        access_key_id=key.access_key_id,
        secret_access_key=key.secret_access_key,
        session_token=key.session_token,
        now=now or datetime.now(UTC),
        host=host,
        server_id=server_id,
        extra_headers=extra,
    )


async def call(
    h: Harness,
    key: AwsKey | None,
    method: str,
    target: str,
    body: dict[str, Any] | None = None,
    *,
    proof: str | None = None,
) -> tuple[int, dict[str, Any], str | None]:
    """Send one admin request signed by ``key`` (or with the given ``proof``; neither: no proof)."""
    data = json.dumps(body).encode() if body is not None else b""
    if proof is None and key is not None:
        proof = encode_proof(admin_proof(key, method=method, target=target, body=data))
    headers = {"Content-Type": "application/json"} if method == "POST" else {}
    if proof is not None:
        headers[ADMIN_PROOF_HEADER] = proof
    resp = await h.client.request(method, target, data=data if method == "POST" else None, headers=headers)
    return resp.status, json.loads(await resp.text()), proof
