"""Every local check on a signed GetCallerIdentity request, before anything is sent to STS.

The requests are signed by botocore's SigV4 signer (tests/support/sts_signing.py); a test
changes exactly one thing, either by signing differently or by tampering after signing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from issuer.attest.sts import ValidatedStsRequest, validate_sts_request
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.attest.sts_wire import parse_sts_request
from issuer.errors import Unauthorized
from tests.support.sts_signing import FORM, SignedStsRequest, sign_get_caller_identity

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SERVER_ID = "issuer.example.org"
CSR = hashlib.sha256(b"the CSR's DER").hexdigest()
HOSTS = StsHostAllowlist.from_botocore()


def sign(**overrides: Any) -> SignedStsRequest:
    options: dict[str, Any] = {
        "access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "now": NOW,
        "server_id": SERVER_ID,
        "csr_sha256_hex": CSR,
    }
    options.update(overrides)
    return sign_get_caller_identity(**options)


def validate(
    signed: SignedStsRequest,
    *,
    vault: bool = False,
    now: datetime = NOW,
    require_csr_binding: bool = True,
    csr: str = CSR,
) -> ValidatedStsRequest:
    payload: dict[str, object] = signed.vault_fields() if vault else {"sts_request": signed.sts_request()}
    return validate_sts_request(
        parse_sts_request(payload),
        server_id=SERVER_ID,
        csr_sha256_hex=csr,
        require_csr_binding=require_csr_binding,
        hosts=HOSTS,
        now=now,
    )


def denied(signed: SignedStsRequest, code: str, **kwargs: Any) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        validate(signed, **kwargs)
    assert caught.value.code == code, caught.value.reason
    assert caught.value.status_hint == 401
    return caught.value


def with_signed_headers(signed: SignedStsRequest, edit: Callable[[list[str]], list[str]]) -> SignedStsRequest:
    auth = signed.header("Authorization")
    names = re.search(r"SignedHeaders=([^,]+)", auth)
    assert names is not None
    new = ";".join(edit(names.group(1).split(";")))
    return signed.with_header("Authorization", auth.replace(names.group(1), new))


# --- accepted -------------------------------------------------------------------------


def test_a_signed_request_is_accepted_with_what_the_service_needs() -> None:
    signed = sign(session_token="FwoGZXIvYXdzEXAMPLETOKEN")
    ok = validate(signed)
    auth = signed.header("Authorization")
    signature = auth.rsplit("Signature=", 1)[1]
    assert ok.host == "sts.amazonaws.com"
    assert ok.region == "us-east-1"
    assert ok.access_key_id == "AKIAIOSFODNN7EXAMPLE"
    assert ok.signed_headers == (
        "content-type",
        "host",
        "x-amz-date",
        "x-amz-security-token",
        "x-issuer-csr-sha256",
        "x-issuer-server-id",
    )
    assert ok.signature_hash == hashlib.sha256(signature.encode()).hexdigest()
    assert ok.signed_at == NOW
    assert ok.expires_at == NOW + timedelta(minutes=15)
    assert ok.csr_bound is True
    assert ok.forward_headers == signed.headers
    assert ok.request.body == signed.body


def test_vault_style_request_with_vaults_server_id_header() -> None:
    ok = validate(sign(server_id_header="X-Vault-AWS-IAM-Server-ID"), vault=True)
    assert ok.request.vault_style is True
    assert ("X-Vault-AWS-IAM-Server-ID", SERVER_ID) in ok.forward_headers


def test_vault_style_request_may_use_the_issuer_header() -> None:
    assert validate(sign(), vault=True).csr_bound is True


def test_regional_host_signed_for_its_region() -> None:
    ok = validate(sign(host="sts.eu-west-1.amazonaws.com", region="eu-west-1"))
    assert (ok.host, ok.region) == ("sts.eu-west-1.amazonaws.com", "eu-west-1")


def test_explicit_port_443_is_refused_as_the_readme_says() -> None:
    # https://host/ and https://host:443/ mean the same, but the README promises "no port": one form only.
    with pytest.raises(Unauthorized) as err:
        validate(sign(url="https://sts.amazonaws.com:443/"))
    assert err.value.code == "sts_url_invalid"


def test_host_left_to_the_url_is_added_for_forwarding() -> None:
    ok = validate(sign(send_host_header=False))
    assert ("Host", "sts.amazonaws.com") in ok.forward_headers


def test_content_length_as_aws_sdk_go_signs_it() -> None:
    ok = validate(sign(extra_headers={"Content-Length": "43"}))
    assert "content-length" in ok.signed_headers


def test_unknown_unsigned_headers_are_not_forwarded() -> None:
    signed = sign().with_header("User-Agent", "aws-sdk-go/1.44").with_header("X-Forwarded-For", "10.0.0.1")
    names = {name for name, _ in validate(signed).forward_headers}
    assert "User-Agent" not in names
    assert "X-Forwarded-For" not in names


def test_without_required_binding_an_absent_csr_header_is_fine() -> None:
    assert validate(sign(csr_sha256_hex=None), require_csr_binding=False).csr_bound is False


@pytest.mark.parametrize("minutes", [-15, 15])
def test_signing_time_within_fifteen_minutes_either_way(minutes: int) -> None:
    assert validate(sign(), now=NOW + timedelta(minutes=minutes)).signed_at == NOW


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError):
        validate(sign(), now=NOW.replace(tzinfo=None))


# --- refused: where the request goes ------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "post", "PUT"])
def test_only_post(method: str) -> None:
    fields = sign().sts_request()
    fields["method"] = method
    with pytest.raises(Unauthorized) as caught:
        validate_sts_request(
            parse_sts_request({"sts_request": fields}),
            server_id=SERVER_ID,
            csr_sha256_hex=CSR,
            require_csr_binding=True,
            hosts=HOSTS,
            now=NOW,
        )
    assert caught.value.code == "sts_method_not_allowed"


@pytest.mark.parametrize(
    "url",
    [
        "http://sts.amazonaws.com/",
        "https://sts.amazonaws.com",
        "https://sts.amazonaws.com/?Action=AssumeRole",
        "https://sts.amazonaws.com/?",
        "https://sts.amazonaws.com/#x",
        "https://sts.amazonaws.com/x",
        "https://sts.amazonaws.com//",
        "https://evil.example@sts.amazonaws.com/",
        "https://sts.amazonaws.com:8443/",
        "https://sts.amazonaws.com:/",
        "https://sts.amazonaws.com\\@evil.example/",
        "https://sts.amazonaws.com /",
        "https://sts.amazonaws.com%2F@evil.example/",
        "HTTPS://sts.amazonaws.com/",
    ],
)
def test_url_must_be_exactly_https_host_slash(url: str) -> None:
    # The URL is part of what is signed, but it is checked before anything else looks at it.
    signed = sign()
    fields = signed.sts_request()
    fields["url"] = url
    with pytest.raises(Unauthorized) as caught:
        validate_sts_request(
            parse_sts_request({"sts_request": fields}),
            server_id=SERVER_ID,
            csr_sha256_hex=CSR,
            require_csr_binding=True,
            hosts=HOSTS,
            now=NOW,
        )
    assert caught.value.code == "sts_url_invalid"


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "sts.amazonaws.com.evil.example",
        "sts.amazonaws.com.",
        "127.0.0.1",
        "169.254.169.254",
        "sts.cn-north-1.amazonaws.com.cn",  # aws-cn not enabled
        "iam.amazonaws.com",
    ],
)
def test_host_must_be_on_the_allowlist(host: str) -> None:
    denied(sign(host=host), "sts_host_not_allowed")


@pytest.mark.parametrize("host_header", ["evil.example", "sts.amazonaws.com:443", "sts.us-east-1.amazonaws.com"])
def test_host_header_must_match_the_url(host_header: str) -> None:
    denied(sign(extra_headers={"Host": host_header}), "sts_host_mismatch")


# --- refused: what is asked --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"Action=AssumeRole&Version=2011-06-15",
        b"Action=GetCallerIdentity",
        b"Action=GetCallerIdentity&Version=2011-06-15&RoleArn=x",
        b"Action=GetCallerIdentity&Action=GetCallerIdentity&Version=2011-06-15",
        b"Action=GetCallerIdentity&Version=2011-06-15&",
        b"Action=GetCaller%49dentity&Version=2011-06-15",
        b"action=GetCallerIdentity&Version=2011-06-15",
        b"",
    ],
)
def test_body_must_be_exactly_get_caller_identity(body: bytes) -> None:
    denied(sign(body=body), "sts_body_invalid")


def test_body_keys_in_any_order() -> None:
    assert validate(sign(body=b"Version=2011-06-15&Action=GetCallerIdentity")).request.body.startswith(b"Version")


def test_body_must_be_form_encoded() -> None:
    denied(sign(extra_headers={"Content-Type": "application/json"}), "sts_body_invalid")
    denied(sign().without_header("Content-Type"), "sts_body_invalid")


def test_content_length_must_be_the_body_length() -> None:
    denied(sign(extra_headers={"Content-Length": "200"}), "sts_body_invalid")
    denied(sign(extra_headers={"Content-Length": "043"}), "sts_body_invalid")


# --- refused: the signature's shape ------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s.without_header("Authorization"),
        lambda s: s.with_header("Authorization", "Bearer abc"),
        lambda s: s.with_header("Authorization", s.header("Authorization").replace("HMAC-SHA256", "HMAC-SHA512")),
        lambda s: s.with_header("Authorization", s.header("Authorization").upper()),
        lambda s: s.with_header("Authorization", s.header("Authorization") + ", Signature=" + "0" * 64),
        lambda s: s.with_header("Authorization", s.header("Authorization").replace("/aws4_request", "/aws5")),
        lambda s: with_signed_headers(s, lambda names: list(reversed(names))),
        lambda s: with_signed_headers(s, lambda names: [*names, names[-1]]),
    ],
)
def test_authorization_must_be_a_sigv4_header(tamper: Callable[[SignedStsRequest], SignedStsRequest]) -> None:
    denied(tamper(sign()), "sts_auth_invalid")


def test_uppercase_signature_is_refused() -> None:
    signed = sign()
    auth = signed.header("Authorization")
    head, signature = auth.rsplit("Signature=", 1)
    denied(signed.with_header("Authorization", f"{head}Signature={signature.upper()}"), "sts_auth_invalid")


@pytest.mark.parametrize(
    "options",
    [
        {"service": "iam"},
        {"service": "execute-api"},
        {"region": "us-west-2"},
        {"host": "sts.eu-west-1.amazonaws.com", "region": "us-east-1"},
    ],
)
def test_credential_scope_must_be_sts_in_the_hosts_region(options: dict[str, str]) -> None:
    denied(sign(**options), "sts_scope_invalid")


def test_credential_scope_date_must_be_the_signing_day() -> None:
    signed = sign()
    auth = signed.header("Authorization").replace("/20260301/", "/20260228/")
    denied(signed.with_header("Authorization", auth), "sts_scope_invalid")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s.with_header("X-Amz-Target", "AWSSecurityTokenServiceV20110615.AssumeRole"),
        lambda s: s.with_header("X-Amz-Credential", "AKIA/x"),
        lambda s: s.with_header("Transfer-Encoding", "chunked"),
        lambda s: s.with_header("Connection", "close"),
        lambda s: s.with_header("Proxy-Authorization", "Basic eA=="),
    ],
)
def test_forbidden_headers_signed_or_not(tamper: Callable[[SignedStsRequest], SignedStsRequest]) -> None:
    denied(tamper(sign()), "sts_header_not_allowed")


@pytest.mark.parametrize(
    "extra",
    [
        {"X-Amz-Target": "AWSSecurityTokenServiceV20110615.GetCallerIdentity"},
        {"X-Custom-Thing": "1"},
        {"Origin": "https://evil.example"},
        {"X-Vault-AWS-IAM-Server-ID": SERVER_ID},  # only in Vault-style requests
    ],
)
def test_signed_headers_outside_the_forwarded_set_are_refused(extra: dict[str, str]) -> None:
    denied(sign(extra_headers=extra), "sts_header_not_allowed")


def test_x_amz_user_agent_and_content_sha256_are_allowed() -> None:
    ok = validate(sign(extra_headers={"X-Amz-User-Agent": "aws-cli", "X-Amz-Content-SHA256": "e3b0"}))
    assert "x-amz-user-agent" in ok.signed_headers


def test_a_signed_header_must_be_sent() -> None:
    denied(
        sign(extra_headers={"X-Amz-User-Agent": "x"}).without_header("X-Amz-User-Agent"), "sts_signed_header_missing"
    )


@pytest.mark.parametrize("name", ["host", "x-amz-date"])
def test_host_and_date_must_be_signed(name: str) -> None:
    denied(with_signed_headers(sign(), lambda names: [n for n in names if n != name]), "sts_header_unsigned")


def test_session_token_must_be_signed() -> None:
    denied(sign().with_header("X-Amz-Security-Token", "FwoGZXIvYXdzEXAMPLE"), "sts_header_unsigned")


# --- refused: when -----------------------------------------------------------------------------


@pytest.mark.parametrize("age", [timedelta(minutes=16), timedelta(minutes=-16), timedelta(days=3)])
def test_signed_too_long_ago_or_in_the_future(age: timedelta) -> None:
    denied(sign(now=NOW - age), "sts_date_skew")


@pytest.mark.parametrize("value", [None, "2026-03-01T12:00:00Z", "20260301T120000", "20261301T120000Z"])
def test_x_amz_date_must_be_present_and_well_formed(value: str | None) -> None:
    signed = sign()
    signed = signed.without_header("X-Amz-Date") if value is None else signed.with_header("X-Amz-Date", value)
    denied(signed, "sts_date_skew")


# --- refused: bound to this service and this CSR ----------------------------------------------


def test_server_id_missing() -> None:
    denied(sign(server_id=None), "sts_server_id_missing")


def test_server_id_unsigned() -> None:
    denied(sign(server_id=None).with_header("X-Issuer-Server-ID", SERVER_ID), "sts_server_id_unsigned")


def test_server_id_of_another_service() -> None:
    denied(sign(server_id="vault.example.org"), "sts_server_id_mismatch")


def test_vault_server_id_of_another_service() -> None:
    signed = sign(server_id="vault.example.org", server_id_header="X-Vault-AWS-IAM-Server-ID")
    denied(signed, "sts_server_id_mismatch", vault=True)


def test_vault_server_id_unsigned() -> None:
    signed = sign(server_id=None).with_header("X-Vault-AWS-IAM-Server-ID", SERVER_ID)
    denied(signed, "sts_server_id_unsigned", vault=True)


def test_vault_header_alone_does_not_count_for_native_requests() -> None:
    denied(sign(server_id=None).with_header("X-Vault-AWS-IAM-Server-ID", SERVER_ID), "sts_server_id_missing")


def test_csr_binding_missing() -> None:
    denied(sign(csr_sha256_hex=None), "sts_csr_binding_missing")


def test_csr_binding_unsigned() -> None:
    denied(sign(csr_sha256_hex=None).with_header("X-Issuer-CSR-SHA256", CSR), "sts_csr_binding_unsigned")


def test_csr_binding_for_another_key() -> None:
    denied(sign(csr_sha256_hex="00" * 32), "sts_csr_binding_mismatch")


def test_optional_binding_still_checked_when_present() -> None:
    denied(sign(csr_sha256_hex="00" * 32), "sts_csr_binding_mismatch", require_csr_binding=False)
    unsigned = sign(csr_sha256_hex=None).with_header("X-Issuer-CSR-SHA256", CSR)
    denied(unsigned, "sts_csr_binding_unsigned", require_csr_binding=False)


def test_denials_keep_specifics_out_of_the_public_detail() -> None:
    error = denied(sign(server_id="vault.example.org"), "sts_server_id_mismatch")
    assert "vault.example.org" not in error.detail
    assert "vault.example.org" in error.reason


def test_form_header_of_the_helper_is_what_sdks_send() -> None:
    # Guards the fixture: botocore's query protocol sends this exact Content-Type.
    assert sign().header("Content-Type") == FORM


def test_duplicate_headers_in_a_hand_made_request_are_refused() -> None:
    signed = sign()
    parsed = parse_sts_request({"sts_request": signed.sts_request()})
    smuggled = replace(parsed, headers=(*parsed.headers, ("authorization", "AWS4-HMAC-SHA256 Credential=x")))
    with pytest.raises(Unauthorized) as caught:
        validate_sts_request(
            smuggled, server_id=SERVER_ID, csr_sha256_hex=CSR, require_csr_binding=True, hosts=HOSTS, now=NOW
        )
    assert caught.value.code == "sts_header_duplicate"
