"""API Gateway Lambda authorizer for the issuer's mutual-TLS client certificates.

API Gateway checks a client certificate against its truststore but consults no CRL. For each
request this authorizer:

1. parses the certificate API Gateway passes (``clientCertPem``) with a small DER reader of its
   own and refuses one that does not parse, is outside its validity period, or whose serial
   disagrees with the ``serialNumber`` API Gateway printed;
2. refuses a serial on the issuer's revocation list (``GET /v1/revoked``, or the same JSON in
   S3), kept in memory between invocations and revalidated with ``If-None-Match``;
3. applies the route policy: which roles (the subject's ``OU``) or URI SANs may call which
   routes.

Deployment is this one file (standard library only, Python 3.11+); the handler is
``lambda_function.lambda_handler``. Settings are read from the environment on every invocation
(:func:`load_settings`); the README section "The Lambda authorizer" documents them and the policy.

Responses never raise: REST APIs (and HTTP APIs with payload 1.0) get an IAM policy that Allows
or Denies ``execute-api:Invoke`` on the ``methodArn`` (a Deny is a 403 to the client); HTTP APIs
with payload 2.0 get the simple response ``{"isAuthorized": ..., "context": ...}`` (simple
responses must be enabled on the authorizer). Every decision is one JSON log line on stdout.

Settings (environment):

    ISSUER_REVOKED_URL        https://issuer/v1/revoked, or s3://bucket/key (SigV4 with the Lambda's
                              AWS_* credentials; AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL switch to
                              path-style addressing at that endpoint). http:// only for loopback.
    ISSUER_REVOKED_TTL        seconds the list is used before revalidating (If-None-Match); 60
    ISSUER_REVOKED_MAX_STALE  seconds a list may be served while the source fails; 10 x TTL
    ISSUER_REVOKED_TIMEOUT    seconds for one fetch; 3
    ISSUER_REVOKED_CA_FILE    PEM roots for an https source with a private TLS CA; system roots
    ISSUER_FAIL_CLOSED        true: no usable list denies everything; false: allow, log level error
    ISSUER_AUTHZ_POLICY       the route policy (JSON, below); missing or invalid denies everything

Policy: ``{"rules": [{"name": ..., "routes": [...], "roles": [...], "uri_prefixes": [...]}],
"default": "deny"}``. A request is allowed when some rule has a route matching it and the
certificate has one of the rule's ``roles`` (an exact subject OU value) or a URI SAN starting with
one of its ``uri_prefixes`` (each must end in "/"). When rules match the route but none admits
the certificate, the request is denied; ``default`` ("deny" or "allow") decides only routes no
rule mentions. Routes are ``"METHOD /path"``, ``"METHOD $default"`` or ``"*"`` (everything);
METHOD may be ``*`` or ``ANY``. They are matched against the request's method and the *route
template* API Gateway matched: the REST ``resource`` (``/orders/{id}``) or the HTTP API
``routeKey`` path. In a pattern path ``*`` is exactly one whole segment (not a greedy
``{proxy+}``) and a final ``**`` one or more segments; anything else is literal and case-sensitive.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import ipaddress
import json
import math
import os
import re
import ssl
import threading
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Final

__all__ = [
    "ApiRequest",
    "AuthorizerError",
    "AwsEnvironment",
    "CertificateError",
    "ClientCertificate",
    "EventError",
    "Policy",
    "PolicyError",
    "RevocationCache",
    "RevocationList",
    "Route",
    "Settings",
    "SettingsError",
    "SourceError",
    "authorize",
    "lambda_handler",
    "load_settings",
    "parse_certificate_der",
    "parse_certificate_pem",
    "parse_event",
    "parse_policy",
    "parse_revocation_document",
    "serial_matches",
    "sigv4_headers",
]

Log = Callable[[str], None]

DEFAULT_TTL: Final = 60.0
DEFAULT_TIMEOUT: Final = 3.0
MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
# After a failed fetch, wait this long (at most the TTL) before trying again, so an outage does
# not add a timeout to every request while a stale list is being served.
RETRY_AFTER_FAILURE: Final = 5.0
EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()


# ---------------------------------------------------------------------------------------------
# Errors. Nothing escapes lambda_handler; each becomes a Deny whose log line names the ``code``.
#
#   AuthorizerError
#   ├── SettingsError     settings_invalid      environment variables missing or malformed
#   ├── PolicyError       policy_invalid        ISSUER_AUTHZ_POLICY missing or malformed
#   ├── EventError        event_malformed, client_cert_missing
#   ├── CertificateError  cert_malformed
#   └── SourceError       revocation_source_failed, revocation_document_invalid (upstream)
# ---------------------------------------------------------------------------------------------


class AuthorizerError(Exception):
    """Root of the authorizer's deliberate errors; ``code`` is stable, ``str(err)`` is for the log."""

    default_code = "authorizer_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code


class SettingsError(AuthorizerError):
    default_code = "settings_invalid"


class PolicyError(AuthorizerError):
    default_code = "policy_invalid"


class EventError(AuthorizerError):
    default_code = "event_malformed"


class CertificateError(AuthorizerError):
    default_code = "cert_malformed"


class SourceError(AuthorizerError):
    default_code = "revocation_source_failed"


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where the revocation list comes from: ``url`` as configured, plus the S3 location."""

    url: str
    scheme: str  # "https", "http" (loopback only) or "s3"
    bucket: str = ""
    key: str = ""


@dataclass(frozen=True)
class AwsEnvironment:
    """The Lambda's credentials and endpoint settings, used only for an ``s3://`` source."""

    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    endpoint_url: str = ""  # path-style addressing when set (moto, VPC endpoints)


@dataclass(frozen=True)
class Settings:
    source: Source
    ttl: float
    max_stale: float
    fail_closed: bool
    timeout: float
    ca_file: str
    policy_json: str
    aws: AwsEnvironment


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read the authorizer's settings from ``env`` (``os.environ`` in Lambda).

    Raises :class:`SettingsError` naming the variable when one is missing or malformed.
    """
    url = env.get("ISSUER_REVOKED_URL", "").strip()
    if not url:
        raise SettingsError("ISSUER_REVOKED_URL is not set (https://issuer/v1/revoked or s3://bucket/key)")
    source = _parse_source(url)
    ttl = _seconds(env, "ISSUER_REVOKED_TTL", DEFAULT_TTL)
    max_stale = _seconds(env, "ISSUER_REVOKED_MAX_STALE", 10 * ttl)
    if max_stale < ttl:
        raise SettingsError(f"ISSUER_REVOKED_MAX_STALE ({max_stale:g}) must not be less than ISSUER_REVOKED_TTL")
    timeout = _seconds(env, "ISSUER_REVOKED_TIMEOUT", DEFAULT_TIMEOUT)
    if not 0 < timeout <= 30:
        raise SettingsError("ISSUER_REVOKED_TIMEOUT must be more than 0 and at most 30 seconds")
    aws = AwsEnvironment()
    if source.scheme == "s3":
        aws = _aws_environment(env)
    return Settings(
        source=source,
        ttl=ttl,
        max_stale=max_stale,
        fail_closed=_boolean(env, "ISSUER_FAIL_CLOSED", default=True),
        timeout=timeout,
        ca_file=env.get("ISSUER_REVOKED_CA_FILE", "").strip(),
        policy_json=env.get("ISSUER_AUTHZ_POLICY", ""),
        aws=aws,
    )


def _parse_source(url: str) -> Source:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise SettingsError(f"ISSUER_REVOKED_URL {url!r} is not a URL") from None
    if parts.scheme == "s3":
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or not key or parts.query or parts.fragment:
            raise SettingsError(f"ISSUER_REVOKED_URL {url!r} is not s3://bucket/key")
        return Source(url=url, scheme="s3", bucket=bucket, key=key)
    _check_http_url(url, "ISSUER_REVOKED_URL")
    return Source(url=url, scheme=parts.scheme)


def _check_http_url(url: str, name: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises for a port that is not a number
    except ValueError:
        raise SettingsError(f"{name} {url!r} is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.fragment:
        raise SettingsError(f"{name} {url!r} must be an https:// URL without credentials")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise SettingsError(f"{name} {url!r}: plain http:// is allowed only for loopback hosts")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _aws_environment(env: Mapping[str, str]) -> AwsEnvironment:
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", region):
        raise SettingsError("an s3:// ISSUER_REVOKED_URL needs AWS_REGION (set by Lambda)")
    access_key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or not secret:
        raise SettingsError("an s3:// ISSUER_REVOKED_URL needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    endpoint = (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").rstrip("/")
    if endpoint:
        _check_http_url(endpoint, "AWS_ENDPOINT_URL_S3")
        parts = urllib.parse.urlsplit(endpoint)
        if parts.path or parts.query:
            raise SettingsError(f"S3 endpoint URL {endpoint!r} must be scheme://host[:port] only")
    return AwsEnvironment(region, access_key, secret, env.get("AWS_SESSION_TOKEN", ""), endpoint)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{name} must be a non-negative number of seconds, not {raw!r}")
    return value


def _boolean(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")


# ---------------------------------------------------------------------------------------------
# The client certificate: a minimal DER reader (RFC 5280 Certificate, only what we need)
# ---------------------------------------------------------------------------------------------

_OID_CN: Final = "2.5.4.3"
_OID_OU: Final = "2.5.4.11"
_OID_SAN: Final = "2.5.29.17"
_PEM_BLOCK: Final = re.compile(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----")


@dataclass(frozen=True)
class ClientCertificate:
    """What the authorizer reads from a leaf: ``serial`` is lowercase hex without leading zeros,
    ``roles`` the subject's OU values and ``uri_sans`` the URI SANs, both in certificate order."""

    serial: str
    common_name: str
    roles: tuple[str, ...]
    uri_sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime


def parse_certificate_pem(pem: str) -> ClientCertificate:
    """Parse exactly one PEM ``CERTIFICATE`` block.

    Raises :class:`CertificateError` for anything that is not one well-formed X.509 certificate.
    The signature is not checked: API Gateway already verified the chain against the truststore.
    """
    blocks = _PEM_BLOCK.findall(pem)
    if len(blocks) != 1:
        raise CertificateError(f"clientCertPem holds {len(blocks)} certificate blocks, not 1")
    try:
        der = base64.b64decode("".join(blocks[0].split()), validate=True)
    except (binascii.Error, ValueError):
        raise CertificateError("clientCertPem is not valid base64") from None
    return parse_certificate_der(der)


def parse_certificate_der(der: bytes) -> ClientCertificate:
    """Parse one DER certificate (no trailing bytes); raises :class:`CertificateError`."""
    tag, body, end = _tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise CertificateError("not a DER certificate (outer SEQUENCE)")
    outer = _children(body)
    if len(outer) != 3 or outer[0][0] != 0x30:
        raise CertificateError("certificate is not tbsCertificate, signatureAlgorithm, signature")
    fields = _children(outer[0][1])
    i = 1 if fields and fields[0][0] == 0xA0 else 0  # [0] EXPLICIT version
    if len(fields) < i + 6:
        raise CertificateError("tbsCertificate is truncated")
    serial_tag, serial_bytes = fields[i]
    if serial_tag != 0x02 or not serial_bytes:
        raise CertificateError("serialNumber is not an INTEGER")
    serial = int.from_bytes(serial_bytes, "big", signed=True)
    if serial <= 0:
        raise CertificateError("serialNumber is not positive")
    validity = _children(_expect(fields[i + 3], 0x30, "validity"))
    if len(validity) != 2:
        raise CertificateError("validity is not notBefore, notAfter")
    subject = _name(_expect(fields[i + 4], 0x30, "subject"))
    uris: tuple[str, ...] = ()
    for tag, content in fields[i + 6 :]:
        if tag == 0xA3:  # [3] EXPLICIT extensions
            uris = _uri_sans(_expect(_one(content, "extensions"), 0x30, "extensions"))
    return ClientCertificate(
        serial=format(serial, "x"),
        common_name=next((value for oid, value in subject if oid == _OID_CN), ""),
        roles=tuple(value for oid, value in subject if oid == _OID_OU),
        uri_sans=uris,
        not_before=_time(validity[0]),
        not_after=_time(validity[1]),
    )


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One tag-length-value at ``pos``: (tag, content, position after it)."""
    if pos + 2 > len(data):
        raise CertificateError("DER is truncated")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise CertificateError("DER high tag numbers do not occur in certificates")
    pos += 2
    if first == 0x80:
        raise CertificateError("indefinite lengths are not DER")
    if first > 0x80:
        count = first & 0x7F
        if count > 4 or pos + count > len(data):
            raise CertificateError("DER length is malformed")
        length, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    else:
        length = first
    if pos + length > len(data):
        raise CertificateError("DER is truncated")
    return tag, data[pos : pos + length], pos + length


def _children(content: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(content):
        tag, value, pos = _tlv(content, pos)
        out.append((tag, value))
    return out


def _expect(item: tuple[int, bytes], tag: int, what: str) -> bytes:
    if item[0] != tag:
        raise CertificateError(f"{what} has tag 0x{item[0]:02x}, expected 0x{tag:02x}")
    return item[1]


def _one(content: bytes, what: str) -> tuple[int, bytes]:
    items = _children(content)
    if len(items) != 1:
        raise CertificateError(f"{what} must hold exactly one element")
    return items[0]


def _oid(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise CertificateError("OBJECT IDENTIFIER is malformed")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


# Directory string types as they appear in certificate names, and how to decode them.
_STRINGS: Final = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x12: "ascii",  # NumericString
    0x14: "latin-1",  # TeletexString (commonly latin-1 in practice)
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}


def _name(content: bytes) -> list[tuple[str, str]]:
    """A Name as (oid, value) pairs in order; values decoded only for CN and OU."""
    out: list[tuple[str, str]] = []
    for rdn in _children(content):
        for attribute in _children(_expect(rdn, 0x31, "RelativeDistinguishedName")):
            parts = _children(_expect(attribute, 0x30, "AttributeTypeAndValue"))
            if len(parts) != 2:
                raise CertificateError("AttributeTypeAndValue is malformed")
            oid = _oid(_expect(parts[0], 0x06, "attribute type"))
            if oid in (_OID_CN, _OID_OU):
                tag, raw = parts[1]
                if tag not in _STRINGS:
                    raise CertificateError(f"name attribute {oid} has string tag 0x{tag:02x}")
                try:
                    out.append((oid, raw.decode(_STRINGS[tag])))
                except UnicodeDecodeError:
                    raise CertificateError(f"name attribute {oid} is not valid text") from None
    return out


def _uri_sans(extensions: bytes) -> tuple[str, ...]:
    found: tuple[str, ...] | None = None
    for extension in _children(extensions):
        parts = _children(_expect(extension, 0x30, "Extension"))
        if len(parts) not in (2, 3):
            raise CertificateError("Extension is malformed")
        if _oid(_expect(parts[0], 0x06, "extnID")) != _OID_SAN:
            continue
        if found is not None:
            raise CertificateError("subjectAltName appears twice")  # RFC 5280 4.2
        names = _children(_expect(_one(_expect(parts[-1], 0x04, "extnValue"), "extnValue"), 0x30, "GeneralNames"))
        try:
            found = tuple(value.decode("ascii") for tag, value in names if tag == 0x86)  # [6] URI
        except UnicodeDecodeError:
            raise CertificateError("a URI SAN is not ASCII") from None
    return found or ()


def _time(item: tuple[int, bytes]) -> datetime:
    tag, raw = item
    text = raw.decode("ascii", errors="replace")
    if tag == 0x17 and re.fullmatch(r"\d{12}Z", text):  # UTCTime YYMMDDHHMMSSZ (RFC 5280 4.1.2.5.1)
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif not (tag == 0x18 and re.fullmatch(r"\d{14}Z", text)):  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise CertificateError(f"validity time {text!r} is not UTCTime or GeneralizedTime in Z")
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise CertificateError(f"validity time {text!r} is not a date") from None


def serial_matches(serial_hex: str, printed: str) -> bool:
    """Whether API Gateway's ``serialNumber`` text names the same serial as ``serial_hex``.

    Liberal in what it accepts: colons, spaces, upper case, leading zeros, a ``0x`` prefix, and
    (the documentation shows ``"1"``) an all-digit decimal rendering.
    """
    text = printed.strip().lower().replace(":", "").replace(" ", "").removeprefix("0x")
    if not text or not re.fullmatch(r"[0-9a-f]+", text):
        return False
    candidates = {int(text, 16)}
    if text.isdigit():
        candidates.add(int(text, 10))
    return int(serial_hex, 16) in candidates


# ---------------------------------------------------------------------------------------------
# The route policy
# ---------------------------------------------------------------------------------------------

_GREEDY_SEGMENT: Final = re.compile(r"\{[^{}/]+\+\}")  # API Gateway's {proxy+}


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
class Policy:
    rules: tuple[Rule, ...]
    default_allow: bool

    def decide(self, route: Route, cert: ClientCertificate) -> tuple[bool, str, str]:
        """(allowed, reason code, name of the deciding rule or "")."""
        covering = [rule for rule in self.rules if any(p.matches(route) for p in rule.routes)]
        for rule in covering:
            if rule.admits(cert):
                return True, "allowed", rule.name
        if covering:
            return False, "identity_not_allowed", ""
        return (True, "allowed_by_default", "") if self.default_allow else (False, "route_not_allowed", "")


def parse_policy(text: str) -> Policy:
    """Parse ``ISSUER_AUTHZ_POLICY``; raises :class:`PolicyError` saying what is wrong."""
    if not text.strip():
        raise PolicyError('ISSUER_AUTHZ_POLICY is not set (for revocation only: {"rules": [], "default": "allow"})')
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
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


# ---------------------------------------------------------------------------------------------
# The revocation list: document, S3 signing, fetching, and the in-memory cache
# ---------------------------------------------------------------------------------------------

_SERIAL: Final = re.compile(r"0|[1-9a-f][0-9a-f]*")


@dataclass(frozen=True)
class RevocationList:
    serials: frozenset[str]
    generated_at: str


def parse_revocation_document(body: bytes) -> RevocationList:
    """Validate the ``/v1/revoked`` JSON; the revoked set is ``serials`` plus every entry's serial.

    Raises :class:`SourceError` (``revocation_document_invalid``) for any other shape.
    """

    def bad(why: str) -> SourceError:
        return SourceError(f"revocation list refused: {why}", code="revocation_document_invalid")

    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("not JSON") from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or isinstance(doc.get("version"), bool):
        raise bad("not an object with version 1")
    generated_at, serials, entries = doc.get("generated_at"), doc.get("serials"), doc.get("entries")
    if not _is_timestamp(generated_at):
        raise bad("generated_at is not an ISO 8601 time with an offset")
    if not isinstance(serials, list) or not all(isinstance(s, str) and _SERIAL.fullmatch(s) for s in serials):
        raise bad("serials must be lowercase hex strings without leading zeros")
    if not isinstance(entries, list):
        raise bad("entries must be a list")
    revoked = set(serials)
    for entry in entries:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("serial"), str)
            and _SERIAL.fullmatch(entry["serial"])
            and isinstance(entry.get("issuer_fingerprint"), str)
            and re.fullmatch(r"[0-9a-fA-F]{64}", entry["issuer_fingerprint"])
            and _is_timestamp(entry.get("revoked_at"))
            and _is_timestamp(entry.get("not_after"))
            and isinstance(entry.get("reason"), str)
        ):
            raise bad("an entry lacks serial, issuer_fingerprint, revoked_at, reason or not_after")
        revoked.add(entry["serial"])
    return RevocationList(serials=frozenset(revoked), generated_at=str(generated_at))


def _is_timestamp(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def sigv4_headers(
    *,
    url: str,
    aws: AwsEnvironment,
    now: datetime,
    signed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers that sign a bodiless S3 ``GET url`` with AWS Signature Version 4.

    ``url`` must already be URI-encoded as it will be sent (S3 canonical URIs are not encoded
    twice). ``signed`` adds headers to sign; ``If-None-Match`` may be sent unsigned.
    """
    parts = urllib.parse.urlsplit(url)
    amz_date = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": parts.netloc, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    headers.update({name.lower(): value for name, value in (signed or {}).items()})
    if aws.session_token:
        headers["x-amz-security-token"] = aws.session_token
    names = sorted(headers)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(sorted(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in pairs))
    canonical_headers = "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names)
    canonical = "\n".join(["GET", parts.path or "/", query, canonical_headers, ";".join(names), EMPTY_SHA256])
    scope = f"{amz_date[:8]}/{aws.region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + aws.secret_access_key).encode()
    for part in (amz_date[:8], aws.region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={aws.access_key_id}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )
    return headers


def _uri_encode(text: str, safe: str = "-_.~") -> str:
    """SigV4's URI encoding: everything but RFC 3986 unreserved characters (and ``safe``) as %XX."""
    return urllib.parse.quote(text, safe=safe)


def _s3_url(source: Source, aws: AwsEnvironment) -> str:
    key = _uri_encode(source.key, safe="/-_.~")
    if aws.endpoint_url:
        return f"{aws.endpoint_url}/{source.bucket}/{key}"
    suffix = "amazonaws.com.cn" if aws.region.startswith("cn-") else "amazonaws.com"
    if "." in source.bucket:  # a dotted bucket does not fit the *.s3 wildcard certificate
        return f"https://s3.{aws.region}.{suffix}/{source.bucket}/{key}"
    return f"https://{source.bucket}.s3.{aws.region}.{suffix}/{key}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could downgrade to http or carry a signed request elsewhere: report it instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class _Fetched:
    status: int  # 200 or 304
    body: bytes
    etag: str


def _fetch(settings: Settings, etag: str, now: datetime) -> _Fetched:
    """One GET of the revocation list; raises :class:`SourceError` for anything but 200 or 304."""
    headers: dict[str, str] = {"Accept": "application/json"}
    if settings.source.scheme == "s3":
        url = _s3_url(settings.source, settings.aws)
        headers.update(sigv4_headers(url=url, aws=settings.aws, now=now))
    else:
        url = settings.source.url
    if etag:
        headers["If-None-Match"] = etag
    host = urllib.parse.urlsplit(url).hostname or ""
    request = urllib.request.Request(url, headers=headers, method="GET")  # noqa: S310  (scheme checked in settings)
    try:
        context = ssl.create_default_context(cafile=settings.ca_file or None)
        handlers: list[urllib.request.BaseHandler] = [_NoRedirects(), urllib.request.HTTPSHandler(context=context)]
        if _is_loopback(host):
            handlers.append(urllib.request.ProxyHandler({}))  # a developer's proxy must not see test traffic
        opener = urllib.request.build_opener(*handlers)
        with opener.open(request, timeout=settings.timeout) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
            if len(body) > MAX_DOCUMENT_BYTES:
                raise SourceError(f"revocation list from {host} is larger than {MAX_DOCUMENT_BYTES} bytes")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) != len(body):  # read(n) returns short data silently
                raise SourceError(f"GET {host}: body truncated at {len(body)} of {length} bytes")
            return _Fetched(200, body, response.headers.get("ETag", ""))
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return _Fetched(304, b"", exc.headers.get("ETag", "") or etag)
        try:
            detail = exc.read(4096).decode("utf-8", errors="replace")
        except (OSError, http.client.HTTPException):
            detail = ""
        code = re.search(r"<Code>([^<]{1,64})</Code>", detail)  # S3's error code, e.g. SignatureDoesNotMatch
        raise SourceError(f"GET {host} answered {exc.code}" + (f" {code.group(1)}" if code else "")) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else f"{type(exc).__name__}: {exc}"
        raise SourceError(f"GET {host} failed: {reason}") from None


@dataclass(frozen=True)
class Snapshot:
    """The list to decide with: ``revoked`` is None when no usable list is available."""

    revoked: frozenset[str] | None
    state: str  # "fresh", "stale" or "unavailable"
    age: float | None  # seconds since the list was last confirmed by the source


class RevocationCache:
    """The revocation list kept in module memory between invocations of one Lambda environment.

    Fresh for ``ttl`` seconds after the source last confirmed it (200, or 304 to If-None-Match);
    after that refetched, and while the source fails, served stale up to ``max_stale`` seconds.
    """

    def __init__(self) -> None:
        # Lambda runs one invocation per environment at a time; the lock is for other hosts.
        self._lock = threading.Lock()
        self._reset("")

    def _reset(self, source: str) -> None:
        self._source = source
        self._list: RevocationList | None = None
        self._etag = ""
        self._confirmed_at: float | None = None
        self._failed_at: float | None = None

    def snapshot(self, settings: Settings, now: datetime, log: Log) -> Snapshot:
        """The list to use at ``now``, fetching when due. Never raises for source failures."""
        with self._lock:
            if self._source != settings.source.url:
                self._reset(settings.source.url)  # another source: forget everything
            clock = now.timestamp()
            due = self._confirmed_at is None or clock - self._confirmed_at >= settings.ttl
            backing_off = self._failed_at is not None and clock - self._failed_at < min(
                settings.ttl, RETRY_AFTER_FAILURE
            )
            if due and not backing_off:
                self._refresh(settings, now, log)
            if self._list is None or self._confirmed_at is None:
                return Snapshot(None, "unavailable", None)
            age = clock - self._confirmed_at
            if age < settings.ttl:
                return Snapshot(self._list.serials, "fresh", age)
            if age <= settings.max_stale:
                return Snapshot(self._list.serials, "stale", age)
            return Snapshot(None, "unavailable", age)

    def _refresh(self, settings: Settings, now: datetime, log: Log) -> None:
        clock = now.timestamp()
        source = _redacted(settings.source)
        try:
            fetched = _fetch(settings, self._etag if self._list is not None else "", now)
            if fetched.status == 200:
                current = parse_revocation_document(fetched.body)
            elif self._list is not None:
                current = self._list
            else:
                raise SourceError("304 Not Modified without a cached list")
        except SourceError as exc:
            self._failed_at = clock
            age = None if self._confirmed_at is None else round(clock - self._confirmed_at, 3)
            fields = {"code": exc.code, "error": str(exc), "source": source, "list_age": age}
            _log(log, "error", "revocation_source_failed", **fields, max_stale=settings.max_stale)
            return
        if fetched.status == 200:
            self._list, self._etag = current, fetched.etag
        self._confirmed_at, self._failed_at = clock, None
        event = "revocation_list_fetched" if fetched.status == 200 else "revocation_list_not_modified"
        fields = {"serials": len(current.serials), "generated_at": current.generated_at, "etag": self._etag}
        _log(log, "info", event, source=source, **fields)


def _redacted(source: Source) -> str:
    parts = urllib.parse.urlsplit(source.url)
    return source.url if source.scheme == "s3" else f"{parts.scheme}://{parts.netloc}{parts.path}"


# ---------------------------------------------------------------------------------------------
# The API Gateway event and the decision
# ---------------------------------------------------------------------------------------------

_METHOD_ARN: Final = re.compile(r"arn:[a-z-]+:execute-api:[a-z0-9-]+:\d{12}:[^/\s]+/[^/\s]+/[^/\s]+/\S*")


@dataclass(frozen=True)
class ApiRequest:
    route: Route
    cert_pem: str
    serial_text: str
    request_id: str


def parse_event(event: object) -> ApiRequest:
    """The route and client certificate of a REQUEST authorizer event (REST, or HTTP API 1.0/2.0).

    Raises :class:`EventError` (``client_cert_missing`` when there is no certificate, e.g. a
    TOKEN authorizer or a domain without mutual TLS).
    """
    if not isinstance(event, dict):
        raise EventError("event is not a JSON object")
    context = event.get("requestContext")
    if not isinstance(context, dict):
        raise EventError("event has no requestContext (use a REQUEST authorizer)", code="client_cert_missing")
    http_api = event.get("version") == "2.0"
    holder = context.get("authentication" if http_api else "identity")
    cert = holder.get("clientCert") if isinstance(holder, dict) else None
    if cert is None:
        raise EventError("event carries no clientCert (is mutual TLS on?)", code="client_cert_missing")
    if not isinstance(cert, dict) or not isinstance(cert.get("clientCertPem"), str):
        raise EventError("clientCert.clientCertPem is not a string")
    if not isinstance(cert.get("serialNumber"), str):
        raise EventError("clientCert.serialNumber is not a string")
    if http_api:
        http = context.get("http")
        method = http.get("method") if isinstance(http, dict) else None
        route_key = event.get("routeKey")
        path = route_key.partition(" ")[2] if isinstance(route_key, str) and route_key != "$default" else route_key
    else:
        method, path = event.get("httpMethod"), event.get("resource")
        arn = event.get("methodArn")
        if not isinstance(arn, str) or not _METHOD_ARN.fullmatch(arn):
            raise EventError("event has no execute-api methodArn")
    if not isinstance(method, str) or not re.fullmatch(r"[A-Z]+", method):
        raise EventError("event has no HTTP method")
    if not isinstance(path, str) or not (path == "$default" or path.startswith("/")):
        raise EventError("event has no route (resource or routeKey)")
    request_id = context.get("requestId")
    return ApiRequest(Route(method, path), cert["clientCertPem"], cert["serialNumber"], str(request_id or ""))


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str
    detail: str = ""
    cert: ClientCertificate | None = None
    route: str = ""
    rule: str = ""
    revocation: str = "not_checked"
    list_age: float | None = None
    request_id: str = ""


def _decide(event: object, env: Mapping[str, str], cache: RevocationCache, now: datetime, log: Log) -> Decision:
    try:
        settings = load_settings(env)
        policy = parse_policy(settings.policy_json)
        request = parse_event(event)
    except AuthorizerError as exc:
        return Decision(False, exc.code, str(exc))
    base = Decision(False, "", route=str(request.route), request_id=request.request_id)
    try:
        cert = parse_certificate_pem(request.cert_pem)
    except CertificateError as exc:
        return replace(base, reason=exc.code, detail=str(exc))
    base = replace(base, cert=cert)
    if not serial_matches(cert.serial, request.serial_text):
        return replace(base, reason="cert_serial_mismatch", detail=f"serialNumber {request.serial_text!r}")
    if now > cert.not_after:
        return replace(base, reason="cert_expired", detail=f"notAfter {cert.not_after.isoformat()}")
    if now < cert.not_before:
        return replace(base, reason="cert_not_yet_valid", detail=f"notBefore {cert.not_before.isoformat()}")
    snapshot = cache.snapshot(settings, now, log)
    age = None if snapshot.age is None else round(snapshot.age, 3)
    base = replace(base, revocation=snapshot.state, list_age=age)
    if snapshot.revoked is None:
        if settings.fail_closed:
            return replace(base, reason="revocation_list_unavailable", detail="ISSUER_FAIL_CLOSED is true")
        base = replace(base, revocation="unchecked")  # fail open: logged at error level below
    elif cert.serial in snapshot.revoked:
        return replace(base, reason="revoked")
    allowed, reason, rule = policy.decide(request.route, cert)
    return replace(base, allow=allowed, reason=reason, rule=rule)


def authorize(
    event: object,
    *,
    env: Mapping[str, str],
    cache: RevocationCache,
    now: datetime,
    log: Log = print,
) -> dict[str, Any]:
    """Decide one authorizer event; returns the response API Gateway expects for its shape.

    Never raises: a bug becomes a Deny with reason ``internal_error`` and its traceback logged.
    """
    try:
        decision = _decide(event, env, cache, now, log)
    except Exception as exc:  # deny rather than let API Gateway turn a crash into a 500
        decision = Decision(False, "internal_error", f"{type(exc).__name__}: {exc}")
        _log(log, "error", "authorizer_bug", traceback=traceback.format_exc())
    _log_decision(log, decision)
    return _response(event, decision)


def _log_decision(log: Log, decision: Decision) -> None:
    cert = decision.cert
    loud = decision.reason in ("settings_invalid", "policy_invalid", "internal_error") or decision.revocation in (
        "unchecked",
        "unavailable",
    )
    fields: dict[str, Any] = {
        "decision": "allow" if decision.allow else "deny",
        "reason": decision.reason,
        "detail": decision.detail or None,
        "route": decision.route or None,
        "rule": decision.rule or None,
        "revocation": decision.revocation,
        "list_age": decision.list_age,
        "request_id": decision.request_id or None,
    }
    if cert is not None:
        fields.update(_identity(cert))
    if decision.allow and decision.revocation == "unchecked":
        fields["alert"] = "FAIL-OPEN: allowed without a revocation list (ISSUER_FAIL_CLOSED=false)"
    _log(log, "error" if loud else "info" if decision.allow else "warning", "authorizer_decision", **fields)


def _identity(cert: ClientCertificate) -> dict[str, str]:
    return {
        "serial": cert.serial,
        "role": cert.roles[0] if cert.roles else "",
        "uri_san": cert.uri_sans[0] if cert.uri_sans else "",
        "common_name": cert.common_name,
    }


def _response(event: object, decision: Decision) -> dict[str, Any]:
    cert = decision.cert
    context = {**_identity(cert), "not_after": cert.not_after.isoformat()} if cert else {}
    if isinstance(event, dict) and event.get("version") == "2.0":
        return {"isAuthorized": decision.allow, "context": context}
    arn = event.get("methodArn") if isinstance(event, dict) else None
    valid_arn = isinstance(arn, str) and _METHOD_ARN.fullmatch(arn) is not None
    # An allowed REST decision always has a valid methodArn (parse_event checks it).
    statement = {
        "Action": "execute-api:Invoke",
        "Effect": "Allow" if decision.allow and valid_arn else "Deny",
        "Resource": arn if valid_arn else "*",
    }
    principal = (cert.uri_sans[0] if cert.uri_sans else cert.common_name or cert.serial) if cert else "unknown"
    return {
        "principalId": principal,
        "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        "context": context,
    }


def _log(log: Log, level: str, event: str, **fields: Any) -> None:
    record = {"level": level, "event": event, **{k: v for k, v in fields.items() if v is not None}}
    log(json.dumps(record, separators=(",", ":"), default=str))


_CACHE: Final = RevocationCache()


def lambda_handler(event: object, context: object) -> dict[str, Any]:
    """The Lambda entry point: settings from ``os.environ``, the module's cache, the wall clock."""
    return authorize(event, env=os.environ, cache=_CACHE, now=datetime.now(timezone.utc))
