"""The URL map of API v1."""

from __future__ import annotations

from aiohttp import web

from issuer.http import handlers, metrics, revocation_handlers


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/issue/token", handlers.issue_token)
    app.router.add_post("/v1/issue/aws-ec2", handlers.issue_ec2)
    app.router.add_post("/v1/issue/aws-iam", handlers.issue_iam)
    app.router.add_post("/v1/renew", handlers.renew)
    app.router.add_get("/v1/bundle", handlers.bundle)
    app.router.add_get("/v1/truststore", handlers.truststore)
    app.router.add_get("/v1/crl", revocation_handlers.crl)
    app.router.add_get("/v1/crls", revocation_handlers.crls)
    app.router.add_get("/v1/revoked", revocation_handlers.revoked)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", metrics.metrics_endpoint)
