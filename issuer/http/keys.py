"""Typed application keys: the only way handlers reach the app's resources."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.audit.service import AuditTrail
from issuer.service.ca.registry import IssuerRegistry
from issuer.service.issuance.ec2 import Ec2Method
from issuer.service.issuance.iam import IamMethod
from issuer.service.issuance.pipeline import Pipeline
from issuer.service.issuance.renew import RenewMethod
from issuer.service.issuance.token import TokenMethod
from issuer.service.revocation.lists import RevocationLists
from issuer.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
PIPELINE = web.AppKey("pipeline", Pipeline)
REGISTRY = web.AppKey("registry", IssuerRegistry)
TOKEN = web.AppKey("token_method", TokenMethod)
EC2 = web.AppKey("ec2_method", Ec2Method)
IAM = web.AppKey("iam_method", IamMethod)
RENEW = web.AppKey("renew_method", RenewMethod)
REVOCATION_LISTS = web.AppKey("revocation_lists", RevocationLists)
AUDIT = web.AppKey("audit_trail", AuditTrail)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
REQUEST_ID = web.RequestKey("request_id", str)
CLIENT_REQUEST_ID = web.RequestKey("client_request_id", str)
