"""The URL map of API v1: a POST route per method of the catalogue, and the reads."""

from __future__ import annotations

from aiohttp import web

from issuer.http import handlers, metrics, revocation_handlers
from issuer.service.issuance.catalogue import CATALOGUE


def add_routes(app: web.Application) -> None:
    for entry in CATALOGUE:
        app.router.add_post(entry.route, handlers.issue_handler(entry))
    app.router.add_get("/v1/bundle", handlers.bundle)
    app.router.add_get("/v1/truststore", handlers.truststore)
    app.router.add_get("/v1/crl", revocation_handlers.crl)
    app.router.add_get("/v1/crls", revocation_handlers.crls)
    app.router.add_get("/v1/revoked", revocation_handlers.revoked)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", metrics.metrics_endpoint)
