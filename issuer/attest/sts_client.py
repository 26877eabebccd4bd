"""The one outbound call of IAM attestation: forward a validated request to STS.

``StsCaller`` is the seam the service depends on; ``AiohttpStsCaller`` is the real one.
It sends exactly what ``validate_sts_request`` approved (the forwarded headers, the
body bytes) to the STS host of the request, or to the configured override for that
host, follows no redirect, gives up after ``timeout`` seconds, and trusts nothing in the
answer but a 200 ``GetCallerIdentityResponse``.

Errors::

    Unauthorized(code="sts_rejected")            STS refused the signature or credentials (401)
    UpstreamUnavailable(code="sts_unavailable")  throttling, 5xx, timeout, connection error,
                                                 redirect, or an answer that is not STS's (503)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from issuer.attest.sts import ValidatedStsRequest
from issuer.errors import ConfigError, Unauthorized, UpstreamUnavailable

__all__ = ["AiohttpStsCaller", "CallerIdentity", "StsCaller", "parse_sts_response"]

STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
MAX_RESPONSE_BYTES = 64 * 1024
# STS error codes that mean "these credentials / this signature are not good": the
# client's fault, 401. Everything else that is not a 200 is the upstream's problem, 503.
REJECTED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "InvalidToken",
        "MissingAuthenticationToken",
        "NotAuthorized",
        "RegionDisabledException",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """What STS said the signer is: ``arn`` as returned, the account and the unique ID."""

    arn: str
    account_id: str
    user_id: str


class StsCaller(Protocol):
    async def get_caller_identity(self, request: ValidatedStsRequest) -> CallerIdentity:
        """Send ``request`` to STS once; raise ``Unauthorized`` or ``UpstreamUnavailable``."""
        ...


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
    ) -> None:
        for host, base in endpoint_overrides.items():
            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ConfigError(f"aws.sts.endpoint_overrides[{host!r}]: {base!r} is not an http(s) base URL")
        self._session = session
        self._overrides = {host.lower(): base.rstrip("/") + "/" for host, base in endpoint_overrides.items()}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def url_for(self, host: str) -> str:
        """Where a request for STS host ``host`` is sent."""
        return self._overrides.get(host, f"https://{host}/")

    async def get_caller_identity(self, request: ValidatedStsRequest) -> CallerIdentity:
        """Forward ``request`` and return the caller's identity.

        Raises ``Unauthorized(code="sts_rejected")`` when STS refuses the credentials or
        signature, ``UpstreamUnavailable(code="sts_unavailable")`` for anything else.
        """
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
            raise _unavailable(f"no answer from {url} within {self._timeout.total}s") from None
        except aiohttp.ClientError as exc:
            raise _unavailable(f"{url}: {type(exc).__name__}: {exc}") from None
        return parse_sts_response(status, body)


def parse_sts_response(status: int, body: bytes) -> CallerIdentity:
    """Turn STS's answer into a ``CallerIdentity``; see the module docstring for errors."""
    if status == 200:
        root = _xml(body)
        result = _child(root, "GetCallerIdentityResult") if _is(root, "GetCallerIdentityResponse") else None
        fields = {name: _text(result, name) for name in ("Arn", "Account", "UserId")} if result else {}
        arn, account, user_id = fields.get("Arn"), fields.get("Account"), fields.get("UserId")
        if not (arn and account and user_id):
            raise _unavailable(f"200 without a GetCallerIdentityResponse: {body[:300]!r}")
        return CallerIdentity(arn=arn, account_id=account, user_id=user_id)
    if 300 <= status < 400:
        raise _unavailable(f"STS answered {status}; redirects are not followed")
    code = _error_code(body) if 400 <= status < 500 else None
    if code in REJECTED_CODES:
        raise Unauthorized(
            "STS did not accept the signed request",
            code="sts_rejected",
            reason=f"sts_rejected: STS {status} {code}",
        )
    raise _unavailable(f"STS {status} {code or ''}: {body[:300]!r}")


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(8192):
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise _unavailable(f"STS answer larger than {MAX_RESPONSE_BYTES} bytes")
    return bytes(body)


def _unavailable(reason: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        "STS could not be asked to verify the signed request; try again later",
        code="sts_unavailable",
        reason=f"sts_unavailable: {reason}",
    )


def _xml(body: bytes) -> ET.Element | None:
    # STS documents have no DOCTYPE, entities, comments or CDATA: refusing "<!" outright
    # rules out entity expansion and external entities before the parser sees a byte.
    if b"<!" in body or len(body) > MAX_RESPONSE_BYTES:
        return None
    try:
        return ET.fromstring(body)  # noqa: S314 - see above
    except ET.ParseError:
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _is(element: ET.Element | None, name: str) -> bool:
    return element is not None and element.tag == f"{{{STS_NAMESPACE}}}{name}"


def _child(parent: ET.Element | None, name: str) -> ET.Element | None:
    """The one child ``name`` in the STS namespace; ``None`` if absent or repeated."""
    if parent is None:
        return None
    found = parent.findall(f"{{{STS_NAMESPACE}}}{name}")
    return found[0] if len(found) == 1 else None


def _text(parent: ET.Element, name: str) -> str | None:
    child = _child(parent, name)
    text = (child.text or "").strip() if child is not None else ""
    return text if child is not None and len(child) == 0 and text else None


def _error_code(body: bytes) -> str | None:
    """``Error/Code`` of an ``ErrorResponse`` (STS nests it directly, moto under ``Errors``)."""
    root = _xml(body)
    if root is None or _local(root.tag) != "ErrorResponse":
        return None
    codes = [
        (code.text or "").strip()
        for error in root.iter()
        if _local(error.tag) == "Error"
        for code in error
        if _local(code.tag) == "Code"
    ]
    return codes[0] if len(codes) == 1 and codes[0] else None
