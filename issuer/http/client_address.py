"""Who is asking: the client's address as the audit trail records it, behind trusted proxies or not."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from issuer.http.keys import SETTINGS

__all__ = ["remote_address"]


def remote_address(request: web.Request) -> str | None:
    """The client's address; X-Forwarded-For is believed only from a configured proxy."""
    remote = request.remote
    proxies = request.app[SETTINGS].trusted_proxies
    if remote and remote in proxies:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            if hop not in proxies:
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return remote
    return remote
