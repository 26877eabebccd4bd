"""One frozen settings object, from ``issuer.toml`` and the environment.

Precedence: environment (``ISSUER_DATABASE_URL``, ``ISSUER_STATE_DIR``, ...) over
the file over the defaults. With no file at all the service runs on the embedded
default: SQLite and a development CA in the state directory, and one ``default``
role for join tokens, so ``issuer serve`` works for trying it out.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from issuer.audit_settings import AuditSettings, EventSettings, parse_audit, parse_events
from issuer.durations import parse_duration
from issuer.errors import ConfigError
from issuer.policy.admins import AdminGrant, parse_admins
from issuer.policy.methods import rules_for
from issuer.policy.ratelimit import RateLimit, parse_rate_limit
from issuer.policy.roles import Role, parse_roles

DEFAULT_TRUST_DOMAIN = "issuer.local"
DEFAULT_MAX_BODY = 64 * 1024
DEFAULT_RATE_LIMIT = "10/min"
_DEFAULT_RATE = parse_rate_limit(DEFAULT_RATE_LIMIT)
_SECTIONS = {"issuer", "aws", "roles", "admins", "audit", "events"}
_ISSUER_KEYS = {
    "registry_refresh",
    "trust_domain",
    "server_id",
    "database_url",
    "state_dir",
    "max_body_bytes",
    "renew_fraction",
    "trusted_proxies",
    "rate_limit",
}


class Secret:
    """A secret value that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class StsSettings:
    partitions: tuple[str, ...] = ("aws",)
    timeout: timedelta = timedelta(seconds=5)
    endpoint_overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ec2Settings:
    extra_certs: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    # DescribeInstances endpoint per region ("*" for every region); tests point it at moto.
    endpoint_overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service needs to start. Build with :func:`load_settings`."""

    state_dir: Path
    database_url: str
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    server_id: str | None = None
    roles: tuple[Role, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY
    # A certificate should be renewed once this fraction of its lifetime has passed.
    renew_fraction: float = 2 / 3
    # Addresses of load balancers whose X-Forwarded-For is believed for the audit trail.
    trusted_proxies: tuple[str, ...] = ()
    sts: StsSettings = field(default_factory=StsSettings)
    ec2: Ec2Settings = field(default_factory=Ec2Settings)
    config_path: Path | None = None
    embedded: bool = False  # no config file: development defaults
    # How often each replica re-reads the CA issuer registry.
    registry_refresh: timedelta = timedelta(seconds=5)
    # Requests per verified identity (instance, principal, token name), per process; None: no limit.
    rate_limit: RateLimit | None = _DEFAULT_RATE
    # The CA passphrase: ISSUER_CA_PASSPHRASE, else the file ISSUER_CA_PASSPHRASE_FILE names,
    # else default_passphrase_file — outside the state directory, so the passphrase never sits
    # beside the keys it unlocks (``ca init`` generates it there when none is given).
    ca_passphrase: Secret | None = None
    ca_passphrase_file: Path | None = None
    # [[admins]]: who may use the admin API (/v1/admin/), with which permissions; empty: the API is off.
    admins: tuple[AdminGrant, ...] = ()
    default_passphrase_file: Path | None = None  # None: <config home>/issuer/ca-passphrase of this user
    # The audit chain's checkpoints ([audit]) and EventBridge events ([events]).
    audit: AuditSettings = field(default_factory=AuditSettings)
    events: EventSettings = field(default_factory=EventSettings)

    @property
    def ca_dir(self) -> Path:
        return self.state_dir / "ca"

    @property
    def audience(self) -> str:
        """The name proofs must be made for (STS server ID header, renewal token ``aud``)."""
        return self.server_id or self.trust_domain

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def default_state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "issuer"


def default_passphrase_file(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/issuer/ca-passphrase``, else ``~/.config/issuer/ca-passphrase``: apart from the state."""
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "issuer" / "ca-passphrase"


def load_settings(config_path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration file (``config_path`` or ``ISSUER_CONFIG``) and the environment.

    Raises :class:`ConfigError` naming the file and the field at fault.
    """
    env = os.environ if env is None else env
    path_text = str(config_path) if config_path else env.get("ISSUER_CONFIG")
    raw: dict[str, Any] = {}
    source = "<defaults>"
    path: Path | None = None
    if path_text:
        path = Path(path_text)
        source = str(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{source}: configuration file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    unknown = sorted(set(raw) - _SECTIONS)
    if unknown:
        raise ConfigError(f"{source}: unknown section {unknown[0]!r} (known: {', '.join(sorted(_SECTIONS))})")
    issuer = _table(raw, "issuer", source)
    bad = sorted(set(issuer) - _ISSUER_KEYS)
    if bad:
        raise ConfigError(f"{source}: [issuer] has unknown field {bad[0]!r} (known: {', '.join(sorted(_ISSUER_KEYS))})")

    state_dir = Path(env.get("ISSUER_STATE_DIR") or _str(issuer, "state_dir", source) or default_state_dir(env))
    database_url = (
        env.get("ISSUER_DATABASE_URL")
        or _str(issuer, "database_url", source)
        or f"sqlite+aiosqlite:///{state_dir / 'issuer.db'}"
    )
    if not re.match(r"^(postgresql\+asyncpg|sqlite\+aiosqlite)://", database_url):
        raise ConfigError(
            f"{source}: database_url must start with postgresql+asyncpg:// or sqlite+aiosqlite:// "
            f"(got {database_url.split('://')[0]}://)"
        )
    trust_domain = _str(issuer, "trust_domain", source) or DEFAULT_TRUST_DOMAIN
    if not re.match(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", trust_domain):
        raise ConfigError(f"{source}: [issuer] trust_domain {trust_domain!r} must be a lower-case DNS-like name")
    server_id = env.get("ISSUER_SERVER_ID") or _str(issuer, "server_id", source)
    max_body = issuer.get("max_body_bytes", DEFAULT_MAX_BODY)
    if not isinstance(max_body, int) or isinstance(max_body, bool) or not 1024 <= max_body <= 1024 * 1024:
        raise ConfigError(f"{source}: [issuer] max_body_bytes must be an integer from 1024 to 1048576")
    renew_fraction = issuer.get("renew_fraction", 2 / 3)
    if not isinstance(renew_fraction, float | int) or not 0.1 <= float(renew_fraction) <= 0.95:
        raise ConfigError(f"{source}: [issuer] renew_fraction must be a number from 0.1 to 0.95")
    proxies = issuer.get("trusted_proxies", [])
    if not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
        raise ConfigError(f"{source}: [issuer] trusted_proxies must be an array of IP addresses")

    embedded = path is None
    roles_raw = raw.get("roles")
    if embedded and roles_raw is None:
        # Trying it out: one role for operator-issued join tokens.
        roles_raw = [{"name": "default", "methods": ["token"]}]
    base = path.parent if path else Path.cwd()
    roles = parse_roles(roles_raw, source=source, trust_domain=trust_domain, base=base)
    needing = sorted({m for r in roles for m in r.methods if rules_for(m).needs_server_id})
    if server_id is None and needing:
        raise ConfigError(
            f"{source}: [issuer] server_id is required when a role allows {' or '.join(needing)} "
            "(clients sign it into their proofs, e.g. the STS request's X-Issuer-Server-ID)"
        )

    admins = parse_admins(raw.get("admins"), source=source)
    if admins and server_id is None:
        raise ConfigError(
            f"{source}: [issuer] server_id is required with [[admins]] "
            "(operators sign it into their STS proof as X-Issuer-Server-ID)"
        )

    try:
        registry_refresh = parse_duration(issuer.get("registry_refresh", "5s"))
    except ValueError as exc:
        raise ConfigError(f"{source}: [issuer] registry_refresh: {exc}") from None
    try:
        rate_limit = parse_rate_limit(issuer.get("rate_limit", DEFAULT_RATE_LIMIT))
    except ValueError as exc:
        raise ConfigError(f"{source}: [issuer] rate_limit: {exc}") from None
    passphrase = env.get("ISSUER_CA_PASSPHRASE")
    passphrase_file = env.get("ISSUER_CA_PASSPHRASE_FILE")

    aws = _table(raw, "aws", source)
    return Settings(
        state_dir=state_dir,
        database_url=database_url,
        trust_domain=trust_domain,
        server_id=server_id,
        roles=roles,
        max_body_bytes=max_body,
        renew_fraction=float(renew_fraction),
        trusted_proxies=tuple(proxies),
        sts=_sts(_table(aws, "sts", source, prefix="aws."), source),
        ec2=_ec2(_table(aws, "ec2", source, prefix="aws."), source, base=base),
        config_path=path,
        embedded=embedded,
        registry_refresh=registry_refresh,
        rate_limit=rate_limit,
        ca_passphrase=Secret(passphrase.encode()) if passphrase else None,
        ca_passphrase_file=Path(passphrase_file) if passphrase_file else None,
        admins=admins,
        default_passphrase_file=default_passphrase_file(env),
        audit=parse_audit(_table(raw, "audit", source), source),
        events=parse_events(_table(raw, "events", source), source),
    )


def _sts(table: Mapping[str, Any], source: str) -> StsSettings:
    bad = sorted(set(table) - {"partitions", "timeout", "endpoint_overrides"})
    if bad:
        raise ConfigError(f"{source}: [aws.sts] has unknown field {bad[0]!r}")
    partitions = table.get("partitions", ["aws"])
    if not isinstance(partitions, list) or not partitions or not all(isinstance(p, str) for p in partitions):
        raise ConfigError(f'{source}: [aws.sts] partitions must be a non-empty array such as ["aws"]')
    try:
        timeout = parse_duration(table.get("timeout", "5s"))
    except ValueError as exc:
        raise ConfigError(f"{source}: [aws.sts] timeout: {exc}") from None
    return StsSettings(
        partitions=tuple(partitions),
        timeout=timeout,
        endpoint_overrides=_url_map(table.get("endpoint_overrides", {}), f"{source}: [aws.sts] endpoint_overrides"),
    )


def _ec2(table: Mapping[str, Any], source: str, *, base: Path) -> Ec2Settings:
    bad = sorted(set(table) - {"extra_certs", "endpoint_overrides"})
    if bad:
        raise ConfigError(f"{source}: [aws.ec2] has unknown field {bad[0]!r}")
    extra = table.get("extra_certs", {})
    where = f"{source}: [aws.ec2] extra_certs"
    if not isinstance(extra, dict):
        raise ConfigError(f"{where} must be a table of region = [paths]")
    certs: dict[str, tuple[Path, ...]] = {}
    for region, paths in extra.items():
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ConfigError(f"{where}: {region!r} must be an array of file paths")
        certs[region] = tuple(base / p for p in paths)
    return Ec2Settings(
        extra_certs=certs,
        endpoint_overrides=_url_map(table.get("endpoint_overrides", {}), f"{source}: [aws.ec2] endpoint_overrides"),
    )


def _url_map(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f'{where} must be a table of name = "URL"')
    for name, url in value.items():
        if not re.match(r"^https?://", url):
            raise ConfigError(f"{where}: {name!r} must be an http(s) URL")
    return dict(value)


def _table(raw: Mapping[str, Any], key: str, source: str, *, prefix: str = "") -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{prefix}{key}] must be a table")
    return value


def _str(table: Mapping[str, Any], key: str, source: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: [issuer] {key} must be a non-empty string")
    return value
