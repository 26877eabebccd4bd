"""Typed application keys: the only way handlers reach the app's resources."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.http.wire_audit import WireAudit
from issuer.service.audit_trail import AuditTrail
from issuer.service.ca.registry import IssuerRegistry
from issuer.service.issuance.catalogue import MethodTable
from issuer.service.issuance.pipeline import Pipeline
from issuer.service.revocation.bundle import CrlBundles
from issuer.service.revocation.lists import RevocationLists
from issuer.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
PIPELINE = web.AppKey("pipeline", Pipeline)
# The catalogue's methods, built at start-up: the issue handlers find their steps here by name.
METHODS = web.AppKey("methods", MethodTable)
REGISTRY = web.AppKey("registry", IssuerRegistry)
REVOCATION_LISTS = web.AppKey("revocation_lists", RevocationLists)
CRLS = web.AppKey("crls", CrlBundles)
AUDIT = web.AppKey("audit_trail", AuditTrail)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
WIRE_AUDIT = web.AppKey("wire_audit", WireAudit)
REQUEST_ID = web.RequestKey("request_id", str)
CLIENT_REQUEST_ID = web.RequestKey("client_request_id", str)
# The problem code of an error response, for its access log line.
PROBLEM_CODE = web.ResponseKey("problem_code", str)
