"""Thin handlers for the revocation lists, with ETags: ``GET /v1/crl`` (DER), ``GET /v1/crls`` (every
current CRL, roots included, PEM) and ``GET /v1/revoked`` (JSON)."""

from __future__ import annotations

from aiohttp import web

from issuer.errors import NotFound
from issuer.hashing import strong_etag
from issuer.http.keys import CRLS, REVOCATION_LISTS

__all__ = ["crl", "crls", "etag_matches", "revoked"]

CRL_CONTENT_TYPE = "application/pkix-crl"  # RFC 5280 §4.2.1.13 / RFC 2585
PEM_CONTENT_TYPE = "application/x-pem-file"


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (RFC 9110 §13.1.2: weak comparison, lists, ``*``)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _answer(request: web.Request, body: bytes, *, etag: str, content_type: str, cache: str) -> web.Response:
    headers = {"ETag": etag, "Cache-Control": cache}
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, headers=headers)


async def crl(request: web.Request) -> web.Response:
    """The DER CRL of the active issuing CA, or of ``?issuer=<SHA-256 fingerprint prefix>`` — an issuing
    CA's or a root's."""
    wanted = request.query.get("issuer")
    try:
        published = await request.app[REVOCATION_LISTS].crl(issuer=wanted)
    except NotFound:
        root = None if wanted is None else await request.app[CRLS].root_crl(wanted)
        if root is None:
            raise
        return _answer(request, root.der, etag=strong_etag(root.der), content_type=CRL_CONTENT_TYPE, cache="max-age=60")
    return _answer(request, published.der, etag=published.etag, content_type=CRL_CONTENT_TYPE, cache="max-age=60")


async def crls(request: web.Request) -> web.Response:
    """Every current CRL in one PEM file: each issuing CA of the truststore, then each root."""
    bundle = await request.app[CRLS].bundle()
    # no-cache: a cache may keep it but must revalidate (a cheap 304) before using it again.
    return _answer(request, bundle.body, etag=bundle.etag, content_type=PEM_CONTENT_TYPE, cache="no-cache")


async def revoked(request: web.Request) -> web.Response:
    """The revoked, unexpired serials as JSON, for the Lambda authorizer (revalidated with If-None-Match)."""
    listed = await request.app[REVOCATION_LISTS].revoked()
    # no-cache: a cache may keep it but must revalidate (a cheap 304) before using it again.
    return _answer(request, listed.body, etag=listed.etag, content_type="application/json", cache="no-cache")
