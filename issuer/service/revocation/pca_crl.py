"""The CRL an AWS Private CA publishes itself: read from its S3 bucket, verified, cached.

Private CA signs its own CRL and writes it (DER) to the bucket of the CA's
``RevocationConfiguration.CrlConfiguration``, at ``crl/<CA id>.crl`` (or ``<CustomPath>/<CA id>.crl``),
about 30 minutes after a revocation and again before the previous one expires. The service
never signs a CRL for such a CA (``signs_crls`` is False); it serves this one — in
``GET /v1/crl?issuer=…`` and, beside its own, in the CRL bundle the Lambda authorizer
verifies — after checking that it is the CA's (issuer name and signature, with the registered
CA certificate). What S3 holds is not trusted: a CRL that does not verify is never served.

Reads are cached for ``ttl`` (default 5 minutes: Private CA publishes at most every few
minutes); when a read fails, the last good CRL is served until its ``nextUpdate``.
Partitioned CRLs (``CrlType = PARTITIONED``) are not read: there is no one object to serve.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from cryptography import x509

from ca.crl import load_verified_crl
from ca.errors import CAError
from ca.pca_client import PcaClient, pca_describe
from issuer.aws.failures import aws_failure
from issuer.aws.pca import parse_pca_arn
from issuer.aws.sessions import error_code
from issuer.errors import IssuerError, UpstreamUnavailable
from issuer.service.ca.registry import IssuerView
from issuer.service.ca.signers import PCA_PREFIX, pca_ca_arn

__all__ = ["MAX_CRL_BYTES", "CrlLocation", "PcaCrlCache", "PcaCrlClients", "PcaCrls", "crl_location", "pca_crl"]

log = logging.getLogger("issuer.revocation")

MAX_CRL_BYTES: Final = 64 * 1024 * 1024  # a complete CRL of a million revocations is ~40 MB
DEFAULT_TTL: Final = timedelta(minutes=5)
DEFAULT_TIMEOUT: Final = 10.0


class PcaCrlClients(Protocol):
    """The clients :func:`pca_crl` needs (``issuer.aws.pca.PcaClients`` is one)."""

    def for_ca(self, ca_arn: str) -> PcaClient: ...

    def s3_for_ca(self, ca_arn: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class CrlLocation:
    """Where Private CA writes a CA's complete CRL."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def crl_location(authority: Mapping[str, Any], *, ca_id: str) -> CrlLocation | None:
    """The CRL object of a CA as ``DescribeCertificateAuthority`` describes it; None when it publishes none here."""
    config = (authority.get("RevocationConfiguration") or {}).get("CrlConfiguration") or {}
    if not config.get("Enabled") or not config.get("S3BucketName"):
        return None
    if str(config.get("CrlType") or "COMPLETE") != "COMPLETE":
        return None
    folder = str(config.get("CustomPath") or "crl").strip("/")
    return CrlLocation(bucket=str(config["S3BucketName"]), key=f"{folder}/{ca_id}.crl")


@dataclass(slots=True)
class _Entry:
    fetched_at: datetime
    crl: x509.CertificateRevocationList | None


class PcaCrlCache:
    """The last CRL read per CA (and when), for :func:`pca_crl`. One per process."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, ca_arn: str) -> _Entry | None:
        return self._entries.get(ca_arn)

    def put(self, ca_arn: str, entry: _Entry) -> None:
        self._entries[ca_arn] = entry

    def lock(self, ca_arn: str) -> asyncio.Lock:
        return self._locks.setdefault(ca_arn, asyncio.Lock())


async def pca_crl(
    ca_arn: str,
    *,
    issuer_certificate: x509.Certificate,
    clients: PcaCrlClients,
    cache: PcaCrlCache,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    limit: float = DEFAULT_TIMEOUT,
) -> x509.CertificateRevocationList | None:
    """The CRL the Private CA ``ca_arn`` published, verified against ``issuer_certificate``; None when it
    publishes none (CRLs disabled, partitioned, or not written yet).

    A CRL read is kept for ``ttl`` (concurrent callers share one read), each read within ``limit`` seconds. Raises
    :class:`UpstreamUnavailable` ``crl_unavailable`` when it cannot be read or does not verify and
    no earlier good CRL is still before its ``nextUpdate``.
    """
    cached = cache.get(ca_arn)
    if cached is not None and now - cached.fetched_at < ttl:
        return cached.crl
    async with cache.lock(ca_arn):
        cached = cache.get(ca_arn)
        if cached is not None and now - cached.fetched_at < ttl:
            return cached.crl
        try:
            async with asyncio.timeout(limit):
                crl = await asyncio.to_thread(_read, ca_arn, issuer_certificate, clients)
        except (CAError, IssuerError, ValueError, TimeoutError) as exc:
            reason = f"CRL of AWS Private CA {ca_arn}: {type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
            last = cached.crl if cached is not None else None
            if last is not None and (last.next_update_utc is None or last.next_update_utc > now):
                log.warning("serving the last good CRL (until its nextUpdate): %s", reason)
                return last
            raise UpstreamUnavailable(
                "The CRL of this issuing CA (AWS Private CA) cannot be read now.",
                code="crl_unavailable",
                reason=reason,
                retry_after=30,
            ) from exc
        if crl is None:
            return None  # not cached: a CRL enabled or written a moment from now is served at once
        cache.put(ca_arn, _Entry(fetched_at=now, crl=crl))
        if crl.next_update_utc is not None and crl.next_update_utc <= now:
            log.warning("the CRL AWS Private CA %s published is past its nextUpdate; serving it anyway", ca_arn)
        return crl


def _read(
    ca_arn: str, issuer_certificate: x509.Certificate, clients: PcaCrlClients
) -> x509.CertificateRevocationList | None:
    parsed = parse_pca_arn(ca_arn)
    if parsed is None:
        raise ValueError(f"{ca_arn!r} is not an AWS Private CA ARN")
    location = crl_location(pca_describe(clients.for_ca(ca_arn), ca_arn, public=False), ca_id=parsed.ca_id)
    if location is None:
        return None
    s3 = clients.s3_for_ca(ca_arn)
    try:
        reply = s3.get_object(Bucket=location.bucket, Key=location.key)
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            return None  # enabled, not written yet
        raise aws_failure(exc, call="s3:GetObject", resource=location.uri) from exc
    except BotoCoreError as exc:
        raise aws_failure(exc, call="s3:GetObject", resource=location.uri) from exc
    body = reply["Body"]
    try:
        if int(reply.get("ContentLength") or 0) > MAX_CRL_BYTES:
            raise ValueError(f"{location.uri} is larger than {MAX_CRL_BYTES} bytes")
        data = body.read(MAX_CRL_BYTES + 1)
    except (ClientError, BotoCoreError) as exc:
        raise aws_failure(exc, call="s3:GetObject", resource=location.uri) from exc
    finally:
        body.close()
    try:
        return load_verified_crl(data, issuer=issuer_certificate)
    except ValueError as exc:
        raise ValueError(f"{location.uri} is not this CA's CRL: {exc}") from None


class PcaCrls:
    """The upstream CRL source of :class:`~issuer.service.revocation.lists.RevocationLists`: the CRL of a
    registered issuer whose key_ref is ``pca:<CA ARN>`` (None for any other issuer)."""

    def __init__(
        self,
        *,
        clients: PcaCrlClients | None = None,
        clock: Callable[[], datetime],
        ttl: timedelta = DEFAULT_TTL,
    ) -> None:
        self._clients = clients
        self._clock = clock
        self._ttl = ttl
        self._cache = PcaCrlCache()

    async def __call__(self, view: IssuerView) -> x509.CertificateRevocationList | None:
        if not view.record.key_ref.startswith(PCA_PREFIX):
            return None
        arn = pca_ca_arn(view.record.key_ref, owner=f"issuing CA {view.record.subject}")
        if self._clients is None:
            from issuer.aws.pca import PcaClients

            self._clients = PcaClients()
        return await pca_crl(
            arn,
            issuer_certificate=view.certificate,
            clients=self._clients,
            cache=self._cache,
            now=self._clock(),
            ttl=self._ttl,
        )
