"""boto3 clients for CA keys held in AWS KMS: one per region, bounded, made on first use.

No endpoint is passed to boto3, so botocore's own endpoint settings apply
(``AWS_ENDPOINT_URL_KMS``, ``AWS_ENDPOINT_URL``, a profile's ``endpoint_url``): moto in
tests and VPC interface endpoints in production need no option of ours. Credentials come
from the default chain (instance profile, ECS task role, environment, profile).

Which region a key is asked in: the region of a key or alias ARN always (a key lives in
one region, and the registry stores key ARNs); for a bare key id or ``alias/...`` the
``region`` given here, else ``AWS_REGION``, else boto3's default (``AWS_DEFAULT_REGION``,
the profile's region).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import boto3
from botocore.config import Config

from ca.kms_client import kms_botocore_config
from issuer.errors import ConfigError

__all__ = ["DEFAULT_POOL_CONNECTIONS", "KmsArn", "KmsClients", "is_key_arn", "parse_kms_arn"]

# asyncio.to_thread runs each signing on the default executor (at most 32 threads): one
# pooled connection per thread, so no signing waits for a connection.
DEFAULT_POOL_CONNECTIONS: Final = 32

_ARN: Final = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):kms:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+):(?P<account>\d{12}):"
    r"(?P<kind>key|alias)/(?P<name>[A-Za-z0-9/_-]+)"
)


@dataclass(frozen=True, slots=True)
class KmsArn:
    """A KMS key or alias ARN, split into its parts."""

    partition: str
    region: str
    account: str
    kind: str  # "key" or "alias"
    name: str  # the key id (a UUID, or mrk-... for a multi-Region key) or the alias name

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:kms:{self.region}:{self.account}:{self.kind}/{self.name}"


def parse_kms_arn(text: str) -> KmsArn | None:
    """The parts of a KMS key or alias ARN, or None when ``text`` is not one."""
    match = _ARN.fullmatch(text.strip())
    if match is None:
        return None
    return KmsArn(**match.groupdict())


def is_key_arn(text: str) -> bool:
    """True for a KMS *key* ARN (an alias ARN is not one: the key it names can change)."""
    parsed = parse_kms_arn(text)
    return parsed is not None and parsed.kind == "key"


class KmsClients:
    """boto3 ``kms`` clients, one per region, made on first use and kept (thread-safe).

    ``config`` defaults to :func:`ca.kms_client.kms_botocore_config` (1 s connect, 3 s read,
    3 attempts in botocore's standard retry mode) with :data:`DEFAULT_POOL_CONNECTIONS`.
    ``session_factory`` makes the boto3 session (tests may pass one with fixed credentials);
    ``env`` is read for ``AWS_REGION`` (default: the process environment).
    """

    def __init__(
        self,
        *,
        region: str | None = None,
        config: Config | None = None,
        session_factory: Callable[[], Any] = boto3.session.Session,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._region = region
        self._config = config or kms_botocore_config(max_pool_connections=DEFAULT_POOL_CONNECTIONS)
        self._session_factory = session_factory
        self._env = os.environ if env is None else env
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[str, Any] = {}

    def region_for(self, key_id: str) -> str:
        """The region to ask about ``key_id`` (see the module docstring).

        Raises :class:`ConfigError` naming the key when no region is known for a bare key id or alias.
        """
        parsed = parse_kms_arn(key_id)
        if parsed is not None:
            return parsed.region
        region = self._region or self._env.get("AWS_REGION") or self._boto_session().region_name
        if not region:
            raise ConfigError(
                f"no AWS region for the KMS key {key_id}: give its ARN, --kms-region, or set AWS_REGION",
                code="kms_region_unknown",
            )
        return str(region)

    def client(self, region: str) -> Any:
        """The ``kms`` client of ``region`` (made once)."""
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                # boto3 sessions are not thread-safe; clients are, once made.
                client = self._boto_session_locked().client("kms", region_name=region, config=self._config)
                self._clients[region] = client
            return client

    def for_key(self, key_id: str) -> Any:
        """The ``kms`` client that reaches ``key_id`` (key id, key ARN, alias name or alias ARN)."""
        return self.client(self.region_for(key_id))

    def _boto_session(self) -> Any:
        with self._lock:
            return self._boto_session_locked()

    def _boto_session_locked(self) -> Any:
        if self._session is None:
            self._session = self._session_factory()
        return self._session
