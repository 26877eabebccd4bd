"""JSON over HTTPS to the issuer, with the standard library (the agent may block).

- https: the server certificate is verified against ``--ca-bundle`` when given,
  else the system trust store.
- plain http: only to a loopback host, unless the person says ``--insecure-http``
  (every issue request carries a secret: a join token, an instance nonce or a
  signed STS request).
- redirects are never followed (a redirect must not carry a proof elsewhere).
- errors come back as ``application/problem+json`` and become :class:`ServerProblem`.
- mTLS: with ``client_certificate`` the machine's current certificate (fullchain)
  and key are presented in the TLS handshake (``issuer-agent renew --auth mtls``).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from clients.errors import ConfigError, ResponseError, ServerProblem, TransportError, UsageError
from clients.wire import PROBLEM_CONTENT_TYPE, REQUEST_ID_HEADER
from clients.wire import ResponseField as R

__all__ = ["USER_AGENT", "ClientCertificate", "IssuerClient", "check_server_url"]

USER_AGENT: Final = "issuer-agent/0.1"
_MAX_BODY: Final = 1024 * 1024


def _is_loopback(host: str) -> bool:
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_server_url(server: str, *, allow_insecure_http: bool) -> str | None:
    """Validate the issuer's base URL; return a warning to show, or None.

    Raises :class:`UsageError`: ``server_url_invalid`` for anything but an
    http(s) URL with a host and no query, ``insecure_transport`` for plain http to
    a non-loopback host without ``allow_insecure_http``.
    """
    parts = urllib.parse.urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(
            f"--server must be an https:// URL with a host and no query, got {server!r}",
            code="server_url_invalid",
        )
    if parts.scheme == "https" or _is_loopback(parts.hostname):
        return None
    if not allow_insecure_http:
        raise UsageError(
            f"refusing to send credentials over plain http to {parts.hostname}; use https:// "
            f"(or --insecure-http for a lab network you trust)",
            code="insecure_transport",
        )
    return f"warning: sending credentials over plain http to {parts.hostname} (--insecure-http)"


@dataclass(frozen=True)
class ClientCertificate:
    """Files of one installed generation to present over mTLS: leaf + chain, and its key."""

    fullchain: Path
    key: Path


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class IssuerClient:
    """POSTs JSON to the issuer at ``server`` (a base URL; a path prefix is kept)."""

    def __init__(
        self,
        server: str,
        *,
        ca_bundle: Path | None = None,
        timeout: float = 30.0,
        allow_insecure_http: bool = False,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        """Raises :class:`UsageError` for a bad URL (or mTLS over plain http), :class:`ConfigError`
        (exit 78) for a ``ca_bundle`` or client certificate that cannot be loaded."""
        self.warning = check_server_url(server, allow_insecure_http=allow_insecure_http)
        self.server = server.rstrip("/")
        self._timeout = timeout
        try:
            context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --ca-bundle {ca_bundle}: {exc}", code="ca_bundle_invalid") from None
        if client_certificate is not None:
            if not self.server.startswith("https://"):
                raise UsageError("--auth mtls needs an https:// issuer", code="mtls_needs_https")
            try:
                context.load_cert_chain(client_certificate.fullchain, client_certificate.key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"cannot load the client certificate {client_certificate.fullchain}: {exc}",
                    code="client_certificate_invalid",
                ) from None
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect())

    def post_json(
        self, path: str, body: Mapping[str, object], *, headers: Mapping[str, str] | None = None
    ) -> dict[str, object]:
        """POST ``body`` to ``server + path`` (with extra ``headers``); return the JSON object of a 2xx answer.

        Raises :class:`ServerProblem` for an error answer, :class:`TransportError`
        (``server_unreachable``, ``server_timeout``) when there is no answer,
        :class:`ConfigError` (``tls_verify_failed``) when the issuer's certificate does
        not verify against the trust given (retrying cannot fix that),
        :class:`ResponseError` when a 2xx answer is not a JSON object.
        """
        return self._exchange(
            "POST",
            path,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    def get_json(self, path: str) -> dict[str, object]:
        """GET ``server + path``; return the JSON object of a 2xx answer. Raises as :meth:`post_json`."""
        return self._exchange("GET", path, data=None, headers={})

    def _exchange(self, method: str, path: str, *, data: bytes | None, headers: Mapping[str, str]) -> dict[str, object]:
        url = self.server + path
        # Our own request id, so that even an error page without one can be matched to the server's logs.
        request_id = secrets.token_hex(8)
        request = urllib.request.Request(  # noqa: S310 - check_server_url allows http(s) only
            url,
            data=data,
            method=method,
            headers={
                "Accept": "application/json, application/problem+json",
                "User-Agent": USER_AGENT,
                **headers,
                REQUEST_ID_HEADER: request_id,
            },
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                raw: bytes = response.read(_MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._problem(exc, request_id=request_id) from None
        except (TimeoutError, socket.timeout):  # distinct classes before Python 3.10
            raise self._timed_out(url) from None
        except urllib.error.URLError as exc:
            raise self._no_answer(url, exc.reason) from None
        except OSError as exc:
            raise self._no_answer(url, exc) from None
        if len(raw) > _MAX_BODY:
            raise ResponseError(f"the answer from {url} is larger than {_MAX_BODY} bytes")
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise ResponseError(f"the answer from {url} is not JSON") from None
        if not isinstance(parsed, dict):
            raise ResponseError(f"the answer from {url} is not a JSON object")
        return parsed

    def _timed_out(self, url: str) -> TransportError:
        return TransportError(f"no answer from the issuer at {url} within {self._timeout:g}s", code="server_timeout")

    def _no_answer(self, url: str, reason: object) -> TransportError | ConfigError:
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return self._timed_out(url)
        if isinstance(reason, ssl.SSLCertVerificationError):
            return ConfigError(
                f"the issuer's TLS certificate at {url} did not verify ({reason.verify_message}); "
                f"pass the CA that signed it with --ca-bundle",
                code="tls_verify_failed",
            )
        text = getattr(reason, "strerror", None) or str(reason)
        return TransportError(f"cannot reach the issuer at {url}: {text}", code="server_unreachable")

    @staticmethod
    def _problem(exc: urllib.error.HTTPError, *, request_id: str) -> ServerProblem:
        status = exc.code
        request_id = (exc.headers.get(REQUEST_ID_HEADER) if exc.headers else None) or request_id
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        try:
            raw = exc.read(_MAX_BODY)
        except OSError:
            raw = b""
        problem: object = None
        content_type = (exc.headers.get_content_type() if exc.headers else "") or ""
        if content_type in (PROBLEM_CONTENT_TYPE, "application/json"):
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = None
        if isinstance(problem, dict):
            detail = _str(problem.get(R.DETAIL)) or _str(problem.get(R.TITLE)) or f"HTTP {status}"
            return ServerProblem(
                detail,
                status=status,
                code=_str(problem.get(R.CODE)),
                request_id=_str(problem.get(R.REQUEST_ID)) or request_id,
                title=_str(problem.get(R.TITLE)),
                retry_after=retry_after,
            )
        if 300 <= status < 400:
            where = exc.headers.get("Location", "?") if exc.headers else "?"
            detail = f"the issuer redirected to {where}; redirects are not followed, use the final URL in --server"
        else:
            first_line = raw.decode("utf-8", errors="replace").strip().splitlines()[:1]
            detail = (first_line[0][:200] if first_line else "") or (exc.reason or f"HTTP {status}")
        return ServerProblem(str(detail), status=status, request_id=request_id, retry_after=retry_after)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
