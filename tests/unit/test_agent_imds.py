"""The IMDSv2 client against the fake IMDS: tokens, exact bytes, and the messages a person sees.

The rules it follows are in test_agent_imds_retries.py (401, 503, hop limit)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from clients.errors import EX_TEMPFAIL, ImdsError, UsageError
from clients.imds import DEFAULT_ENDPOINT, IPV6_ENDPOINT, ImdsClient, ImdsPatience, resolve_endpoint
from tests.support.fake_imds import SAMPLE_DOCUMENT, SAMPLE_RSA2048, ImdsConfig, fake_imds
from tests.support.moto_server import free_port

TOKEN_HEADER = "X-aws-ec2-metadata-token"
NO_PATIENCE = ImdsPatience(max_wait=0)  # one try: these tests are about the message


def test_happy_path_returns_the_exact_document_and_blob() -> None:
    with fake_imds() as imds:
        identity = ImdsClient(imds.url).instance_identity()
    assert identity.document == SAMPLE_DOCUMENT  # byte for byte: whitespace and key order kept
    assert identity.rsa2048 == SAMPLE_RSA2048
    assert identity.instance_id == "i-0123456789abcdef0"
    assert identity.account_id == "123456789012"
    assert identity.region == "eu-west-1"


def test_the_session_token_is_requested_once_and_sent_with_every_get() -> None:
    with fake_imds() as imds:
        ImdsClient(imds.url).instance_identity()
        requests = imds.requests
        (issued,) = imds.tokens
    put, *gets = requests
    assert (put.method, put.path, put.status) == ("PUT", "/latest/api/token", 200)
    assert put.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "60"
    assert [g.path for g in gets] == [
        "/latest/dynamic/instance-identity/document",
        "/latest/dynamic/instance-identity/rsa2048",
    ]
    assert all(g.headers.get(TOKEN_HEADER) == issued and g.status == 200 for g in gets)


def test_the_fake_really_requires_the_token() -> None:
    # Guards the test above: without a token (IMDSv1 style) the fake says 401.
    with fake_imds() as imds:
        client = ImdsClient(imds.url)
        with pytest.raises(ImdsError) as err:
            client.get("/latest/dynamic/instance-identity/document", token="not-issued")
    assert err.value.code == "imds_token_rejected"


def test_imdsv1_only_service_gets_a_message_about_imdsv2() -> None:
    with fake_imds(ImdsConfig(mode="v1-only")) as imds, pytest.raises(ImdsError) as err:
        ImdsClient(imds.url).instance_identity()
    assert err.value.code == "imds_v2_unavailable"
    assert "IMDSv2 is required" in err.value.message
    assert "--http-tokens required" in err.value.message
    assert "HTTP 403" in err.value.message


def test_closed_port_says_where_and_what_to_check() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ImdsError) as err:
        ImdsClient(endpoint, patience=NO_PATIENCE).instance_identity()
    assert err.value.code == "imds_unreachable" and err.value.exit_status == EX_TEMPFAIL
    assert f"cannot reach the instance metadata service at {endpoint}" in err.value.message
    assert "are you on EC2?" in err.value.message
    assert "hop limit" in err.value.message


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_no_answer_is_a_timeout_with_the_hop_limit_hint(silent_endpoint: str) -> None:
    with pytest.raises(ImdsError) as err:
        ImdsClient(silent_endpoint, timeout=0.2, patience=NO_PATIENCE).instance_identity()
    assert err.value.code == "imds_timeout" and err.value.exit_status == EX_TEMPFAIL
    assert "--http-put-response-hop-limit 2" in err.value.message


def test_missing_rsa2048_is_named() -> None:
    with fake_imds(ImdsConfig(rsa2048=None)) as imds, pytest.raises(ImdsError) as err:
        ImdsClient(imds.url).instance_identity()
    assert err.value.code == "imds_not_found"
    assert "/latest/dynamic/instance-identity/rsa2048" in err.value.message


def test_a_document_that_is_not_json_is_refused_early() -> None:
    with fake_imds(ImdsConfig(document="<html>captive portal</html>")) as imds, pytest.raises(ImdsError) as err:
        ImdsClient(imds.url).instance_identity()
    assert err.value.code == "imds_bad_document"


def test_http_proxy_settings_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy must never see (or break) a link-local metadata request.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("no_proxy", "")
    with fake_imds() as imds:
        assert ImdsClient(imds.url).instance_identity().document == SAMPLE_DOCUMENT


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        (None, {}, DEFAULT_ENDPOINT),
        (None, {"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"}, IPV6_ENDPOINT),
        (None, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://[fd00:ec2::254]/"}, "http://[fd00:ec2::254]"),
        ("http://127.0.0.1:9", {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://10.0.0.1"}, "http://127.0.0.1:9"),
    ],
)
def test_endpoint_precedence(explicit: str | None, env: dict[str, str], expected: str) -> None:
    assert resolve_endpoint(explicit, env) == expected


def test_ipv6_endpoint_is_a_valid_base() -> None:
    assert ImdsClient(IPV6_ENDPOINT).endpoint == "http://[fd00:ec2::254]"


def test_an_endpoint_that_is_not_http_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        ImdsClient("file:///etc/passwd")
