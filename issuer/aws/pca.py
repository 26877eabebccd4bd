"""boto3 clients for issuing CAs held in AWS Private CA, and the S3 client that reads their CRLs.

As for KMS (:mod:`issuer.aws.kms`): no endpoint is passed to boto3, so botocore's own endpoint
settings apply (``AWS_ENDPOINT_URL_ACM_PCA``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``):
moto in tests and VPC interface endpoints in production need no option of ours. Credentials come
from the default chain. A CA is always named by its ARN, which says its region.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import boto3
from botocore.config import Config

from ca.pca_client import pca_botocore_config
from issuer.aws.sessions import client_config

__all__ = ["DEFAULT_POOL_CONNECTIONS", "PcaArn", "PcaClients", "is_ca_arn", "parse_pca_arn"]

# One pooled connection per worker thread of asyncio.to_thread (at most 32), as for KMS.
DEFAULT_POOL_CONNECTIONS: Final = 32

_ARN: Final = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):acm-pca:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+):(?P<account>\d{12}):"
    r"certificate-authority/(?P<ca_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)


@dataclass(frozen=True, slots=True)
class PcaArn:
    """A Private CA ARN, split into its parts."""

    partition: str
    region: str
    account: str
    ca_id: str

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:acm-pca:{self.region}:{self.account}:certificate-authority/{self.ca_id}"


def parse_pca_arn(text: str) -> PcaArn | None:
    """The parts of a Private CA ARN (``arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/UUID``), or None."""
    match = _ARN.fullmatch(text.strip())
    return None if match is None else PcaArn(**match.groupdict())


def is_ca_arn(text: str) -> bool:
    return parse_pca_arn(text) is not None


class PcaClients:
    """boto3 ``acm-pca`` and ``s3`` clients, one per region each, made on first use and kept (thread-safe).

    ``config`` defaults to :func:`ca.pca_client.pca_botocore_config` (1 s connect, 5 s read, 3
    attempts in botocore's standard retry mode) with :data:`DEFAULT_POOL_CONNECTIONS`; the S3
    client (for the CA's CRL) gets 2 s connect, 5 s read and 2 attempts. ``session_factory``
    makes the boto3 session (tests may pass one with fixed credentials).
    """

    def __init__(
        self,
        *,
        config: Config | None = None,
        session_factory: Callable[[], Any] = boto3.session.Session,
    ) -> None:
        self._config = config or pca_botocore_config(max_pool_connections=DEFAULT_POOL_CONNECTIONS)
        self._session_factory = session_factory
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[tuple[str, str], Any] = {}

    def for_ca(self, ca_arn: str) -> Any:
        """The ``acm-pca`` client that reaches ``ca_arn``. Raises ``ValueError`` for anything but a CA ARN."""
        return self._client("acm-pca", _region(ca_arn), self._config)

    def s3_for_ca(self, ca_arn: str) -> Any:
        """An ``s3`` client in the CA's region (Private CA writes its CRL to a bucket there)."""
        return self._client("s3", _region(ca_arn), client_config(read_timeout=5.0))

    def _client(self, service: str, region: str, config: Config) -> Any:
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                if self._session is None:
                    self._session = self._session_factory()
                # boto3 sessions are not thread-safe; clients are, once made.
                client = self._session.client(service, region_name=region, config=config)
                self._clients[(service, region)] = client
            return client


def _region(ca_arn: str) -> str:
    parsed = parse_pca_arn(ca_arn)
    if parsed is None:
        raise ValueError(
            f"{ca_arn!r} is not an AWS Private CA ARN (arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID)"
        )
    return parsed.region
