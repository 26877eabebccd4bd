"""Typed application keys: the only way handlers reach the app's resources."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.ec2_issuance import Ec2Issuance
from issuer.iam_issuance import IamIssuance
from issuer.service import IssuerService
from issuer.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SERVICE = web.AppKey("service", IssuerService)
BUNDLE_PEM = web.AppKey("bundle_pem", bytes)
EC2 = web.AppKey("ec2", Ec2Issuance)
IAM = web.AppKey("iam", IamIssuance)
REQUEST_ID = web.RequestKey("request_id", str)
