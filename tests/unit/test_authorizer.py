"""The Lambda authorizer end to end: API Gateway events (from the AWS docs) with real certificates,
the revocation list served over real HTTP by aiohttp on 127.0.0.1, and the decisions and logs.

Time is passed in (``now``), so the cache's TTL and stale grace are tested without sleeping.
"""

from __future__ import annotations

import ast
import asyncio
import ipaddress
import json
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clients.authorizer import (
    RevocationCache,
    SourceError,
    authorize,
    lambda_handler,
    parse_revocation_document,
)
from tests.support.fake_imds import serve_in_thread
from tests.support.moto_server import free_port
from tests.unit.test_authorizer_cert import URI, Ca, make_ca, make_leaf, pem

DATA = Path(__file__).resolve().parents[1] / "data" / "apigw"
PACKAGE = Path(lambda_handler.__code__.co_filename).parent
ARN = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/test/GET/orders/42"
FINGERPRINT = "ab" * 32

POLICY = {
    "rules": [
        {"name": "read", "routes": ["GET /orders", "GET /orders/*"], "roles": ["web-fleet"]},
        {"name": "write", "routes": ["POST /orders/**"], "uri_prefixes": ["spiffe://example.org/aws/123456789012/"]},
    ],
    "default": "deny",
}


def revoked_doc(*serials: str, entries_only: tuple[str, ...] = ()) -> bytes:
    entry = {
        "issuer_fingerprint": FINGERPRINT,
        "revoked_at": "2026-11-29T11:00:00+00:00",
        "reason": "keyCompromise",
        "not_after": "2026-11-30T11:00:00+00:00",
    }
    return json.dumps(
        {
            "version": 1,
            "generated_at": "2026-11-29T12:00:00+00:00",
            "serials": list(serials),
            "entries": [{"serial": s, **entry} for s in (*serials, *entries_only)],
        }
    ).encode()


# --- the revocation list server ---------------------------------------------------------------


@dataclass
class ListServer:
    """``GET /v1/revoked`` with ETags; counts requests and records If-None-Match."""

    body: bytes = field(default_factory=revoked_doc)
    version: int = 1
    mode: str = "ok"  # ok | error | garbage | redirect | hang | truncated
    url: str = ""
    requests: int = 0
    not_modified: int = 0
    if_none_match: list[str | None] = field(default_factory=list)
    redirected_to: int = 0

    @property
    def etag(self) -> str:
        return f'"v{self.version}"'

    def publish(self, body: bytes) -> None:
        self.body, self.version = body, self.version + 1

    def app(self) -> web.Application:
        async def revoked(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            self.if_none_match.append(request.headers.get("If-None-Match"))
            if self.mode == "error":
                return web.Response(status=503, text="down")
            if self.mode == "garbage":
                return web.Response(body=b"<html>maintenance</html>", content_type="text/html", headers={"ETag": '"g"'})
            if self.mode == "redirect":
                raise web.HTTPFound("/v1/elsewhere")
            if self.mode == "hang":
                await asyncio.sleep(5)
            if self.mode == "truncated":  # promise 1000 bytes, send 10, hang up
                response = web.StreamResponse(headers={"Content-Length": "1000", "Content-Type": "application/json"})
                await response.prepare(request)
                await response.write(self.body[:10])
                assert request.transport is not None
                request.transport.close()
                return response
            if request.headers.get("If-None-Match") == self.etag:
                self.not_modified += 1
                return web.Response(status=304, headers={"ETag": self.etag})
            return web.Response(body=self.body, content_type="application/json", headers={"ETag": self.etag})

        async def elsewhere(request: web.Request) -> web.Response:
            self.redirected_to += 1
            return web.Response(body=self.body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/v1/revoked", revoked)
        app.router.add_get("/v1/elsewhere", elsewhere)
        return app


@pytest.fixture
def server() -> Iterator[ListServer]:
    srv = ListServer()
    with serve_in_thread(srv.app()) as url:
        srv.url = f"{url}/v1/revoked"
        yield srv


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


@pytest.fixture
def leaf(ca: Ca) -> x509.Certificate:
    return make_leaf(ca)


# --- events and calls -------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((DATA / name).read_text())
    return event


def rest_event(
    cert: x509.Certificate | None, *, serial: str | None = None, method: str = "GET", resource: str = "/orders/{id}"
) -> dict[str, Any]:
    event = load("rest-request.json")
    event["httpMethod"], event["resource"] = method, resource
    event["methodArn"] = ARN.replace("/GET/", f"/{method}/")
    event["requestContext"]["requestId"] = "req-rest-1"
    client_cert = event["requestContext"]["identity"]["clientCert"]
    if cert is not None:
        client_cert["clientCertPem"] = pem(cert)
        client_cert["serialNumber"] = serial if serial is not None else colon_hex(cert.serial_number)
    return event


def http_event(
    cert: x509.Certificate | None, *, serial: str | None = None, method: str = "GET", route_key: str | None = None
) -> dict[str, Any]:
    event = load("http-v2-request.json")
    event["routeKey"] = route_key or f"{method} /orders/{{id}}"
    event["requestContext"]["http"]["method"] = method
    client_cert = event["requestContext"]["authentication"]["clientCert"]
    if cert is not None:
        client_cert["clientCertPem"] = pem(cert)
        client_cert["serialNumber"] = serial if serial is not None else colon_hex(cert.serial_number)
    return event


def colon_hex(serial: int) -> str:
    """How the API Gateway docs print a serial: colon-separated hex pairs."""
    raw = format(serial, "x")
    raw = raw.zfill(len(raw) + len(raw) % 2)
    return ":".join(raw[i : i + 2] for i in range(0, len(raw), 2))


SHAPES: dict[str, Callable[..., dict[str, Any]]] = {"rest": rest_event, "http": http_event}


@dataclass
class Harness:
    """One authorizer 'environment': its module-memory cache, its env and its log lines."""

    env: dict[str, str]
    cache: RevocationCache = field(default_factory=RevocationCache)
    lines: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, event: object, now: datetime | None = None) -> dict[str, Any]:
        before = len(self.lines)
        response = authorize(event, env=self.env, cache=self.cache, now=now or datetime.now(UTC), log=self._log)
        decisions = [line for line in self.lines[before:] if line["event"] == "authorizer_decision"]
        assert len(decisions) == 1, "exactly one decision line per invocation"
        return response

    def _log(self, line: str) -> None:
        assert "\n" not in line
        self.lines.append(json.loads(line))

    @property
    def last(self) -> dict[str, Any]:
        return [line for line in self.lines if line["event"] == "authorizer_decision"][-1]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["event"] == name]


def env_for(url: str, **extra: str) -> dict[str, str]:
    return {"ISSUER_REVOKED_URL": url, "ISSUER_AUTHZ_POLICY": json.dumps(POLICY), **extra}


def allowed(response: dict[str, Any]) -> bool:
    if "isAuthorized" in response:
        assert set(response) == {"isAuthorized", "context"}
        return bool(response["isAuthorized"])
    statement = response["policyDocument"]["Statement"]
    assert response["policyDocument"]["Version"] == "2012-10-17" and len(statement) == 1
    assert statement[0]["Action"] == "execute-api:Invoke"
    assert statement[0]["Effect"] in ("Allow", "Deny")
    return bool(statement[0]["Effect"] == "Allow")


# --- valid and revoked, both shapes -----------------------------------------------------------


def test_rest_valid_certificate_gets_an_allow_policy_for_the_method_arn(
    server: ListServer, leaf: x509.Certificate
) -> None:
    authz = Harness(env_for(server.url))
    response = authz(rest_event(leaf))
    assert response["policyDocument"]["Statement"][0] == {
        "Action": "execute-api:Invoke",
        "Effect": "Allow",
        "Resource": ARN,
    }
    assert response["principalId"] == URI
    serial = format(leaf.serial_number, "x")
    assert response["context"] == {
        "serial": serial,
        "role": "web-fleet",
        "uri_san": URI,
        "common_name": "web-1",
        "not_after": leaf.not_valid_after_utc.isoformat(),
    }
    assert all(isinstance(v, str) for v in response["context"].values())
    assert authz.last | {"list_age": None} == authz.last | {
        "level": "info",
        "decision": "allow",
        "reason": "allowed",
        "serial": serial,
        "rule": "read",
        "route": "GET /orders/{id}",
        "revocation": "fresh",
        "request_id": "req-rest-1",
        "list_age": None,
    }


def test_http_api_valid_certificate_gets_is_authorized(server: ListServer, leaf: x509.Certificate) -> None:
    authz = Harness(env_for(server.url))
    response = authz(http_event(leaf))
    assert response == {
        "isAuthorized": True,
        "context": {
            "serial": format(leaf.serial_number, "x"),
            "role": "web-fleet",
            "uri_san": URI,
            "common_name": "web-1",
            "not_after": leaf.not_valid_after_utc.isoformat(),
        },
    }


def test_http_api_payload_1_0_is_answered_like_rest(server: ListServer, leaf: x509.Certificate) -> None:
    event = load("http-v1-request.json")
    event["resource"], event["methodArn"] = "/orders/{id}", ARN
    event["requestContext"]["identity"]["clientCert"].update(
        clientCertPem=pem(leaf), serialNumber=colon_hex(leaf.serial_number)
    )
    assert allowed(Harness(env_for(server.url))(event))


@pytest.mark.parametrize("shape", SHAPES)
def test_revoked_serial_is_denied(server: ListServer, ca: Ca, shape: str) -> None:
    good, bad = make_leaf(ca), make_leaf(ca)
    server.body = revoked_doc(format(bad.serial_number, "x"))
    authz = Harness(env_for(server.url))
    assert allowed(authz(SHAPES[shape](good)))
    response = authz(SHAPES[shape](bad))
    assert not allowed(response)
    assert authz.last["reason"] == "revoked" and authz.last["serial"] == format(bad.serial_number, "x")
    assert authz.last["level"] == "warning"
    if shape == "rest":
        assert response["policyDocument"]["Statement"][0]["Resource"] == ARN
    assert server.requests == 1  # one fetch served both decisions


def test_a_serial_listed_only_in_entries_is_revoked(server: ListServer, ca: Ca) -> None:
    bad = make_leaf(ca)
    server.body = revoked_doc(entries_only=(format(bad.serial_number, "x"),))
    authz = Harness(env_for(server.url))
    assert not allowed(authz(rest_event(bad)))
    assert authz.last["reason"] == "revoked"


@pytest.mark.parametrize(
    "render",
    [
        lambda n: format(n, "x"),
        lambda n: format(n, "X"),
        lambda n: "00" + format(n, "x"),
        lambda n: colon_hex(n).upper(),
        lambda n: "00:" + colon_hex(n),
    ],
    ids=["hex", "upper", "leading-zeros", "colons-upper", "colons-leading-zero"],
)
@pytest.mark.parametrize("shape", SHAPES)
def test_serial_number_renderings_are_accepted(server: ListServer, ca: Ca, shape: str, render: Any) -> None:
    # A serial whose top bit is set: DER needs a leading 00 byte, the list has no leading zeros.
    cert = make_leaf(ca, serial=0x80 << 120 | 0xBEEF)
    revoked = make_leaf(ca, serial=0x81 << 120 | 0xBEEF)
    server.body = revoked_doc(format(revoked.serial_number, "x"))
    authz = Harness(env_for(server.url))
    assert allowed(authz(SHAPES[shape](cert, serial=render(cert.serial_number))))
    assert not allowed(authz(SHAPES[shape](revoked, serial=render(revoked.serial_number))))
    assert authz.last["reason"] == "revoked"


# --- the certificate itself -------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_expired_certificate_is_denied(server: ListServer, ca: Ca, shape: str) -> None:
    now = datetime.now(UTC)
    cert = make_leaf(ca, not_before=now - timedelta(days=2), not_after=now - timedelta(seconds=1))
    authz = Harness(env_for(server.url))
    assert not allowed(authz(SHAPES[shape](cert), now=now))
    assert authz.last["reason"] == "cert_expired"
    assert server.requests == 0  # refused before the list was needed
    # The same certificate one second before its notAfter is fine.
    assert allowed(authz(SHAPES[shape](cert), now=now - timedelta(seconds=2)))


def test_not_yet_valid_certificate_is_denied(server: ListServer, ca: Ca) -> None:
    now = datetime.now(UTC)
    cert = make_leaf(ca, not_before=now + timedelta(minutes=5))
    authz = Harness(env_for(server.url))
    assert not allowed(authz(rest_event(cert), now=now))
    assert authz.last["reason"] == "cert_not_yet_valid"


@pytest.mark.parametrize("shape", SHAPES)
def test_pem_and_serial_number_must_agree(server: ListServer, ca: Ca, shape: str) -> None:
    cert, other = make_leaf(ca), make_leaf(ca)
    authz = Harness(env_for(server.url))
    assert not allowed(authz(SHAPES[shape](cert, serial=colon_hex(other.serial_number))))
    assert authz.last["reason"] == "cert_serial_mismatch"
    assert authz.last["serial"] == format(cert.serial_number, "x")  # the log names the PEM's serial


# --- malformed events -------------------------------------------------------------------------


def _set(path: tuple[str, ...], value: object) -> Any:
    def mutate(event: dict[str, Any]) -> None:
        target = event
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return mutate


REST_CERT = ("requestContext", "identity", "clientCert")
HTTP_CERT = ("requestContext", "authentication", "clientCert")

MALFORMED = [
    ("rest", _set(REST_CERT, KeyError), "client_cert_missing"),
    ("rest", _set(REST_CERT, None), "client_cert_missing"),
    ("rest", _set(("requestContext", "identity"), KeyError), "client_cert_missing"),
    ("rest", _set(("requestContext",), KeyError), "client_cert_missing"),
    ("rest", _set(("requestContext",), "x"), "client_cert_missing"),
    ("rest", _set(REST_CERT, "CERT_CONTENT"), "event_malformed"),
    ("rest", _set((*REST_CERT, "clientCertPem"), 42), "event_malformed"),
    ("rest", _set((*REST_CERT, "clientCertPem"), "CERT_CONTENT"), "cert_malformed"),
    (
        "rest",
        _set((*REST_CERT, "clientCertPem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
        "cert_malformed",
    ),
    ("rest", _set((*REST_CERT, "serialNumber"), KeyError), "event_malformed"),
    ("rest", _set((*REST_CERT, "serialNumber"), 12345), "event_malformed"),
    ("rest", _set(("methodArn",), KeyError), "event_malformed"),
    ("rest", _set(("methodArn",), "arn:aws:s3:::bucket"), "event_malformed"),
    ("rest", _set(("httpMethod",), None), "event_malformed"),
    ("rest", _set(("resource",), "orders"), "event_malformed"),
    ("http", _set(HTTP_CERT, KeyError), "client_cert_missing"),
    ("http", _set(("requestContext", "authentication"), None), "client_cert_missing"),
    ("http", _set((*HTTP_CERT, "clientCertPem"), ["x"]), "event_malformed"),
    ("http", _set((*HTTP_CERT, "clientCertPem"), "garbage"), "cert_malformed"),
    ("http", _set(("requestContext", "http"), KeyError), "event_malformed"),
    ("http", _set(("requestContext", "http", "method"), "get it"), "event_malformed"),
    ("http", _set(("routeKey",), KeyError), "event_malformed"),
    ("http", _set(("routeKey",), "GET"), "event_malformed"),
]


@pytest.mark.parametrize(("shape", "mutate", "reason"), MALFORMED)
def test_malformed_events_are_denied_never_raised(
    server: ListServer, leaf: x509.Certificate, shape: str, mutate: Any, reason: str
) -> None:
    event = SHAPES[shape](leaf)
    mutate(event)
    authz = Harness(env_for(server.url))
    response = authz(event)
    assert not allowed(response)
    assert authz.last["reason"] == reason
    assert server.requests == 0


@pytest.mark.parametrize("event", [None, [], "GET /orders", 42, {}, {"version": "2.0"}])
def test_events_that_are_not_api_gateway_events(server: ListServer, event: object) -> None:
    authz = Harness(env_for(server.url))
    response = authz(event)
    assert not allowed(response)
    if isinstance(event, dict) and event.get("version") == "2.0":
        assert response == {
            "isAuthorized": False,
            "context": {
                "reason": "client_cert_missing",
                "detail": "event has no requestContext (use a REQUEST authorizer)",
            },
        }
    else:
        assert response["policyDocument"]["Statement"][0]["Resource"] == "*"
        assert response["principalId"] == "unknown"


def test_token_authorizer_event_has_no_certificate(server: ListServer) -> None:
    authz = Harness(env_for(server.url))
    event = load("rest-token.json")
    response = authz(event)
    assert response["policyDocument"]["Statement"][0] == {
        "Action": "execute-api:Invoke",
        "Effect": "Deny",
        "Resource": event["methodArn"],
    }
    assert authz.last["reason"] == "client_cert_missing"


# --- the route policy through the handler -----------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_policy_by_role_and_by_uri_prefix(server: ListServer, ca: Ca, shape: str) -> None:
    authz = Harness(env_for(server.url))
    by_role = make_leaf(ca, uris=("spiffe://example.org/aws/999999999999/x",))
    by_uri = make_leaf(ca, role="batch")
    make = SHAPES[shape]
    write = {"resource": "/orders/{id}/items"} if shape == "rest" else {"route_key": "POST /orders/{id}/items"}

    assert allowed(authz(make(by_role)))  # GET /orders/{id}: role web-fleet
    assert not allowed(authz(make(by_role, method="POST", **write)))  # POST needs the account's URI
    assert authz.last["reason"] == "identity_not_allowed"
    assert allowed(authz(make(by_uri, method="POST", **write)))
    assert authz.last["rule"] == "write"
    assert not allowed(authz(make(by_uri)))  # GET needs the role
    delete = make(by_role, method="DELETE")
    assert not allowed(authz(delete))
    assert authz.last["reason"] == "route_not_allowed"


def test_http_api_default_route(server: ListServer, leaf: x509.Certificate) -> None:
    event = http_event(leaf, route_key="$default")
    assert not allowed(Harness(env_for(server.url))(event))
    policy = {"rules": [{"routes": ["GET $default"], "roles": ["web-fleet"]}]}
    assert allowed(Harness(env_for(server.url, ISSUER_AUTHZ_POLICY=json.dumps(policy)))(event))


@pytest.mark.parametrize("policy", ["", "{not json", '{"rules": [{"routes": ["GET /ord*"], "roles": ["x"]}]}'])
@pytest.mark.parametrize("shape", SHAPES)
def test_invalid_policy_denies_everything_with_one_clear_line(
    server: ListServer, leaf: x509.Certificate, policy: str, shape: str
) -> None:
    authz = Harness(env_for(server.url, ISSUER_AUTHZ_POLICY=policy))
    assert not allowed(authz(SHAPES[shape](leaf)))
    assert authz.last["reason"] == "policy_invalid" and authz.last["level"] == "error"
    assert "ISSUER_AUTHZ_POLICY" in authz.last["detail"] or "rule 0" in authz.last["detail"]
    assert len(authz.lines) == 1 and "Traceback" not in json.dumps(authz.lines)


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ISSUER_REVOKED_URL": ""}, "ISSUER_CRLS_URL is not set"),
        ({"ISSUER_REVOKED_URL": "http://issuer.example.org/v1/revoked"}, "loopback"),
        ({"ISSUER_REVOKED_URL": "ftp://issuer.example.org/v1/revoked"}, "https://"),
        ({"ISSUER_REVOKED_URL": "http://[::1/v1/revoked"}, "is not a URL"),
        ({"ISSUER_REVOKED_URL": "http://127.0.0.1:port/v1/revoked"}, "is not a URL"),
        ({"ISSUER_REVOKED_URL": "https://user:pw@issuer.example.org/v1/revoked"}, "without credentials"),
        ({"ISSUER_REVOKED_URL": "s3://Bucket_Name/key"}, "s3://bucket/key"),
        ({"ISSUER_REVOKED_URL": "s3://bucket/"}, "s3://bucket/key"),
        ({"ISSUER_REVOKED_URL": "s3://bucket/key"}, "AWS_REGION"),
        ({"ISSUER_REVOKED_URL": "s3://bucket/key", "AWS_REGION": "us-east-1"}, "AWS_ACCESS_KEY_ID"),
        ({"ISSUER_REVOKED_TTL": "soon"}, "ISSUER_REVOKED_TTL"),
        ({"ISSUER_REVOKED_TTL": "-1"}, "ISSUER_REVOKED_TTL"),
        ({"ISSUER_REVOKED_TTL": "nan"}, "ISSUER_REVOKED_TTL"),
        ({"ISSUER_REVOKED_TTL": "60", "ISSUER_REVOKED_MAX_STALE": "30"}, "MAX_STALE"),
        ({"ISSUER_REVOKED_TIMEOUT": "0"}, "ISSUER_REVOKED_TIMEOUT"),
        ({"ISSUER_FAIL_CLOSED": "maybe"}, "ISSUER_FAIL_CLOSED"),
    ],
)
def test_invalid_settings_deny_everything(
    server: ListServer, leaf: x509.Certificate, env: dict[str, str], message: str
) -> None:
    authz = Harness(env_for(server.url) | env)
    assert not allowed(authz(rest_event(leaf)))
    assert authz.last["reason"] == "settings_invalid" and authz.last["level"] == "error"
    assert message in authz.last["detail"]
    assert server.requests == 0


def test_plain_http_is_allowed_for_loopback_only(server: ListServer, leaf: x509.Certificate) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    localhost = server.url.replace("127.0.0.1", "localhost")
    assert allowed(Harness(env_for(localhost))(rest_event(leaf)))


# --- the list unavailable: fail closed, fail open ---------------------------------------------


def unreachable_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1/revoked"  # nothing listens there


@pytest.mark.parametrize("shape", SHAPES)
def test_unreachable_list_fails_closed_by_default(leaf: x509.Certificate, shape: str) -> None:
    authz = Harness(env_for(unreachable_url()))
    assert not allowed(authz(SHAPES[shape](leaf)))
    assert authz.last["reason"] == "revocation_list_unavailable" and authz.last["level"] == "error"
    failure = authz.events("revocation_source_failed")[0]
    assert failure["code"] == "revocation_source_failed" and "failed" in failure["error"]


@pytest.mark.parametrize("shape", SHAPES)
def test_unreachable_list_fails_open_when_configured_and_says_so(ca: Ca, shape: str) -> None:
    authz = Harness(env_for(unreachable_url(), ISSUER_FAIL_CLOSED="false"))
    assert allowed(authz(SHAPES[shape](make_leaf(ca))))
    assert authz.last["revocation"] == "unchecked" and authz.last["level"] == "error"
    assert authz.last["alert"].startswith("FAIL-OPEN")
    # Fail open skips only the revocation check: the certificate and the policy still count.
    assert not allowed(authz(SHAPES[shape](make_leaf(ca, role="nobody", uris=()))))
    assert authz.last["reason"] == "identity_not_allowed"


def test_timeout_counts_as_unreachable(server: ListServer, leaf: x509.Certificate) -> None:
    server.mode = "hang"
    authz = Harness(env_for(server.url, ISSUER_REVOKED_TIMEOUT="0.3"))
    assert not allowed(authz(rest_event(leaf)))
    assert authz.last["reason"] == "revocation_list_unavailable"
    assert "timed out" in authz.events("revocation_source_failed")[0]["error"]


@pytest.mark.parametrize("mode", ["garbage", "error", "redirect", "truncated"])
def test_a_bad_answer_is_not_a_list(server: ListServer, leaf: x509.Certificate, mode: str) -> None:
    server.mode = mode
    authz = Harness(env_for(server.url))
    assert not allowed(authz(rest_event(leaf)))
    assert authz.last["reason"] == "revocation_list_unavailable"
    error = authz.events("revocation_source_failed")[0]["error"]
    expected = {
        "garbage": "not JSON",
        "error": "answered 503",
        "redirect": "answered 302",
        "truncated": "body truncated at 10 of 1000 bytes",
    }
    assert expected[mode] in error
    assert server.redirected_to == 0  # redirects are never followed


# --- the cache: TTL, ETag, stale grace --------------------------------------------------------


def test_list_is_cached_for_the_ttl(server: ListServer, leaf: x509.Certificate) -> None:
    authz = Harness(env_for(server.url, ISSUER_REVOKED_TTL="60"))
    t0 = datetime.now(UTC)
    for seconds in (0, 1, 30, 59.9):
        assert allowed(authz(rest_event(leaf), now=t0 + timedelta(seconds=seconds)))
    assert server.requests == 1
    assert allowed(authz(rest_event(leaf), now=t0 + timedelta(seconds=60)))
    assert server.requests == 2


def test_etag_revalidation_keeps_the_list_on_304(server: ListServer, ca: Ca) -> None:
    good, bad, later = make_leaf(ca), make_leaf(ca), make_leaf(ca)
    server.body = revoked_doc(format(bad.serial_number, "x"))
    authz = Harness(env_for(server.url, ISSUER_REVOKED_TTL="60"))
    t0 = datetime.now(UTC)
    assert allowed(authz(rest_event(good), now=t0))
    assert server.if_none_match == [None]

    # After the TTL: a conditional GET, answered 304; the cached list (with bad) still applies.
    assert not allowed(authz(rest_event(bad), now=t0 + timedelta(seconds=61)))
    assert server.if_none_match == [None, '"v1"'] and server.not_modified == 1
    assert authz.last["revocation"] == "fresh" and authz.last["list_age"] == 0
    assert authz.events("revocation_list_not_modified")[0]["serials"] == 1

    # The issuer publishes a new list: the next revalidation gets it with its new ETag.
    server.publish(revoked_doc(format(bad.serial_number, "x"), format(later.serial_number, "x")))
    assert allowed(authz(rest_event(later), now=t0 + timedelta(seconds=100)))  # still within the TTL
    assert not allowed(authz(rest_event(later), now=t0 + timedelta(seconds=122)))
    assert server.if_none_match[-1] == '"v1"' and server.not_modified == 1
    assert not allowed(authz(rest_event(later), now=t0 + timedelta(seconds=183)))
    assert server.if_none_match[-1] == '"v2"' and server.not_modified == 2


def test_stale_list_is_served_within_the_grace_then_refused(server: ListServer, ca: Ca) -> None:
    good, bad = make_leaf(ca), make_leaf(ca)
    server.body = revoked_doc(format(bad.serial_number, "x"))
    authz = Harness(env_for(server.url, ISSUER_REVOKED_TTL="60", ISSUER_REVOKED_MAX_STALE="600"))
    t0 = datetime.now(UTC)
    assert allowed(authz(rest_event(good), now=t0))

    server.mode = "error"

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    assert allowed(authz(rest_event(good), now=at(61)))
    assert authz.last["revocation"] == "stale" and authz.last["list_age"] == 61
    assert not allowed(authz(rest_event(bad), now=at(62)))  # the stale list still revokes
    assert authz.last["reason"] == "revoked"
    assert server.requests == 2  # no retry within 5 s of a failure
    assert allowed(authz(rest_event(good), now=at(600)))  # the last second of the grace
    assert server.requests == 3

    assert not allowed(authz(rest_event(good), now=at(601)))
    assert authz.last["reason"] == "revocation_list_unavailable"
    assert authz.last["revocation"] == "unavailable"

    server.mode = "ok"  # the source recovers: a 304 confirms the list we kept
    assert allowed(authz(rest_event(good), now=at(700)))
    assert authz.last["revocation"] == "fresh" and server.not_modified == 1
    assert not allowed(authz(rest_event(bad), now=at(701)))


def test_stale_grace_with_fail_open(server: ListServer, leaf: x509.Certificate) -> None:
    authz = Harness(
        env_for(server.url, ISSUER_REVOKED_TTL="10", ISSUER_REVOKED_MAX_STALE="20", ISSUER_FAIL_CLOSED="false")
    )
    t0 = datetime.now(UTC)
    assert allowed(authz(rest_event(leaf), now=t0))
    server.mode = "error"
    assert allowed(authz(rest_event(leaf), now=t0 + timedelta(seconds=15)))
    assert authz.last["revocation"] == "stale" and "alert" not in authz.last
    assert allowed(authz(rest_event(leaf), now=t0 + timedelta(seconds=25)))
    assert authz.last["revocation"] == "unchecked" and "alert" in authz.last


def test_an_invalid_document_leaves_the_cached_list_in_place(server: ListServer, ca: Ca) -> None:
    bad = make_leaf(ca)
    server.body = revoked_doc(format(bad.serial_number, "x"))
    authz = Harness(env_for(server.url, ISSUER_REVOKED_TTL="60"))
    t0 = datetime.now(UTC)
    assert not allowed(authz(rest_event(bad), now=t0))
    server.publish(b'{"version": 1, "serials": []}')  # no generated_at, no entries
    assert not allowed(authz(rest_event(bad), now=t0 + timedelta(seconds=61)))
    assert authz.last["reason"] == "revoked" and authz.last["revocation"] == "stale"
    assert authz.events("revocation_source_failed")[0]["code"] == "revocation_document_invalid"


def test_a_new_source_starts_a_new_cache(server: ListServer, leaf: x509.Certificate) -> None:
    authz = Harness(env_for(server.url))
    assert allowed(authz(rest_event(leaf)))
    authz.env = env_for(unreachable_url())
    assert not allowed(authz(rest_event(leaf)))
    assert authz.last["reason"] == "revocation_list_unavailable"


# --- https: the issuer's TLS certificate is verified ------------------------------------------


def _tls_server_context(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    ca = make_ca("Test TLS Root")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (tmp_path / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    return context, tmp_path / "ca.pem"


def test_https_source_is_verified_against_the_configured_ca(tmp_path: Path, ca: Ca) -> None:
    context, ca_file = _tls_server_context(tmp_path)
    bad = make_leaf(ca)
    srv = ListServer(body=revoked_doc(format(bad.serial_number, "x")))
    with serve_in_thread(srv.app(), ssl_context=context) as url:
        assert url.startswith("https://127.0.0.1:")
        trusted = Harness(env_for(f"{url}/v1/revoked", ISSUER_REVOKED_CA_FILE=str(ca_file)))
        assert allowed(trusted(rest_event(make_leaf(ca))))
        assert not allowed(trusted(rest_event(bad)))
        assert trusted.last["reason"] == "revoked"

        untrusted = Harness(env_for(f"{url}/v1/revoked"))  # system roots do not know the test CA
        assert not allowed(untrusted(rest_event(make_leaf(ca))))
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.events("revocation_source_failed")[0]["error"]

        missing = Harness(env_for(f"{url}/v1/revoked", ISSUER_REVOKED_CA_FILE=str(tmp_path / "nope.pem")))
        assert not allowed(missing(rest_event(make_leaf(ca))))
        assert missing.last["reason"] == "revocation_list_unavailable"
    assert srv.requests == 1  # the refused handshakes never got as far as an HTTP request


def test_a_crash_inside_becomes_a_deny_not_an_exception(server: ListServer, leaf: x509.Certificate) -> None:
    # The log is the one injected seam; make it fail where the cache logs a fetch.
    lines: list[dict[str, Any]] = []

    def log(line: str) -> None:
        record = json.loads(line)
        if record["event"] == "revocation_list_fetched":
            raise RuntimeError("log sink broke")
        lines.append(record)

    for make in SHAPES.values():
        response = authorize(
            make(leaf), env=env_for(server.url), cache=RevocationCache(), now=datetime.now(UTC), log=log
        )
        assert not allowed(response)
        assert lines[-1]["reason"] == "internal_error" and "log sink broke" in lines[-1]["detail"]
        assert "Traceback" in lines[-2]["traceback"] and lines[-2]["event"] == "authorizer_bug"


# --- the revocation document ------------------------------------------------------------------


def test_document_shape_accepted() -> None:
    listed = parse_revocation_document(revoked_doc("5d60ce9d0a1b", "1", entries_only=("ff",)))
    assert listed.serials == {"5d60ce9d0a1b", "1", "ff"}
    assert listed.generated_at == "2026-11-29T12:00:00+00:00"
    empty = parse_revocation_document(b'{"version":1,"generated_at":"2026-11-29T12:00:00Z","serials":[],"entries":[]}')
    assert empty.serials == frozenset()


def _doc_with(**changes: Any) -> bytes:
    doc = json.loads(revoked_doc("ab"))
    for key, value in changes.items():
        if key.startswith("entry_"):
            entry = doc["entries"][0]
            if value is KeyError:
                del entry[key[6:]]
            else:
                entry[key[6:]] = value
        elif value is KeyError:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        _doc_with(version=2),
        _doc_with(version=True),
        _doc_with(version="1"),
        _doc_with(version=KeyError),
        _doc_with(generated_at=KeyError),
        _doc_with(generated_at="2026-11-29T12:00:00"),  # no offset
        _doc_with(generated_at="yesterday"),
        _doc_with(serials="ab"),
        _doc_with(serials=["AB"]),
        _doc_with(serials=["0ab"]),
        _doc_with(serials=["ab:cd"]),
        _doc_with(serials=[171]),
        _doc_with(serials=[""]),
        _doc_with(entries=KeyError),
        _doc_with(entries={}),
        _doc_with(entries=["ab"]),
        _doc_with(entry_serial="0xab"),
        _doc_with(entry_issuer_fingerprint="ab"),
        _doc_with(entry_revoked_at=KeyError),
        _doc_with(entry_reason=None),
        _doc_with(entry_not_after="soon"),
    ],
)
def test_document_of_another_shape_is_refused(body: bytes) -> None:
    with pytest.raises(SourceError) as info:
        parse_revocation_document(body)
    assert info.value.code == "revocation_document_invalid"


# --- packaging --------------------------------------------------------------------------------


def test_no_environment_is_read_at_import() -> None:
    # Module-level statements may define things, but nothing outside a function touches os.environ.
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) > 10, "the check found the package"
    for module in modules:
        tree = ast.parse(module.read_text())
        for statement in tree.body:
            if isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
                continue
            for node in ast.walk(statement):
                assert not (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")), module.name


def test_lambda_handler_reads_os_environ(
    server: ListServer, leaf: x509.Certificate, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env_for(server.url).items():
        monkeypatch.setenv(name, value)
    assert allowed(lambda_handler(http_event(leaf), None))
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "authorizer_decision" and line["decision"] == "allow"
    monkeypatch.setenv("ISSUER_AUTHZ_POLICY", "{")
    assert not allowed(lambda_handler(http_event(leaf), None))
