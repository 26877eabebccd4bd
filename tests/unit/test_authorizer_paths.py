"""The route policy against the request path: a greedy ``{proxy+}`` or ``$default`` route cannot
hide a request from a rule written for its path (issue 20 §1).

Before the path was matched, ``* /admin/**`` did not cover ``GET /admin/users`` routed through
``/{proxy+}``: with ``"default": "allow"`` any certificate got in.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from clients.authorizer import ClientCertificate, Policy, Route, parse_policy, request_path_variants
from tests.unit.test_authorizer import Harness, ListServer, allowed, env_for, http_event, rest_event, server
from tests.unit.test_authorizer_cert import Ca, make_ca, make_leaf

__all__ = ["server"]  # the fixture, used by name

ADMIN_ONLY = {"rules": [{"name": "admin", "routes": ["* /admin/**"], "roles": ["admin"]}], "default": "allow"}
PROXY_FOR_WEB = {
    "rules": [
        {"name": "proxy", "routes": ["ANY /{proxy+}", "ANY $default"], "roles": ["web-fleet", "admin"]},
        {"name": "admin", "routes": ["* /admin/**"], "roles": ["admin"]},
    ],
    "default": "deny",
}


def cert(*roles: str) -> ClientCertificate:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return ClientCertificate("abc", "m-1", roles, (), t, t)


def decide(policy: dict[str, Any], template: str, path: str, certificate: ClientCertificate, stage: str = "") -> str:
    method, _, route_path = template.partition(" ")
    parsed: Policy = parse_policy(json.dumps(policy))
    decision = parsed.decide(
        Route(method, route_path), certificate, request_paths=request_path_variants(path, stage=stage)
    )
    return decision.reason


@pytest.mark.parametrize("template", ["GET /{proxy+}", "GET $default", "GET /{section}/{page}"])
def test_a_rule_for_the_path_holds_whatever_route_the_request_took(template: str) -> None:
    assert decide(ADMIN_ONLY, template, "/admin/users", cert("web-fleet")) == "identity_not_allowed"
    assert decide(ADMIN_ONLY, template, "/admin/users", cert("admin")) in ("allowed", "allowed_by_default")
    assert decide(ADMIN_ONLY, template, "/orders/1", cert("web-fleet")) == "allowed_by_default"


@pytest.mark.parametrize(
    "path",
    [
        "/admin/users",
        "/ADMIN/users",  # a case-insensitive backend
        "/Admin/Users/",
        "//admin//users",
        "/public/../admin/users",
        "/./admin/users",
        "/%61dmin/users",  # percent-encoded letter
        "/public%2F..%2Fadmin/users",  # encoded slashes and dots
    ],
)
def test_the_path_is_matched_in_every_form_a_backend_may_read_it(path: str) -> None:
    assert decide(ADMIN_ONLY, "GET /{proxy+}", path, cert("web-fleet")) == "identity_not_allowed"


def test_an_http_api_stage_prefix_is_also_stripped() -> None:
    assert decide(ADMIN_ONLY, "GET /{proxy+}", "/prod/admin/users", cert("web-fleet"), stage="prod") == (
        "identity_not_allowed"
    )
    assert request_path_variants("/prod/admin/x", stage="prod") == ("/prod/admin/x", "/admin/x")
    assert request_path_variants("/x", stage="$default") == ("/x",)


def test_a_route_rule_does_not_undo_a_rule_for_the_path() -> None:
    # "ANY /{proxy+}" admits web-fleet to the route; "* /admin/**" still holds for /admin paths.
    assert decide(PROXY_FOR_WEB, "GET /{proxy+}", "/orders/42", cert("web-fleet")) == "allowed"
    assert decide(PROXY_FOR_WEB, "GET /{proxy+}", "/orders/42", cert("batch")) == "identity_not_allowed"
    assert decide(PROXY_FOR_WEB, "GET /{proxy+}", "/admin/x", cert("web-fleet")) == "identity_not_allowed"
    assert decide(PROXY_FOR_WEB, "GET /{proxy+}", "/admin/x", cert("admin")) == "allowed"
    assert decide(PROXY_FOR_WEB, "GET $default", "/admin", cert("web-fleet")) == "allowed"  # ** is 1+ segments
    # A route the admin rule covers itself is decided by the template alone, as before.
    assert decide(PROXY_FOR_WEB, "GET /admin/{page}", "/admin/x", cert("web-fleet")) == "identity_not_allowed"
    # With default deny, a template no rule covers is refused whatever the path.
    assert decide(PROXY_FOR_WEB, "GET /orders/{id}", "/orders/42", cert("web-fleet")) == "route_not_allowed"


def test_template_patterns_match_concrete_paths() -> None:
    policy = {"rules": [{"routes": ["GET /orders/{id}", "POST /files/{key+}"], "roles": ["ops"]}], "default": "allow"}
    assert decide(policy, "GET /{proxy+}", "/orders/42", cert("web")) == "identity_not_allowed"
    assert decide(policy, "GET /{proxy+}", "/orders/42/items", cert("web")) == "allowed_by_default"
    assert decide(policy, "POST /{proxy+}", "/files/a/b/c", cert("web")) == "identity_not_allowed"
    assert decide(policy, "POST /{proxy+}", "/files", cert("web")) == "allowed_by_default"
    assert decide(policy, "DELETE /{proxy+}", "/orders/42", cert("web")) == "allowed_by_default"


# --- through the handler, with API Gateway's events ------------------------------------------


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


def test_rest_proxy_route_cannot_bypass_an_admin_rule(server: ListServer, ca: Ca) -> None:
    authz = Harness(env_for(server.url, ISSUER_AUTHZ_POLICY=json.dumps(ADMIN_ONLY)))
    event = rest_event(make_leaf(ca), resource="/{proxy+}")
    event["path"] = "/admin/users"
    assert not allowed(authz(event))
    assert authz.last["reason"] == "identity_not_allowed" and authz.last["path"] == "/admin/users"
    assert "covered by admin" in authz.last["detail"]
    event["path"] = "/orders/1"
    assert allowed(authz(event))
    admin = rest_event(make_leaf(ca, role="admin"), resource="/{proxy+}")
    admin["path"] = "/admin/users"
    assert allowed(authz(admin))


@pytest.mark.parametrize("route_key", ["ANY /{proxy+}", "$default"])
def test_http_api_greedy_routes_cannot_bypass_an_admin_rule(server: ListServer, ca: Ca, route_key: str) -> None:
    authz = Harness(env_for(server.url, ISSUER_AUTHZ_POLICY=json.dumps(ADMIN_ONLY)))
    event = http_event(make_leaf(ca), route_key=route_key)
    event["rawPath"] = "/admin/users"
    response = authz(event)
    assert response["isAuthorized"] is False
    assert response["context"]["reason"] == "identity_not_allowed"


@pytest.mark.parametrize(("shape", "field"), [("rest", "path"), ("http", "rawPath")])
def test_an_event_without_its_request_path_is_denied(server: ListServer, ca: Ca, shape: str, field: str) -> None:
    event = (rest_event if shape == "rest" else http_event)(make_leaf(ca))
    del event[field]
    authz = Harness(env_for(server.url))
    assert not allowed(authz(event))
    assert authz.last["reason"] == "event_malformed" and "request path" in authz.last["detail"]
