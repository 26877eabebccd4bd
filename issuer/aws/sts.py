"""The one outbound call of IAM attestation: forward a validated request to STS.

:class:`AiohttpStsCaller` sends exactly what ``validate_sts_request`` approved (the
forwarded headers, the body bytes) to the STS host of the request, or to the
configured override for that host, follows no redirect, gives up after
``timeout`` seconds, and reads the answer with :func:`parse_sts_response`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from issuer.attest.sts import ValidatedStsRequest
from issuer.attest.sts_response import MAX_RESPONSE_BYTES, CallerIdentity, parse_sts_response, sts_unavailable
from issuer.errors import ConfigError, IssuerError
from issuer.observability.seams import NullObserver, UpstreamObserver, UpstreamOutcome

__all__ = ["AiohttpStsCaller"]


class AiohttpStsCaller:
    """``StsCaller`` over a caller-owned ``aiohttp.ClientSession`` (shared, keep-alive).

    ``endpoint_overrides`` maps an STS hostname to a base URL to send its requests to
    instead of ``https://<host>/`` (moto in tests, a VPC endpoint); the client's ``Host``
    header is kept, so the signature still verifies. The session must not be set to
    raise for status; this class reads every status itself.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        endpoint_overrides: Mapping[str, str] = MappingProxyType({}),
        timeout: float = 5.0,
        observer: UpstreamObserver | None = None,
    ) -> None:
        for host, base in endpoint_overrides.items():
            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ConfigError(f"aws.sts.endpoint_overrides[{host!r}]: {base!r} is not an http(s) base URL")
        self._session = session
        self._overrides = {host.lower(): base.rstrip("/") + "/" for host, base in endpoint_overrides.items()}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._observer = observer or NullObserver()

    def url_for(self, host: str) -> str:
        """Where a request for STS host ``host`` is sent."""
        return self._overrides.get(host, f"https://{host}/")

    async def get_caller_identity(self, request: ValidatedStsRequest) -> CallerIdentity:
        """Forward ``request`` and return the caller's identity.

        Raises ``Unauthorized(code="sts_rejected")`` when STS refuses the credentials or
        signature, ``UpstreamUnavailable(code="sts_unavailable")`` for anything else.
        Each call is reported to the ``observer`` with its time and outcome.
        """
        started = time.perf_counter()
        try:
            identity = await self._call(request)
        except IssuerError as exc:
            outcome: UpstreamOutcome = "refused" if exc.status_hint < 500 else "error"
            self._observer.upstream("sts", "GetCallerIdentity", outcome, time.perf_counter() - started, exc.code)
            raise
        self._observer.upstream("sts", "GetCallerIdentity", "ok", time.perf_counter() - started, None)
        return identity

    async def _call(self, request: ValidatedStsRequest) -> CallerIdentity:
        url = self.url_for(request.host)
        try:
            async with self._session.post(
                url,
                data=request.request.body,
                headers=CIMultiDict(request.forward_headers),
                # Only what was validated goes out: no client library defaults.
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
                allow_redirects=False,
                raise_for_status=False,
                timeout=self._timeout,
            ) as response:
                status = response.status
                body = await _read_capped(response)
        except TimeoutError:  # also asyncio's and aiohttp's timeouts (3.11+)
            raise sts_unavailable(f"no answer from {url} within {self._timeout.total}s") from None
        except aiohttp.ClientError as exc:
            raise sts_unavailable(f"{url}: {type(exc).__name__}: {exc}") from None
        return parse_sts_response(status, body)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(8192):
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise sts_unavailable(f"STS answer larger than {MAX_RESPONSE_BYTES} bytes")
    return bytes(body)
