"""IMDSv2 client: fetch this instance's identity document and its AWS signature.

IMDSv2 only: a session token from ``PUT /latest/api/token`` goes with every GET.
Timeouts are short (2 s by default) because the service is link-local: if it does
not answer at once it is not there, or a container's hop limit swallows the reply.
Proxies are never used (the endpoint is link-local) and redirects never followed.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from clients.errors import ImdsError, UsageError

__all__ = [
    "DEFAULT_ENDPOINT",
    "DOCUMENT_PATH",
    "IPV6_ENDPOINT",
    "RSA2048_PATH",
    "TOKEN_HEADER",
    "TOKEN_PATH",
    "TOKEN_TTL_HEADER",
    "ImdsClient",
    "InstanceIdentity",
    "resolve_endpoint",
]

DEFAULT_ENDPOINT: Final = "http://169.254.169.254"
IPV6_ENDPOINT: Final = "http://[fd00:ec2::254]"
TOKEN_PATH: Final = "/latest/api/token"
DOCUMENT_PATH: Final = "/latest/dynamic/instance-identity/document"
RSA2048_PATH: Final = "/latest/dynamic/instance-identity/rsa2048"
TOKEN_TTL_HEADER: Final = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER: Final = "X-aws-ec2-metadata-token"

_MAX_BODY = 64 * 1024
_ENABLE_V2 = (
    "aws ec2 modify-instance-metadata-options --instance-id <id> --http-endpoint enabled --http-tokens required"
)
_HOP_LIMIT = "aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2"


@dataclass(frozen=True)
class InstanceIdentity:
    """The identity document exactly as IMDS served it, and its ``rsa2048`` signature (base64 text).

    ``instance_id``, ``account_id`` and ``region`` are read from the document for
    messages only; the issuer verifies the signed bytes, never these copies.
    """

    document: str
    rsa2048: str
    instance_id: str | None = None
    account_id: str | None = None
    region: str | None = None


def resolve_endpoint(explicit: str | None, env: Mapping[str, str]) -> str:
    """The IMDS base URL: ``explicit``, else ``AWS_EC2_METADATA_SERVICE_ENDPOINT``, else
    the IPv6 endpoint when ``AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6``, else the IPv4 one
    (the same precedence as botocore)."""
    endpoint = explicit or env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
    if not endpoint:
        mode = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "").strip().lower()
        endpoint = IPV6_ENDPOINT if mode == "ipv6" else DEFAULT_ENDPOINT
    return endpoint.rstrip("/")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class ImdsClient:
    """Talks IMDSv2 to ``endpoint`` (e.g. ``http://169.254.169.254`` or ``http://[fd00:ec2::254]``)."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 2.0, token_ttl: int = 60) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"the metadata endpoint must be an http:// URL, got {endpoint!r}", code="imds_endpoint_invalid"
            )
        self.endpoint = endpoint.rstrip("/")
        self._timeout = timeout
        self._token_ttl = token_ttl
        # An empty ProxyHandler: HTTP_PROXY must never see a link-local metadata request.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def instance_identity(self) -> InstanceIdentity:
        """Fetch the document and its ``rsa2048`` signature with one session token.

        Raises :class:`ImdsError` (codes ``imds_unreachable``, ``imds_timeout``,
        ``imds_v2_unavailable``, ``imds_token_rejected``, ``imds_not_found``,
        ``imds_http_error``, ``imds_bad_document``) with a message that says what to do.
        """
        token = self.session_token()
        document_bytes = self.get(DOCUMENT_PATH, token=token)
        rsa2048 = self.get(RSA2048_PATH, token=token)
        try:
            document = document_bytes.decode("utf-8")
            signature = rsa2048.decode("ascii")
            fields = json.loads(document)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ImdsError(
                f"the identity document or signature from {self.endpoint} is malformed: {exc}",
                code="imds_bad_document",
            ) from None
        if not isinstance(fields, dict):
            raise ImdsError(
                f"the identity document from {self.endpoint} is not a JSON object", code="imds_bad_document"
            )

        def text(key: str) -> str | None:
            value = fields.get(key)
            return value if isinstance(value, str) else None

        return InstanceIdentity(
            # Sent exactly as served: the signature covers these bytes, not a re-serialisation.
            document=document,
            rsa2048=signature,
            instance_id=text("instanceId"),
            account_id=text("accountId"),
            region=text("region"),
        )

    def session_token(self) -> str:
        """Return an IMDSv2 session token (``PUT /latest/api/token``); raise :class:`ImdsError`."""
        request = urllib.request.Request(  # noqa: S310 - the endpoint is checked to be http(s)
            self.endpoint + TOKEN_PATH,
            method="PUT",
            headers={TOKEN_TTL_HEADER: str(self._token_ttl)},
        )
        try:
            body = self._send(request)
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 404, 405):
                raise ImdsError(
                    f"the instance metadata service at {self.endpoint} refused the IMDSv2 token request "
                    f"(PUT {TOKEN_PATH} answered HTTP {exc.code}): IMDSv2 is required. It answers 403 when "
                    f"the metadata endpoint is disabled or a proxy added X-Forwarded-For; 404/405 mean an "
                    f"IMDSv1-only service. On EC2 enable it with: {_ENABLE_V2}",
                    code="imds_v2_unavailable",
                ) from None
            raise self._http_error(exc, TOKEN_PATH) from None
        token = body.decode("ascii", errors="replace").strip()
        if not token:
            raise ImdsError(
                f"the instance metadata service at {self.endpoint} returned an empty session token",
                code="imds_http_error",
            )
        return token

    def get(self, path: str, *, token: str) -> bytes:
        """GET ``path`` with the session token; return the body or raise :class:`ImdsError`."""
        request = urllib.request.Request(  # noqa: S310 - the endpoint is checked to be http(s)
            self.endpoint + path, headers={TOKEN_HEADER: token}
        )
        try:
            return self._send(request)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise ImdsError(
                    f"the instance metadata service at {self.endpoint} rejected the session token for "
                    f"{path} (HTTP 401); it may have expired, try again",
                    code="imds_token_rejected",
                ) from None
            if exc.code == 404:
                raise ImdsError(
                    f"the instance metadata service at {self.endpoint} has no {path} (HTTP 404)",
                    code="imds_not_found",
                ) from None
            raise self._http_error(exc, path) from None

    def _send(self, request: urllib.request.Request) -> bytes:
        """Return the body of a 2xx answer; raise HTTPError for others, ImdsError for no answer."""
        what = f"{request.get_method()} {request.full_url}"
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                body: bytes = response.read(_MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise
        except (TimeoutError, socket.timeout) as exc:  # distinct classes before Python 3.10
            raise self._timeout_error(what) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise self._timeout_error(what) from exc
            raise self._unreachable(exc.reason) from exc
        except OSError as exc:
            raise self._unreachable(exc) from exc
        if len(body) > _MAX_BODY:
            raise ImdsError(f"{what}: answer larger than {_MAX_BODY} bytes", code="imds_http_error")
        return body

    def _unreachable(self, reason: object) -> ImdsError:
        return ImdsError(
            f"cannot reach the instance metadata service at {self.endpoint} ({reason}); are you on EC2? "
            f"is the endpoint enabled (--http-endpoint enabled) and, in containers, the hop limit ≥ 2? "
            f"Use --imds-endpoint or AWS_EC2_METADATA_SERVICE_ENDPOINT for another address",
            code="imds_unreachable",
        )

    def _timeout_error(self, what: str) -> ImdsError:
        return ImdsError(
            f"no answer from the instance metadata service within {self._timeout:g}s ({what}); are you on "
            f"EC2? In a container the IMDSv2 token reply needs a hop limit of 2 or more: {_HOP_LIMIT}",
            code="imds_timeout",
        )

    def _http_error(self, exc: urllib.error.HTTPError, path: str) -> ImdsError:
        return ImdsError(
            f"the instance metadata service at {self.endpoint} answered HTTP {exc.code} for {path}",
            code="imds_http_error",
        )
