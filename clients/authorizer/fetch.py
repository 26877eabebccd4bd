"""One GET of a source (https, loopback http, or S3 with the authorizer's own SigV4), with ``If-None-Match``.

Redirects are never followed (one could downgrade to http or carry a signed request elsewhere);
a body larger than the source's limit, or shorter than its ``Content-Length``, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

from .errors import SourceError
from .settings import AwsEnvironment, Fetching, Source, is_loopback

__all__ = ["Fetched", "fetch", "sigv4_headers"]

EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()


def sigv4_headers(
    *,
    url: str,
    aws: AwsEnvironment,
    now: datetime,
    signed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers that sign a bodiless S3 ``GET url`` with AWS Signature Version 4.

    ``url`` must already be URI-encoded as it will be sent (S3 canonical URIs are not encoded
    twice). ``signed`` adds headers to sign; ``If-None-Match`` may be sent unsigned.
    """
    parts = urllib.parse.urlsplit(url)
    amz_date = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": parts.netloc, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    headers.update({name.lower(): value for name, value in (signed or {}).items()})
    if aws.session_token:
        headers["x-amz-security-token"] = aws.session_token
    names = sorted(headers)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(sorted(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in pairs))
    canonical_headers = "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names)
    canonical = "\n".join(["GET", parts.path or "/", query, canonical_headers, ";".join(names), EMPTY_SHA256])
    scope = f"{amz_date[:8]}/{aws.region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + aws.secret_access_key).encode()
    for part in (amz_date[:8], aws.region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={aws.access_key_id}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )
    return headers


def _uri_encode(text: str, safe: str = "-_.~") -> str:
    """SigV4's URI encoding: everything but RFC 3986 unreserved characters (and ``safe``) as %XX."""
    return urllib.parse.quote(text, safe=safe)


def _s3_url(source: Source, aws: AwsEnvironment) -> str:
    key = _uri_encode(source.key, safe="/-_.~")
    if aws.endpoint_url:
        return f"{aws.endpoint_url}/{source.bucket}/{key}"
    suffix = "amazonaws.com.cn" if aws.region.startswith("cn-") else "amazonaws.com"
    if "." in source.bucket:  # a dotted bucket does not fit the *.s3 wildcard certificate
        return f"https://s3.{aws.region}.{suffix}/{source.bucket}/{key}"
    return f"https://{source.bucket}.s3.{aws.region}.{suffix}/{key}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could downgrade to http or carry a signed request elsewhere: report it instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class Fetched:
    status: int  # 200 or 304
    body: bytes
    etag: str


def fetch(fetching: Fetching, *, aws: AwsEnvironment, etag: str, now: datetime) -> Fetched:
    """One GET of ``fetching.source``; raises :class:`SourceError` for anything but 200 or 304."""
    source = fetching.source
    headers: dict[str, str] = {"Accept": fetching.accept}
    if source.scheme == "s3":
        url = _s3_url(source, aws)
        headers.update(sigv4_headers(url=url, aws=aws, now=now))
    else:
        url = source.url
    if etag:
        headers["If-None-Match"] = etag
    host = urllib.parse.urlsplit(url).hostname or ""
    request = urllib.request.Request(url, headers=headers, method="GET")  # noqa: S310  (scheme checked in settings)
    limit = fetching.max_bytes
    try:
        context = ssl.create_default_context(cafile=fetching.ca_file or None)
        handlers: list[urllib.request.BaseHandler] = [_NoRedirects(), urllib.request.HTTPSHandler(context=context)]
        if is_loopback(host):
            handlers.append(urllib.request.ProxyHandler({}))  # a developer's proxy must not see test traffic
        opener = urllib.request.build_opener(*handlers)
        with opener.open(request, timeout=fetching.timeout) as response:
            body = response.read(limit + 1)
            if len(body) > limit:
                raise SourceError(f"GET {host}: the answer is larger than {limit} bytes")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) != len(body):  # read(n) returns short data silently
                raise SourceError(f"GET {host}: body truncated at {len(body)} of {length} bytes")
            return Fetched(200, body, response.headers.get("ETag", ""))
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Fetched(304, b"", exc.headers.get("ETag", "") or etag)
        try:
            detail = exc.read(4096).decode("utf-8", errors="replace")
        except (OSError, http.client.HTTPException):
            detail = ""
        code = re.search(r"<Code>([^<]{1,64})</Code>", detail)  # S3's error code, e.g. SignatureDoesNotMatch
        raise SourceError(f"GET {host} answered {exc.code}" + (f" {code.group(1)}" if code else "")) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else f"{type(exc).__name__}: {exc}"
        raise SourceError(f"GET {host} failed: {reason}") from None
