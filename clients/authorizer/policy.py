"""The route policy: which roles (the subject's OU) or URI SANs may call which routes.

``{"rules": [{"name": ..., "routes": [...], "roles": [...], "uri_prefixes": [...]}], "default": "deny"}``.
A request is allowed when some rule has a route matching it and the certificate has one of the
rule's ``roles`` (an exact subject OU value) or a URI SAN starting with one of its ``uri_prefixes``
(each must end in "/"). When rules match the route but none admits the certificate, the request is
denied; ``default`` ("deny" or "allow") decides only routes no rule mentions.

Routes are ``"METHOD /path"``, ``"METHOD $default"`` or ``"*"`` (everything); METHOD may be ``*`` or
``ANY``. In a pattern path ``*`` is exactly one whole segment and a final ``**`` one or more
segments; anything else is literal.

Two things are matched, and both must allow:

1. the *route template* API Gateway matched (the REST ``resource`` such as ``/orders/{id}``, the
   HTTP API ``routeKey``), case-sensitively, with ``*`` refusing a greedy ``{proxy+}`` segment;
2. the *request path* (REST ``path``, HTTP API ``rawPath``) — so a rule for ``* /admin/**`` also
   holds for ``GET /admin/users`` that API Gateway routed through ``/{proxy+}`` or ``$default``:
   the rules that cover the path but not the template (the template hid the request from them)
   must also admit the certificate, one of them at least, or the request is denied. The path
   is tried as sent, percent-decoded, and with empty and dot segments removed (also without an
   HTTP API stage prefix), case-insensitively, so a backend's normalisation cannot route around
   a rule; in a rule, ``{name}`` matches one path segment and ``{name+}`` one or more. A path no
   rule covers changes nothing: the template decides.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .certificate import ClientCertificate
from .errors import PolicyError

__all__ = ["Policy", "PolicyDecision", "Route", "RoutePattern", "Rule", "parse_policy", "request_path_variants"]

_GREEDY_SEGMENT: Final = re.compile(r"\{[^{}/]+\+\}")  # API Gateway's {proxy+}
_PARAM_SEGMENT: Final = re.compile(r"\{[^{}/+]+\}")  # {id}


@dataclass(frozen=True)
class Route:
    """What a request is matched on: its HTTP method and the route template it was routed by
    (``/orders/{id}``; ``$default`` for an HTTP API's default route)."""

    method: str
    path: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class RoutePattern:
    method: str  # "*" for any method
    path: str  # "*" for any route

    def matches(self, route: Route) -> bool:
        """Whether this pattern matches the route *template* ``route``."""
        if self.method not in ("*", route.method):
            return False
        if self.path == "*" or self.path == route.path:
            return True
        if self.path == "$default" or route.path == "$default":
            return False
        want, have = self.path.split("/")[1:], route.path.split("/")[1:]
        for index, segment in enumerate(want):
            if segment == "**":
                return len(have) > index  # one or more segments, greedy templates included
            if index >= len(have):
                return False
            if segment == "*":
                if not have[index] or _GREEDY_SEGMENT.fullmatch(have[index]):
                    return False  # * is one segment; a {proxy+} route stands for many
            elif segment != have[index]:
                return False
        return len(want) == len(have)

    def matches_path(self, method: str, path: str) -> bool:
        """Whether this pattern covers the concrete request ``path`` (case-insensitively)."""
        if self.method not in ("*", method):
            return False
        if self.path == "*":
            return True
        if self.path == "$default":
            return False
        want, have = self.path.lower().split("/")[1:], path.lower().split("/")[1:]
        for index, segment in enumerate(want):
            if segment == "**" or (index == len(want) - 1 and _GREEDY_SEGMENT.fullmatch(segment)):
                return len(have) > index
            if index >= len(have):
                return False
            if segment == "*" or _PARAM_SEGMENT.fullmatch(segment):
                if not have[index]:
                    return False
            elif segment != have[index]:
                return False
        return len(want) == len(have)


@dataclass(frozen=True)
class Rule:
    name: str
    routes: tuple[RoutePattern, ...]
    roles: frozenset[str]
    uri_prefixes: tuple[str, ...]

    def admits(self, cert: ClientCertificate) -> bool:
        return bool(self.roles.intersection(cert.roles)) or any(
            uri.startswith(prefix) for uri in cert.uri_sans for prefix in self.uri_prefixes
        )


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    reason: str  # allowed, allowed_by_default, identity_not_allowed, route_not_allowed
    rule: str = ""  # the rule that admitted the certificate
    detail: str = ""


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    default_allow: bool

    def decide(self, route: Route, cert: ClientCertificate, *, request_paths: Sequence[str] = ()) -> PolicyDecision:
        """The decision for ``route`` (the template) and each form of the request path (see the module)."""
        covering = [rule for rule in self.rules if any(p.matches(route) for p in rule.routes)]
        admitting = next((rule for rule in covering if rule.admits(cert)), None)
        if admitting is None:
            if covering:
                return PolicyDecision(False, "identity_not_allowed")
            if not self.default_allow:
                return PolicyDecision(False, "route_not_allowed")
        # The rules the route template hid: they cover the path but did not see the template.
        hidden = [rule for rule in self.rules if rule not in covering]
        for path in request_paths:
            by_path = [rule for rule in hidden if any(p.matches_path(route.method, path) for p in rule.routes)]
            if by_path and not any(rule.admits(cert) for rule in by_path):
                names = ", ".join(rule.name for rule in by_path)
                return PolicyDecision(False, "identity_not_allowed", detail=f"path {path!r} is covered by {names}")
        if admitting is None:
            return PolicyDecision(True, "allowed_by_default")
        return PolicyDecision(True, "allowed", admitting.name)


def request_path_variants(path: str, *, stage: str = "") -> tuple[str, ...]:
    """``path`` as sent, percent-decoded, and with empty and dot segments removed; each also without
    a leading ``/<stage>`` (an HTTP API's rawPath carries a named stage). No duplicates, in that order."""
    decoded = urllib.parse.unquote(path, errors="replace")
    forms = [path, decoded, _normalized(path), _normalized(decoded)]
    if stage and stage != "$default":
        prefix = f"/{stage}"
        forms += [f[len(prefix) :] or "/" for f in list(forms) if f == prefix or f.startswith(prefix + "/")]
    return tuple(dict.fromkeys(f for f in forms if f.startswith("/")))


def _normalized(path: str) -> str:
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = "/" if path.endswith("/") and out else ""
    return "/" + "/".join(out) + trailing


def parse_policy(text: str) -> Policy:
    """Parse ``ISSUER_AUTHZ_POLICY``; raises :class:`PolicyError` saying what is wrong."""
    if not text.strip():
        raise PolicyError('ISSUER_AUTHZ_POLICY is not set (for revocation only: {"rules": [], "default": "allow"})')
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PolicyError(f"ISSUER_AUTHZ_POLICY is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) - {"rules", "default"} or not isinstance(doc.get("rules"), list):
        raise PolicyError('ISSUER_AUTHZ_POLICY must be {"rules": [...], "default": "deny"|"allow"}')
    default = doc.get("default", "deny")
    if default not in ("deny", "allow"):
        raise PolicyError(f'policy "default" must be "deny" or "allow", not {default!r}')
    rules = tuple(_rule(index, raw) for index, raw in enumerate(doc["rules"]))
    return Policy(rules=rules, default_allow=default == "allow")


def _rule(index: int, raw: object) -> Rule:
    where = f"policy rule {index}"
    if not isinstance(raw, dict) or set(raw) - {"name", "routes", "roles", "uri_prefixes"}:
        raise PolicyError(f"{where} must be an object with routes, roles, uri_prefixes and an optional name")
    name = raw.get("name", f"rule-{index}")
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{where}: name must be a non-empty string")
    routes = _strings(raw.get("routes"), f"{where} routes")
    roles = _strings(raw.get("roles", []), f"{where} roles")
    prefixes = _strings(raw.get("uri_prefixes", []), f"{where} uri_prefixes")
    if not routes or not (roles or prefixes):
        raise PolicyError(f"{where} needs at least one route and at least one role or uri_prefix")
    for prefix in prefixes:
        # Without the trailing slash, ".../aws/1234" would also admit ".../aws/12345/...".
        if "://" not in prefix or not prefix.endswith("/"):
            raise PolicyError(f"{where}: uri_prefix {prefix!r} must be a URI ending in '/'")
    return Rule(name, tuple(_route_pattern(r, where) for r in routes), frozenset(roles), tuple(prefixes))


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise PolicyError(f"{where} must be a list of non-empty strings")
    return list(value)


def _route_pattern(text: str, where: str) -> RoutePattern:
    if text == "*":
        return RoutePattern("*", "*")
    method, _, path = text.partition(" ")
    method = "*" if method.upper() == "ANY" else method.upper()
    if not re.fullmatch(r"\*|[A-Z]+", method) or not (path == "$default" or path.startswith("/")) or " " in path:
        raise PolicyError(f"{where}: route {text!r} is not '*', 'METHOD /path' or 'METHOD $default'")
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        if "*" in segment and segment not in ("*", "**"):
            raise PolicyError(f"{where}: route {text!r}: '*' must be a whole path segment")
        if segment == "**" and index != len(segments) - 1:
            raise PolicyError(f"{where}: route {text!r}: '**' may only be the last segment")
    return RoutePattern(method, path)
