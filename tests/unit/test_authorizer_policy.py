"""The authorizer's route policy: pattern syntax, matching, rule decisions, refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from clients.authorizer import ClientCertificate, Policy, PolicyError, Route, parse_policy

ACCOUNT_PREFIX = "spiffe://example.org/aws/123456789012/"


def cert(roles: tuple[str, ...] = (), uris: tuple[str, ...] = ()) -> ClientCertificate:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return ClientCertificate("abc", "web-1", roles, uris, t, t)


def route(text: str) -> Route:
    method, _, path = text.partition(" ")
    return Route(method, path)


def decided(policy: Policy, request: Route, certificate: ClientCertificate, *paths: str) -> tuple[bool, str, str]:
    decision = policy.decide(request, certificate, request_paths=paths)
    return decision.allowed, decision.reason, decision.rule


def matches(pattern: str, request: str) -> bool:
    policy = parse_policy(json.dumps({"rules": [{"routes": [pattern], "roles": ["r"]}]}))
    return policy.rules[0].routes[0].matches(route(request))


@pytest.mark.parametrize(
    ("pattern", "request_route", "expected"),
    [
        ("GET /orders", "GET /orders", True),
        ("GET /orders", "POST /orders", False),
        ("GET /orders", "GET /orders/", False),
        ("get /orders", "GET /orders", True),  # methods are upper-cased
        ("GET /Orders", "GET /orders", False),  # paths are case-sensitive
        ("* /orders", "DELETE /orders", True),
        ("ANY /orders", "PUT /orders", True),
        ("GET /orders/*", "GET /orders/{id}", True),
        ("GET /orders/*", "GET /orders", False),
        ("GET /orders/*", "GET /orders/{id}/items", False),  # * is exactly one segment
        ("GET /orders/*/items", "GET /orders/{id}/items", True),
        ("GET /orders/**", "GET /orders/{id}/items", True),  # ** is one or more segments
        ("GET /orders/**", "GET /orders/{id}", True),
        ("GET /orders/**", "GET /orders", False),
        ("GET /orders/{id}", "GET /orders/{id}", True),  # a template written literally
        ("GET /*", "GET /{proxy+}", False),  # a greedy route stands for any depth: * is not enough
        ("GET /**", "GET /{proxy+}", True),
        ("GET /{proxy+}", "GET /{proxy+}", True),
        ("GET /orders/*", "GET /orders/{proxy+}", False),
        ("GET /", "GET /", True),
        ("GET /*", "GET /", False),
        ("*", "GET $default", True),
        ("*", "PATCH /a/b/c", True),
        ("GET $default", "GET $default", True),
        ("* $default", "POST $default", True),
        ("GET /**", "GET $default", False),
        ("GET $default", "GET /orders", False),
    ],
)
def test_route_matching(pattern: str, request_route: str, expected: bool) -> None:
    assert matches(pattern, request_route) is expected


POLICY = {
    "rules": [
        {"name": "read", "routes": ["GET /orders", "GET /orders/*"], "roles": ["web-fleet", "batch"]},
        {"name": "write", "routes": ["POST /orders/**"], "uri_prefixes": [ACCOUNT_PREFIX]},
        {"name": "write-ops", "routes": ["POST /orders/**"], "roles": ["ops"]},
    ],
    "default": "deny",
}


def test_role_admits_on_covered_routes() -> None:
    policy = parse_policy(json.dumps(POLICY))
    assert decided(policy, route("GET /orders/{id}"), cert(roles=("batch",))) == (True, "allowed", "read")
    assert decided(policy, route("GET /orders"), cert(roles=("web-fleet",))) == (True, "allowed", "read")


def test_uri_prefix_admits() -> None:
    policy = parse_policy(json.dumps(POLICY))
    uri = ACCOUNT_PREFIX + "us-east-1/ec2/i-1"
    assert decided(policy, route("POST /orders/{id}/items"), cert(uris=("spiffe://other/x", uri))) == (
        True,
        "allowed",
        "write",
    )


def test_a_later_rule_for_the_same_route_can_admit() -> None:
    policy = parse_policy(json.dumps(POLICY))
    assert decided(policy, route("POST /orders/{id}"), cert(roles=("ops",))) == (True, "allowed", "write-ops")


def test_identity_not_admitted_on_a_covered_route() -> None:
    policy = parse_policy(json.dumps(POLICY))
    assert decided(policy, route("POST /orders/{id}"), cert(roles=("web-fleet",))) == (
        False,
        "identity_not_allowed",
        "",
    )
    # The role must be an exact OU value, and the prefix a true prefix ending at a '/'.
    assert decided(policy, route("GET /orders"), cert(roles=("web-fleet-2",))) == (False, "identity_not_allowed", "")
    near_miss = "spiffe://example.org/aws/1234567890123/us-east-1/ec2/i-1"
    assert decided(policy, route("POST /orders/{id}"), cert(uris=(near_miss,)))[0] is False


def test_uncovered_route_falls_to_the_default() -> None:
    deny = parse_policy(json.dumps(POLICY))
    assert decided(deny, route("DELETE /orders/{id}"), cert(roles=("web-fleet",))) == (False, "route_not_allowed", "")
    allow = parse_policy(json.dumps({**POLICY, "default": "allow"}))
    assert decided(allow, route("DELETE /orders/{id}"), cert()) == (True, "allowed_by_default", "")
    # The default never overrides a rule that covers the route.
    assert decided(allow, route("POST /orders/{id}"), cert(roles=("web-fleet",))) == (False, "identity_not_allowed", "")


def test_revocation_only_policy() -> None:
    policy = parse_policy('{"rules": [], "default": "allow"}')
    assert decided(policy, route("GET $default"), cert()) == (True, "allowed_by_default", "")


def test_default_is_deny_when_omitted() -> None:
    policy = parse_policy('{"rules": []}')
    assert decided(policy, route("GET /x"), cert(roles=("web-fleet",))) == (False, "route_not_allowed", "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not set"),
        ("   ", "not set"),
        ("{rules: []}", "not JSON"),
        ("[]", "must be"),
        ('{"rules": {}}', "must be"),
        ('{"default": "deny"}', "must be"),
        ('{"rules": [], "defaults": "deny"}', "must be"),
        ('{"rules": [], "default": "maybe"}', '"default"'),
        ('{"rules": [1]}', "rule 0"),
        ('{"rules": [{"routes": ["GET /a"], "role": ["x"]}]}', "rule 0"),
        ('{"rules": [{"routes": ["GET /a"]}]}', "at least one role"),
        ('{"rules": [{"routes": [], "roles": ["x"]}]}', "at least one route"),
        ('{"rules": [{"routes": "GET /a", "roles": ["x"]}]}', "routes must be a list"),
        ('{"rules": [{"routes": ["GET /a"], "roles": [""]}]}', "roles must be a list of non-empty"),
        ('{"rules": [{"routes": ["GET /a"], "roles": "x"}]}', "roles must be a list"),
        ('{"rules": [{"routes": ["GET /a"], "uri_prefixes": ["spiffe://example.org/aws"]}]}', "ending in '/'"),
        ('{"rules": [{"routes": ["GET /a"], "uri_prefixes": ["example.org/"]}]}', "ending in '/'"),
        ('{"rules": [{"name": "", "routes": ["GET /a"], "roles": ["x"]}]}', "name"),
        ('{"rules": [{"routes": ["GET"], "roles": ["x"]}]}', "is not"),
        ('{"rules": [{"routes": ["GET orders"], "roles": ["x"]}]}', "is not"),
        ('{"rules": [{"routes": ["GET  /orders"], "roles": ["x"]}]}', "is not"),
        ('{"rules": [{"routes": ["G3T /orders"], "roles": ["x"]}]}', "is not"),
        ('{"rules": [{"routes": ["GET /ord*"], "roles": ["x"]}]}', "whole path segment"),
        ('{"rules": [{"routes": ["GET /**/items"], "roles": ["x"]}]}', "last segment"),
        ('{"rules": [{"routes": ["/orders"], "roles": ["x"]}]}', "is not"),
    ],
)
def test_invalid_policies_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as info:
        parse_policy(text)
    assert info.value.code == "policy_invalid"


def test_the_readme_example_parses() -> None:
    example = {
        "rules": [
            {"routes": ["GET /orders", "POST /orders/*"], "roles": ["web-fleet"], "uri_prefixes": [ACCOUNT_PREFIX]}
        ],
        "default": "deny",
    }
    policy = parse_policy(json.dumps(example))
    assert decided(policy, route("POST /orders/{id}"), cert(uris=(ACCOUNT_PREFIX + "x",)))[0] is True
