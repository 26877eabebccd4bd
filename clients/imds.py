"""IMDSv2 client: fetch this instance's identity document and its AWS signature.

A session token from ``PUT /latest/api/token`` goes with every GET. What the service says is
followed as the EC2 documentation describes it:

- 401 to a GET: the token expired (or the service restarted): get a new token, try once more;
- 503 (throttled, or not ready at boot), any other 5xx and 429, timeouts and refused
  connections: try again after exponential backoff with full jitter; when that goes on for
  ``ImdsPatience.max_wait`` (two minutes by default) give up with :class:`ImdsUnavailable`,
  exit 75: a temporary failure, never a refusal;
- no answer to the token PUT while a GET without a token is answered: the PUT's reply died
  on the way, the instance's PUT response hop limit (1 by default on older instances) is too
  low for a container. With ``http-tokens optional`` the document is then read without a token
  (IMDSv1), as the AWS SDKs do (unless ``AWS_EC2_METADATA_V1_DISABLED=true``); with tokens
  required the message says which setting to raise;
- 403/404/405 to the PUT: IMDSv2 is off, or the service is IMDSv1-only: a refusal (exit 1).

Each request's timeout is short (2 s by default) because the service is link-local. Proxies
are never used (the endpoint is link-local) and redirects never followed. Waiting, the clock
and the jitter are injectable so that tests run in milliseconds.
"""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from clients.errors import ImdsError, ImdsUnavailable, UsageError

__all__ = [
    "DEFAULT_ENDPOINT",
    "DOCUMENT_PATH",
    "IPV6_ENDPOINT",
    "RSA2048_PATH",
    "TOKEN_HEADER",
    "TOKEN_PATH",
    "TOKEN_TTL_HEADER",
    "ImdsClient",
    "ImdsPatience",
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
_RETRIED = frozenset({429, 500, 502, 503, 504})
T = TypeVar("T")


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


@dataclass(frozen=True)
class ImdsPatience:
    """How long to keep trying a metadata service that answers 5xx or not at all, and how often."""

    max_wait: float = 120.0
    base: float = 0.5
    cap: float = 10.0

    def delay(self, failures: int, *, jitter: float) -> float:
        """Seconds before the next try after ``failures`` failures in a row (full jitter, at least 50 ms)."""
        return max(0.05, min(max(jitter, 0.0), 1.0) * min(self.cap, self.base * 2.0 ** min(failures, 32)))


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

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 2.0,
        token_ttl: int = 60,
        patience: ImdsPatience | None = None,
        allow_v1_fallback: bool = True,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"the metadata endpoint must be an http:// URL, got {endpoint!r}", code="imds_endpoint_invalid"
            )
        self.endpoint = endpoint.rstrip("/")
        self._timeout = timeout
        self._token_ttl = token_ttl
        self._patience = patience or ImdsPatience()
        self._allow_v1 = allow_v1_fallback
        self._log = log or (lambda _: None)
        self._sleep = sleep
        self._monotonic = monotonic
        self._jitter = jitter
        # An empty ProxyHandler: HTTP_PROXY must never see a link-local metadata request.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def instance_identity(self) -> InstanceIdentity:
        """Fetch the document and its ``rsa2048`` signature, retrying as the module docstring says.

        Raises :class:`ImdsUnavailable` (exit 75; codes ``imds_unreachable``, ``imds_timeout``,
        ``imds_hop_limit``, ``imds_http_error``) when the service kept failing for
        ``patience.max_wait``, and :class:`ImdsError` (``imds_v2_unavailable``,
        ``imds_token_rejected``, ``imds_not_found``, ``imds_http_error``, ``imds_bad_document``)
        for an answer that waiting does not change; each message says what to do.
        """
        return self.patiently(self._instance_identity_once)

    def patiently(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` until it returns, retrying its :class:`ImdsUnavailable` with backoff for
        ``patience.max_wait`` (then raised, saying how long it kept failing)."""
        deadline = self._monotonic() + self._patience.max_wait
        failures = 0
        while True:
            try:
                return attempt()
            except ImdsUnavailable as exc:
                delay = self._patience.delay(failures, jitter=self._jitter())
                failures += 1
                if self._monotonic() + delay > deadline:
                    raise ImdsUnavailable(
                        f"{exc.message} (still failing after {failures} "
                        f"{'try' if failures == 1 else 'tries'} in {self._patience.max_wait:g}s)",
                        code=exc.code,
                    ) from None
                self._log(f"instance metadata service: {exc.message}; trying again in {delay:.1f}s")
                self._sleep(delay)

    def fetch(self, path: str) -> bytes:
        """One GET of ``path`` with a fresh session token (a 401 gets a new one once); no retries."""
        body, _ = self._get_refreshing(path, self._token_or_v1())
        return body

    def _instance_identity_once(self) -> InstanceIdentity:
        token = self._token_or_v1()
        document_bytes, token = self._get_refreshing(DOCUMENT_PATH, token)
        rsa2048, token = self._get_refreshing(RSA2048_PATH, token)
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

    def _get_refreshing(self, path: str, token: str | None) -> tuple[bytes, str | None]:
        """GET ``path``; on 401 get a new token and try once more (the token expired)."""
        try:
            return self.get(path, token=token), token
        except ImdsError as exc:
            if exc.code != "imds_token_rejected" or token is None:
                raise
        self._log(f"instance metadata service: the session token was rejected for {path}; getting a new one")
        token = self.session_token()
        try:
            return self.get(path, token=token), token
        except ImdsError as exc:
            if exc.code == "imds_token_rejected":
                raise ImdsError(f"{exc.message}, a new token too", code=exc.code) from None
            raise

    def _token_or_v1(self) -> str | None:
        """A session token, or None to read without one (IMDSv1) when the token's reply cannot reach us."""
        try:
            return self.session_token()
        except ImdsUnavailable as exc:
            if exc.code != "imds_timeout":
                raise
            put_failure = exc
        # No answer to the PUT: is the service there at all? Only the PUT's reply is hop-limited.
        try:
            self.get(DOCUMENT_PATH, token=None)
        except ImdsError as probe:
            if probe.code == "imds_token_rejected":  # tokens required: the hop limit is the whole problem
                raise ImdsUnavailable(
                    f"the instance metadata service at {self.endpoint} answers, but its reply to the IMDSv2 token "
                    f"request (PUT {TOKEN_PATH}) never arrives: the instance's PUT response hop limit is too low "
                    f"for this container; raise it: {_HOP_LIMIT}",
                    code="imds_hop_limit",
                ) from None
            raise put_failure from None
        if not self._allow_v1:
            raise ImdsError(
                f"the instance metadata service at {self.endpoint} answers without a token, but its reply to the "
                f"IMDSv2 token request never arrives (hop limit too low for this container) and "
                f"AWS_EC2_METADATA_V1_DISABLED=true forbids IMDSv1; raise the hop limit: {_HOP_LIMIT}",
                code="imds_hop_limit",
            )
        self._log(
            f"warning: no reply to the IMDSv2 token request from {self.endpoint} (PUT response hop limit too low "
            f"for this container?); reading the identity document with IMDSv1. To use IMDSv2: {_HOP_LIMIT}"
        )
        return None

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

    def get(self, path: str, *, token: str | None) -> bytes:
        """GET ``path`` (with the session token unless None); return the body or raise :class:`ImdsError`."""
        request = urllib.request.Request(  # noqa: S310 - the endpoint is checked to be http(s)
            self.endpoint + path, headers={TOKEN_HEADER: token} if token is not None else {}
        )
        try:
            return self._send(request)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise ImdsError(
                    f"the instance metadata service at {self.endpoint} rejected the session token for "
                    f"{path} (HTTP 401)",
                    code="imds_token_rejected",
                ) from None
            if exc.code == 404:
                raise ImdsError(
                    f"the instance metadata service at {self.endpoint} has no {path} (HTTP 404)",
                    code="imds_not_found",
                ) from None
            raise self._http_error(exc, path) from None

    def _send(self, request: urllib.request.Request) -> bytes:
        """Return the body of a 2xx answer; raise HTTPError for others, ImdsUnavailable for no answer."""
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

    def _unreachable(self, reason: object) -> ImdsUnavailable:
        return ImdsUnavailable(
            f"cannot reach the instance metadata service at {self.endpoint} ({reason}); are you on EC2? "
            f"is the endpoint enabled (--http-endpoint enabled) and, in containers, the hop limit ≥ 2? "
            f"Use --imds-endpoint or AWS_EC2_METADATA_SERVICE_ENDPOINT for another address",
            code="imds_unreachable",
        )

    def _timeout_error(self, what: str) -> ImdsUnavailable:
        return ImdsUnavailable(
            f"no answer from the instance metadata service within {self._timeout:g}s ({what}); are you on "
            f"EC2? In a container the IMDSv2 token reply needs a hop limit of 2 or more: {_HOP_LIMIT}",
            code="imds_timeout",
        )

    def _http_error(self, exc: urllib.error.HTTPError, path: str) -> ImdsError:
        message = f"the instance metadata service at {self.endpoint} answered HTTP {exc.code} for {path}"
        if exc.code in _RETRIED:
            return ImdsUnavailable(message, code="imds_http_error")
        return ImdsError(message, code="imds_http_error")
