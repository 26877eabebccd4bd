"""The authorizer's settings, read from the environment on every invocation (``os.environ`` in Lambda).

Signed CRLs (what the authorizer enforces)::

    ISSUER_CRLS_URL           the PEM bundle of CRLs: https://issuer/v1/crls, or s3://bucket/key
    ISSUER_TRUSTSTORE_URL     the truststore the CRLs are verified with: https://issuer/v1/truststore,
                              or the s3:// object API Gateway's mutual TLS uses
    ISSUER_CRLS_TTL           seconds both are used before revalidating (If-None-Match); 60
    ISSUER_CRLS_MAX_STALE     seconds they may be served while a source fails, and the grace past a
                              CRL's nextUpdate; 10 x TTL
    ISSUER_CRLS_TIMEOUT       seconds for one fetch; 3
    ISSUER_CRLS_CA_FILE       PEM roots for an https source with a private TLS CA; system roots

The older unsigned JSON list (used only when ISSUER_CRLS_URL is not set)::

    ISSUER_REVOKED_URL, ISSUER_REVOKED_TTL, ISSUER_REVOKED_MAX_STALE, ISSUER_REVOKED_TIMEOUT,
    ISSUER_REVOKED_CA_FILE, ISSUER_FAIL_CLOSED (true; false allows, logged at error level, when
    no list is usable — refused with ISSUER_CRLS_URL: signed CRLs always fail closed)

Both: ``ISSUER_AUTHZ_POLICY`` (the route policy), and for s3:// sources the Lambda's ``AWS_*``
credentials and region (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` switch to path-style
addressing at that endpoint). ``http://`` is accepted only for loopback hosts.
"""

from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from .errors import SettingsError

__all__ = ["AwsEnvironment", "Fetching", "Settings", "Source", "is_loopback", "load_settings"]

DEFAULT_TTL: Final = 60.0
DEFAULT_TIMEOUT: Final = 3.0
# What one answer may weigh. A JSON document is parsed into Python objects (Lambda's default
# 128 MB must hold them); a CRL stays in DER until its serials are read; API Gateway takes a
# truststore of at most 1 MB.
MAX_JSON_BYTES: Final = 4 * 1024 * 1024
MAX_CRL_BUNDLE_BYTES: Final = 16 * 1024 * 1024
MAX_TRUSTSTORE_BYTES: Final = 2 * 1024 * 1024


@dataclass(frozen=True)
class Source:
    """Where a document comes from: ``url`` as configured, plus the S3 location."""

    url: str
    scheme: str  # "https", "http" (loopback only) or "s3"
    bucket: str = ""
    key: str = ""

    def redacted(self) -> str:
        """The URL for a log line: no query string (it could carry a presigned credential)."""
        parts = urllib.parse.urlsplit(self.url)
        return self.url if self.scheme == "s3" else f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass(frozen=True)
class Fetching:
    """How one source is read and how long its answer may be used."""

    source: Source
    ttl: float
    max_stale: float
    timeout: float
    ca_file: str
    max_bytes: int
    accept: str


@dataclass(frozen=True)
class AwsEnvironment:
    """The Lambda's credentials and endpoint settings, used only for ``s3://`` sources."""

    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    endpoint_url: str = ""  # path-style addressing when set (moto, VPC endpoints)


@dataclass(frozen=True)
class Settings:
    """``crls`` and ``truststore`` when signed CRLs are enforced; otherwise ``revoked`` (the JSON list)."""

    crls: Fetching | None
    truststore: Fetching | None
    revoked: Fetching | None
    fail_closed: bool
    policy_json: str
    aws: AwsEnvironment
    ignored: tuple[str, ...] = ()  # variables that are set but not used (logged once per source)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read the authorizer's settings from ``env``.

    Raises :class:`SettingsError` naming the variable when one is missing or malformed.
    """
    crls_url = env.get("ISSUER_CRLS_URL", "").strip()
    fail_closed = _boolean(env, "ISSUER_FAIL_CLOSED", default=True)
    policy = env.get("ISSUER_AUTHZ_POLICY", "")
    if crls_url:
        truststore_url = env.get("ISSUER_TRUSTSTORE_URL", "").strip()
        if not truststore_url:
            raise SettingsError(
                "ISSUER_TRUSTSTORE_URL is not set: the CRLs of ISSUER_CRLS_URL are verified with it "
                "(https://issuer/v1/truststore or the s3:// truststore API Gateway uses)"
            )
        if not fail_closed:
            raise SettingsError("ISSUER_FAIL_CLOSED=false is refused with ISSUER_CRLS_URL: signed CRLs fail closed")
        ttl, max_stale, timeout = _timing(env, "ISSUER_CRLS")
        ca_file = env.get("ISSUER_CRLS_CA_FILE", "").strip()
        crls = Fetching(
            _parse_source(crls_url, "ISSUER_CRLS_URL"),
            ttl,
            max_stale,
            timeout,
            ca_file,
            MAX_CRL_BUNDLE_BYTES,
            "application/x-pem-file",
        )
        truststore = Fetching(
            _parse_source(truststore_url, "ISSUER_TRUSTSTORE_URL"),
            ttl,
            max_stale,
            timeout,
            ca_file,
            MAX_TRUSTSTORE_BYTES,
            "application/x-pem-file",
        )
        ignored = tuple(name for name in ("ISSUER_REVOKED_URL",) if env.get(name, "").strip())
        aws = _aws_if_needed(env, crls, truststore)
        return Settings(crls, truststore, None, True, policy, aws, ignored)
    url = env.get("ISSUER_REVOKED_URL", "").strip()
    if not url:
        raise SettingsError(
            "ISSUER_CRLS_URL is not set (https://issuer/v1/crls or s3://bucket/key, with ISSUER_TRUSTSTORE_URL); "
            "nor is the older ISSUER_REVOKED_URL"
        )
    ttl, max_stale, timeout = _timing(env, "ISSUER_REVOKED")
    revoked = Fetching(
        _parse_source(url, "ISSUER_REVOKED_URL"),
        ttl,
        max_stale,
        timeout,
        env.get("ISSUER_REVOKED_CA_FILE", "").strip(),
        MAX_JSON_BYTES,
        "application/json",
    )
    return Settings(None, None, revoked, fail_closed, policy, _aws_if_needed(env, revoked))


def _timing(env: Mapping[str, str], prefix: str) -> tuple[float, float, float]:
    ttl = _seconds(env, f"{prefix}_TTL", DEFAULT_TTL)
    max_stale = _seconds(env, f"{prefix}_MAX_STALE", 10 * ttl)
    if max_stale < ttl:
        raise SettingsError(f"{prefix}_MAX_STALE ({max_stale:g}) must not be less than {prefix}_TTL")
    timeout = _seconds(env, f"{prefix}_TIMEOUT", DEFAULT_TIMEOUT)
    if not 0 < timeout <= 30:
        raise SettingsError(f"{prefix}_TIMEOUT must be more than 0 and at most 30 seconds")
    return ttl, max_stale, timeout


def _parse_source(url: str, name: str) -> Source:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise SettingsError(f"{name} {url!r} is not a URL") from None
    if parts.scheme == "s3":
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or not key or parts.query or parts.fragment:
            raise SettingsError(f"{name} {url!r} is not s3://bucket/key")
        return Source(url=url, scheme="s3", bucket=bucket, key=key)
    _check_http_url(url, name)
    return Source(url=url, scheme=parts.scheme)


def _check_http_url(url: str, name: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises for a port that is not a number
    except ValueError:
        raise SettingsError(f"{name} {url!r} is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.fragment:
        raise SettingsError(f"{name} {url!r} must be an https:// URL without credentials")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise SettingsError(f"{name} {url!r}: plain http:// is allowed only for loopback hosts")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _aws_if_needed(env: Mapping[str, str], *fetching: Fetching) -> AwsEnvironment:
    s3 = [f.source.url for f in fetching if f.source.scheme == "s3"]
    if not s3:
        return AwsEnvironment()
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", region):
        raise SettingsError(f"an s3:// source ({s3[0]}) needs AWS_REGION (set by Lambda)")
    access_key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or not secret:
        raise SettingsError(f"an s3:// source ({s3[0]}) needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
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
