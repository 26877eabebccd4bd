"""Reading the signed STS request out of an issue request (native and Vault-style)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from issuer.attest.sts_wire import parse_sts_request
from issuer.errors import ClientError, PayloadTooLarge
from tests.support.sts_signing import SignedStsRequest, sign_get_caller_identity

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def signed() -> SignedStsRequest:
    return sign_get_caller_identity(
        access_key_id="AKIAIOSFODNN7EXAMPLE",
        secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        now=NOW,
        csr_sha256_hex="ab" * 32,
    )


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def refused(payload: dict[str, object], code: str) -> ClientError:
    with pytest.raises(ClientError) as caught:
        parse_sts_request(payload)
    assert caught.value.code == code, caught.value.detail
    return caught.value


def test_native_form_keeps_everything_as_sent(signed: SignedStsRequest) -> None:
    req = parse_sts_request({"sts_request": signed.sts_request(), "csr": "...", "role": "r"})
    assert req.method == "POST"
    assert req.url == "https://sts.amazonaws.com/"
    assert req.headers == signed.headers  # names as sent, order kept
    assert req.body == b"Action=GetCallerIdentity&Version=2011-06-15"
    assert req.vault_style is False


def test_vault_fields_are_read_like_vault_sends_them(signed: SignedStsRequest) -> None:
    req = parse_sts_request(signed.vault_fields())
    assert (req.method, req.url, req.headers, req.body) == ("POST", signed.url, signed.headers, signed.body)
    assert req.vault_style is True


def test_vault_headers_may_be_a_plain_object(signed: SignedStsRequest) -> None:
    fields: dict[str, object] = dict(signed.vault_fields())
    fields["iam_request_headers"] = {name: value for name, value in signed.headers}
    assert parse_sts_request(fields).headers == signed.headers


def test_neither_form_is_malformed() -> None:
    refused({"csr": "x"}, "sts_request_malformed")


def test_both_forms_are_malformed(signed: SignedStsRequest) -> None:
    refused({"sts_request": signed.sts_request(), **signed.vault_fields()}, "sts_request_malformed")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", 1),
        ("url", None),
        ("headers", [["Host", "sts.amazonaws.com"]]),
        ("body", "not base64!"),
        ("body", "QWN0aW9u\nPUdldA=="),  # whitespace inside base64
        ("body", b"Action"),
    ],
)
def test_native_wrong_types_are_malformed(signed: SignedStsRequest, field: str, value: object) -> None:
    native = signed.sts_request()
    native[field] = value
    refused({"sts_request": native}, "sts_request_malformed")


def test_native_unknown_or_missing_keys_are_malformed(signed: SignedStsRequest) -> None:
    native = signed.sts_request()
    refused({"sts_request": {**native, "proxy": "http://evil"}}, "sts_request_malformed")
    del native["body"]
    refused({"sts_request": native}, "sts_request_malformed")
    refused({"sts_request": "POST https://sts.amazonaws.com/"}, "sts_request_malformed")


def test_vault_missing_field_is_malformed(signed: SignedStsRequest) -> None:
    fields = signed.vault_fields()
    del fields["iam_request_body"]
    refused(dict(fields), "sts_request_malformed")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("iam_request_headers", b64("not json")),
        ("iam_request_headers", b64("[1, 2]")),
        ("iam_request_headers", "%%%"),
        ("iam_request_url", "https://sts.amazonaws.com/"),  # Vault sends it base64
        ("iam_request_url", b64(b"https://sts.amazonaws.com/\xff")),
        ("iam_http_request_method", ["POST"]),
    ],
)
def test_vault_bad_fields_are_malformed(signed: SignedStsRequest, field: str, value: object) -> None:
    fields: dict[str, object] = dict(signed.vault_fields())
    fields[field] = value
    refused(fields, "sts_request_malformed")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": ["AWS4-HMAC-SHA256 a", "AWS4-HMAC-SHA256 b"]},
        {"Authorization": "AWS4-HMAC-SHA256 a", "authorization": "AWS4-HMAC-SHA256 b"},
        {"Host": "sts.amazonaws.com", "HOST": "evil.example"},
    ],
)
def test_duplicate_headers_are_refused(signed: SignedStsRequest, headers: dict[str, object]) -> None:
    native = signed.sts_request()
    native["headers"] = headers
    refused({"sts_request": native}, "sts_header_duplicate")


def test_duplicate_keys_in_vault_header_json_are_refused(signed: SignedStsRequest) -> None:
    # json.loads would keep only the last Authorization; the smuggled one must not hide.
    blob = '{"Authorization": ["AWS4-HMAC-SHA256 a"], "Authorization": ["AWS4-HMAC-SHA256 b"]}'
    fields = dict(signed.vault_fields())
    fields["iam_request_headers"] = b64(blob)
    refused(dict(fields), "sts_header_duplicate")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Issuer-Server-ID": "issuer.example.org\r\nX-Amz-Target: evil"},
        {"X-Issuer-Server-ID": "a\nb"},
        {"Bad Name": "x"},
        {"Host:": "x"},
        {"": "x"},
        {"Host": []},
        {"Host": [1]},
        {"Host": {"v": "x"}},
    ],
)
def test_header_names_and_values_must_be_clean(signed: SignedStsRequest, headers: dict[str, object]) -> None:
    native = signed.sts_request()
    native["headers"] = headers
    refused({"sts_request": native}, "sts_request_malformed")


def test_a_one_element_list_is_one_header(signed: SignedStsRequest) -> None:
    native = signed.sts_request()
    native["headers"] = {"Host": ["sts.amazonaws.com"]}
    assert parse_sts_request({"sts_request": native}).headers == (("Host", "sts.amazonaws.com"),)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("headers", {f"X-H{i}": "v" for i in range(51)}),
        ("headers", {"X-Big": "v" * (8 * 1024)}),
        ("body", b64(b"A" * 1025)),
        ("url", "https://sts.amazonaws.com/" + "a" * 2048),
    ],
)
def test_size_limits(signed: SignedStsRequest, field: str, value: object) -> None:
    native = signed.sts_request()
    native[field] = value
    error = refused({"sts_request": native}, "sts_request_too_large")
    assert isinstance(error, PayloadTooLarge)
    assert error.status_hint == 413


def test_limits_are_inclusive(signed: SignedStsRequest) -> None:
    native = signed.sts_request()
    native["headers"] = {f"X-H{i}": "v" for i in range(50)}
    native["body"] = b64(b"A" * 1024)
    req = parse_sts_request({"sts_request": native})
    assert len(req.headers) == 50
    assert len(req.body) == 1024


def test_vault_url_size_limit(signed: SignedStsRequest) -> None:
    fields = dict(signed.vault_fields())
    fields["iam_request_url"] = b64("https://sts.amazonaws.com/" + "a" * 2048)
    refused(dict(fields), "sts_request_too_large")


def test_vault_header_json_keeps_order(signed: SignedStsRequest) -> None:
    ordered = [("X-Amz-Date", "20260301T120000Z"), ("Content-Type", "x"), ("Authorization", "a")]
    fields = dict(signed.vault_fields())
    fields["iam_request_headers"] = b64(json.dumps({n: [v] for n, v in ordered}))
    assert parse_sts_request(dict(fields)).headers == tuple(ordered)
