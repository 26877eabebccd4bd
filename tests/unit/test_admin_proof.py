"""An operator's proof, checked without I/O: purpose, request binding, skew, and the machine path refusing it.

Requests are signed by botocore's SigV4 signer (tests/support/sts_signing.py); each test changes
one thing, by signing differently or by tampering after signing.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from issuer.attest.admin_proof import (
    ADMIN_PROOF_SKEW,
    decode_proof_header,
    request_digest,
    validate_admin_proof,
)
from issuer.attest.sts import validate_sts_request
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.attest.sts_wire import parse_sts_request
from issuer.errors import Unauthorized
from tests.support.sts_signing import SignedStsRequest, sign_get_caller_identity

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SERVER_ID = "issuer.example.org"
HOSTS = StsHostAllowlist.from_botocore()
DIGEST = request_digest("POST", "/v1/admin/tokens", b'{"role":"onprem","name":"db-7"}')


def sign(*, purpose: str | None = "admin", digest: str | None = DIGEST, **overrides: Any) -> SignedStsRequest:
    extra: dict[str, str] = {}
    if purpose is not None:
        extra["X-Issuer-Purpose"] = purpose
    if digest is not None:
        extra["X-Issuer-Admin-Request"] = digest
    options: dict[str, Any] = {
        "access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "now": NOW,
        "server_id": SERVER_ID,
        "host": "sts.us-east-1.amazonaws.com",
        "extra_headers": extra,
    }
    options.update(overrides)
    return sign_get_caller_identity(**options)


def check(signed: SignedStsRequest, *, digest: str = DIGEST, now: datetime = NOW) -> Any:
    request = parse_sts_request({"sts_request": signed.sts_request()})
    return validate_admin_proof(request, server_id=SERVER_ID, digest=digest, hosts=HOSTS, now=now)


def refused(signed: SignedStsRequest, code: str, **kwargs: Any) -> None:
    with pytest.raises(Unauthorized) as caught:
        check(signed, **kwargs)
    assert caught.value.code == code, caught.value.reason
    assert caught.value.status_hint == 401


def test_an_operators_proof_for_this_request_is_accepted() -> None:
    checked = check(sign())
    assert "x-issuer-purpose" in checked.signed_headers and "x-issuer-admin-request" in checked.signed_headers
    assert checked.expires_at == NOW + ADMIN_PROOF_SKEW
    # What goes to STS carries the signed headers unchanged.
    forwarded = {n.lower(): v for n, v in checked.forward_headers}
    assert forwarded["x-issuer-purpose"] == "admin" and forwarded["x-issuer-admin-request"] == DIGEST


def test_a_machines_proof_is_not_an_operators() -> None:
    machine = sign(purpose=None, digest=None, csr_sha256_hex="ab" * 32)
    refused(machine, "admin_proof_purpose")


@pytest.mark.parametrize(
    ("signed", "code"),
    [
        (sign(purpose="machine"), "admin_proof_purpose"),
        (sign(purpose=None).with_header("X-Issuer-Purpose", "admin"), "admin_proof_purpose"),  # not signed
        (sign(digest=None), "admin_proof_request_missing"),
        (sign(digest=None).with_header("X-Issuer-Admin-Request", DIGEST), "admin_proof_request_unsigned"),
        (sign(digest="0" * 64), "admin_proof_request_mismatch"),
        (sign(csr_sha256_hex="ab" * 32), "admin_proof_csr_binding"),
        (sign(server_id="another.example.org"), "sts_server_id_mismatch"),
        (sign(now=NOW - ADMIN_PROOF_SKEW - timedelta(seconds=1)), "sts_date_skew"),
        (sign(now=NOW + ADMIN_PROOF_SKEW + timedelta(seconds=1)), "sts_date_skew"),
    ],
    ids=[
        "other-purpose",
        "purpose-unsigned",
        "no-binding",
        "binding-unsigned",
        "other-request",
        "csr-binding",
        "other-server",
        "too-old",
        "too-new",
    ],
)
def test_refused(signed: SignedStsRequest, code: str) -> None:
    refused(signed, code)


def test_skew_inside_the_window_is_fine() -> None:
    check(sign(now=NOW - ADMIN_PROOF_SKEW + timedelta(seconds=5)))


def test_the_machine_path_refuses_an_operators_proof() -> None:
    for signed in (
        sign(csr_sha256_hex="ab" * 32),
        sign(purpose=None, csr_sha256_hex="ab" * 32).with_header("X-Issuer-Purpose", "x"),
    ):
        request = parse_sts_request({"sts_request": signed.sts_request()})
        with pytest.raises(Unauthorized) as caught:
            validate_sts_request(
                request, server_id=SERVER_ID, csr_sha256_hex="ab" * 32, require_csr_binding=True, hosts=HOSTS, now=NOW
            )
        assert caught.value.code == "sts_purpose_not_allowed"
    # Without the purpose header the same request is a machine's and passes.
    plain = sign(purpose=None, digest=None, csr_sha256_hex="ab" * 32)
    validate_sts_request(
        parse_sts_request({"sts_request": plain.sts_request()}),
        server_id=SERVER_ID,
        csr_sha256_hex="ab" * 32,
        require_csr_binding=True,
        hosts=HOSTS,
        now=NOW,
    )


def test_the_request_digest_covers_method_target_and_body() -> None:
    base = request_digest("POST", "/v1/admin/tokens", b"{}")
    assert base == request_digest("post", "/v1/admin/tokens", b"{}")
    others = {
        request_digest("GET", "/v1/admin/tokens", b"{}"),
        request_digest("POST", "/v1/admin/tokens/revoke", b"{}"),
        request_digest("POST", "/v1/admin/tokens?x=1", b"{}"),
        request_digest("POST", "/v1/admin/tokens", b"{ }"),
    }
    assert base not in others and len(others) == 4
    # A fixed vector (sha256 of "GET\n/v1/admin/whoami\n" + sha256 of the empty body), for clients in other languages.
    assert request_digest("GET", "/v1/admin/whoami", b"") == (
        "551d5ffd8db4aa321799fa7e93b5c8bd9aa825e59ab2598b36ae60910750567f"
    )


def test_the_header_is_base64_json_within_bounds() -> None:
    good = base64.b64encode(json.dumps({"method": "POST"}).encode()).decode()
    assert decode_proof_header(good) == {"method": "POST"}
    for value, code in (
        (None, "admin_proof_missing"),
        ("  ", "admin_proof_missing"),
        ("not base64!", "admin_proof_malformed"),
        (base64.b64encode(b"[1, 2]").decode(), "admin_proof_malformed"),
        (base64.b64encode(b"{").decode(), "admin_proof_malformed"),
        ("A" * (8 * 1024), "admin_proof_malformed"),
    ):
        with pytest.raises(Unauthorized) as caught:
            decode_proof_header(value)
        assert caught.value.code == code
