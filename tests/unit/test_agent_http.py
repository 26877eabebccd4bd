"""The agent's HTTP client: TLS verification, no redirects, problem+json and other error bodies."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clients.agent.http import IssuerClient, check_server_url
from clients.errors import (
    EX_CONFIG,
    EX_FAILURE,
    EX_TEMPFAIL,
    ConfigError,
    ResponseError,
    ServerProblem,
    TransportError,
    UsageError,
)
from tests.support.fake_imds import serve_in_thread


@dataclass
class Seen:
    paths: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)


def make_app(seen: Seen) -> web.Application:
    async def record(request: web.Request) -> None:
        seen.paths.append(request.path)
        seen.request_ids.append(request.headers.get("X-Request-ID", ""))

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"echo": await request.json()}, status=201)

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPTemporaryRedirect("/v1/elsewhere")

    async def proxy_error(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=502, text="<html>Bad Gateway</html>\n", content_type="text/html")

    async def problem_without_id(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(
            status=429,
            text='{"status": 429, "title": "Too many", "detail": "Slow down.", "code": "rate_limited"}',
            content_type="application/problem+json",
            headers={"Retry-After": "7"},
        )

    async def headers(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"authorization": request.headers.get("Authorization")}, status=201)

    async def not_an_object(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response([1, 2], status=201)

    app = web.Application()
    app.router.add_post("/v1/ok", ok)
    app.router.add_post("/v1/redirect", redirect)
    app.router.add_post("/v1/elsewhere", ok)
    app.router.add_post("/v1/proxy-error", proxy_error)
    app.router.add_post("/v1/problem", problem_without_id)
    app.router.add_post("/v1/list", not_an_object)
    app.router.add_post("/v1/headers", headers)
    return app


@pytest.fixture
def server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    with serve_in_thread(make_app(seen)) as url:
        yield url, seen


def test_posts_json_and_returns_the_object(server: tuple[str, Seen]) -> None:
    url, seen = server
    assert IssuerClient(url).post_json("/v1/ok", {"a": 1}) == {"echo": {"a": 1}}
    assert len(seen.request_ids[0]) == 16  # the agent names its request for the server's logs


def test_extra_headers_are_sent_but_cannot_replace_our_request_id(server: tuple[str, Seen]) -> None:
    url, seen = server
    answer = IssuerClient(url).post_json(
        "/v1/headers", {}, headers={"Authorization": "Bearer abc", "X-Request-ID": "chosen"}
    )
    assert answer == {"authorization": "Bearer abc"}
    assert seen.request_ids[0] != "chosen" and len(seen.request_ids[0]) == 16


def test_an_unreachable_issuer_is_transient() -> None:
    from tests.support.moto_server import free_port

    with pytest.raises(TransportError) as err:
        IssuerClient(f"http://127.0.0.1:{free_port()}").post_json("/v1/ok", {})
    assert err.value.code == "server_unreachable"
    assert err.value.exit_status == EX_TEMPFAIL and err.value.transient


def test_a_path_prefix_in_the_server_url_is_kept(server: tuple[str, Seen]) -> None:
    url, seen = server
    with pytest.raises(ServerProblem) as err:
        IssuerClient(url + "/prefix/").post_json("/v1/ok", {})
    assert err.value.status == 404
    assert seen.paths == []  # aiohttp's router answered 404 for /prefix/v1/ok before any handler


def test_redirects_are_not_followed(server: tuple[str, Seen]) -> None:
    url, seen = server
    with pytest.raises(ServerProblem) as err:
        IssuerClient(url).post_json("/v1/redirect", {"token": "secret"})
    assert err.value.status == 307
    assert "redirects are not followed" in err.value.detail
    assert seen.paths == ["/v1/redirect"]


def test_a_non_json_error_page_still_gives_status_and_our_request_id(server: tuple[str, Seen]) -> None:
    url, seen = server
    with pytest.raises(ServerProblem) as err:
        IssuerClient(url).post_json("/v1/proxy-error", {})
    assert err.value.status == 502
    assert err.value.code == "http_502"
    assert err.value.detail == "<html>Bad Gateway</html>"
    assert err.value.request_id == seen.request_ids[0]
    assert err.value.exit_status == EX_TEMPFAIL


def test_problem_fields_and_retry_after(server: tuple[str, Seen]) -> None:
    url, seen = server
    with pytest.raises(ServerProblem) as err:
        IssuerClient(url).post_json("/v1/problem", {})
    problem = err.value
    assert (problem.status, problem.code, problem.detail, problem.title) == (
        429,
        "rate_limited",
        "Slow down.",
        "Too many",
    )
    assert problem.one_line() == (
        f"Slow down. (code rate_limited, HTTP 429, request {seen.request_ids[0]}, retry after 7s)"
    )


def test_a_2xx_that_is_not_an_object_is_a_response_error(server: tuple[str, Seen]) -> None:
    url, _ = server
    with pytest.raises(ResponseError):
        IssuerClient(url).post_json("/v1/list", {})


def test_a_client_error_is_not_retryable() -> None:
    assert ServerProblem("no", status=403).exit_status == EX_FAILURE


# --- TLS ------------------------------------------------------------------------------------------


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = datetime.now(timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A CA file for the client and a server context whose certificate that CA signed."""
    where = tmp_path_factory.mktemp("tls")
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Issuer Test CA", ca_key, None, ca_key)
    leaf = _cert("127.0.0.1", server_key, ca, ca_key)
    (where / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (where / "server.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (where / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(where / "server.pem", where / "server.key")
    return where / "ca.pem", context


def test_https_verifies_against_the_ca_bundle(tls: tuple[Path, ssl.SSLContext]) -> None:
    ca_file, context = tls
    with serve_in_thread(make_app(Seen()), ssl_context=context) as url:
        assert url.startswith("https://")
        assert IssuerClient(url, ca_bundle=ca_file).post_json("/v1/ok", {"x": 1}) == {"echo": {"x": 1}}
        with pytest.raises(ConfigError) as err:
            IssuerClient(url).post_json("/v1/ok", {})  # system trust does not know the test CA
    assert err.value.code == "tls_verify_failed"
    # Not transient: without the right --ca-bundle no retry will ever work.
    assert err.value.exit_status == EX_CONFIG
    assert "--ca-bundle" in err.value.message


@pytest.mark.parametrize("name", ["missing.pem", "empty.pem", "."])
def test_an_unusable_ca_bundle_is_a_configuration_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "empty.pem").write_text("")
    with pytest.raises(ConfigError) as err:
        IssuerClient("https://issuer.test", ca_bundle=tmp_path / name)
    assert err.value.code == "ca_bundle_invalid"
    assert err.value.exit_status == EX_CONFIG


# --- where credentials may go ------------------------------------------------------------------


@pytest.mark.parametrize(
    "server",
    ["https://issuer.example.org", "http://127.0.0.1:8080", "http://127.9.9.9", "http://localhost:1", "http://[::1]:1"],
)
def test_https_and_loopback_are_fine(server: str) -> None:
    assert check_server_url(server, allow_insecure_http=False) is None


@pytest.mark.parametrize("server", ["http://issuer.example.org", "http://10.0.0.5:8080", "http://[fd00::1]"])
def test_plain_http_elsewhere_is_refused_unless_asked_for(server: str) -> None:
    with pytest.raises(UsageError) as err:
        check_server_url(server, allow_insecure_http=False)
    assert err.value.code == "insecure_transport"
    warning = check_server_url(server, allow_insecure_http=True)
    assert warning is not None
    assert warning.startswith("warning: ")


@pytest.mark.parametrize("server", ["ftp://issuer", "https://", "issuer.example.org", "https://h/?q=1"])
def test_malformed_server_urls(server: str) -> None:
    with pytest.raises(UsageError) as err:
        check_server_url(server, allow_insecure_http=True)
    assert err.value.code == "server_url_invalid"
