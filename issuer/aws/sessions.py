"""boto3 sessions for outbound AWS calls: the default credential chain, or an assumed role per account.

Every AWS client the service makes comes from here, with bounded timeouts and
retries. botocore's standard endpoint settings apply (``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_<SERVICE>``) unless a caller passes an explicit endpoint.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from issuer.aws.failures import aws_failure
from issuer.errors import ConfigError, UpstreamUnavailable

__all__ = ["AccountSessions", "client_config", "default_client", "error_code"]

# Renew assumed-role credentials this long before they expire, so no call starts with lapsing ones.
_EARLY = timedelta(minutes=5)


def client_config(*, connect_timeout: float = 2.0, read_timeout: float = 5.0, max_attempts: int = 2) -> Config:
    """A botocore ``Config`` with bounded timeouts and attempts (standard retry mode)."""
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
    )


def default_client(service: str, *, region: str | None = None, read_timeout: float) -> Any:
    """A boto3 client for ``service`` from the default credential chain, bounded by :func:`client_config`.

    The region is ``region``, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` or the profile's, as
    the AWS CLI picks it. botocore's endpoint settings (``AWS_ENDPOINT_URL*``) apply. Raises the one-line error of
    :func:`~issuer.aws.failures.aws_failure` when boto3 cannot make it (no region, an unknown
    ``AWS_PROFILE``).
    """
    # botocore reads AWS_DEFAULT_REGION and the profile but not AWS_REGION, which the AWS CLI v2
    # and the other SDKs (and every Lambda/ECS task) set: honour it the way the AWS CLI does.
    region = region or os.environ.get("AWS_REGION") or None
    try:
        session = boto3.session.Session()
        return session.client(service, region_name=region, config=client_config(read_timeout=read_timeout))
    except BotoCoreError as exc:
        raise aws_failure(exc, call=f"{service} client", resource="this environment") from exc


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass(slots=True)
class _Account:
    session: Any  # boto3.session.Session
    expires: datetime | None
    clients: dict[tuple[str, str], Any] = field(default_factory=dict)


class AccountSessions:
    """boto3 clients per (account, service, region), through an assumed role when ``assume_role`` is set.

    ``assume_role`` is an ARN template with ``{account_id}``; the assumed session is
    reused until five minutes before it expires. Without it the default credential
    chain serves every account. Thread-safe: clients are made under a lock (boto3
    sessions are not thread-safe) and used from worker threads.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        assume_role: str | None = None,
        config: Config | None = None,
        session_name: str = "machine-issuer",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if assume_role is not None:
            try:
                assume_role.format(account_id="123456789012")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"assume_role {assume_role!r}: only {{account_id}} may be substituted ({exc!r})"
                ) from exc
        self.endpoint_url = endpoint_url
        self.assume_role = assume_role
        self.config = config or client_config()
        self._session_name = session_name
        self._clock = clock
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}

    def client(self, service: str, *, account_id: str, region: str) -> Any:
        """A boto3 client for ``service`` in ``account_id``; raises ``UpstreamUnavailable`` if AssumeRole fails."""
        with self._lock:
            account = self._account(account_id, region)
            client = account.clients.get((service, region))
            if client is None:
                client = account.session.client(
                    service, region_name=region, endpoint_url=self.endpoint_url, config=self.config
                )
                account.clients[(service, region)] = client
            return client

    def _account(self, account_id: str, region: str) -> _Account:
        key = account_id if self.assume_role else ""
        cached = self._accounts.get(key)
        if cached is not None and (cached.expires is None or cached.expires - _EARLY > self._clock()):
            return cached
        if self.assume_role is None:
            fresh = _Account(session=boto3.session.Session(), expires=None)
        else:
            fresh = self._assumed(self.assume_role.format(account_id=account_id), account_id, region)
        self._accounts[key] = fresh
        return fresh

    def _assumed(self, role_arn: str, account_id: str, region: str) -> _Account:
        sts = boto3.session.Session().client(
            "sts", region_name=region, endpoint_url=self.endpoint_url, config=self.config
        )
        try:
            creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=self._session_name)["Credentials"]
        except (ClientError, BotoCoreError) as exc:
            raise UpstreamUnavailable(
                "AWS could not be asked; try again later.",
                code="ec2_lookup_unavailable",
                reason=f"sts:AssumeRole {role_arn} for {account_id}/{region}: {type(exc).__name__}: {exc}",
                retry_after=30,
            ) from exc
        session = boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        expires = creds.get("Expiration")
        return _Account(session=session, expires=expires if isinstance(expires, datetime) else None)
