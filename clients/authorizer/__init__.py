"""The API Gateway Lambda authorizer: signed-CRL revocation and a route policy for mutual-TLS clients.

API Gateway checks a client certificate against its truststore but consults no CRL. This
authorizer denies a certificate whose chain is on a CRL signed by a CA of that truststore, and
applies the operator's route policy. The handler is ``lambda_function.lambda_handler``;
``make authorizer-zip`` builds the deployment zips (this package, ``lambda_function.py`` and
``cryptography`` at the zip's root). The README section "The Lambda authorizer" documents the
settings (:mod:`.settings`) and the policy (:mod:`.policy`).

Modules: :mod:`.handler` (one decision), :mod:`.event`, :mod:`.certificate`, :mod:`.policy`,
:mod:`.revocation` (the per-environment cache), :mod:`.crls` and :mod:`.chain` (signed CRLs),
:mod:`.truststore`, :mod:`.revoked_json` (the older unsigned list), :mod:`.sources` and
:mod:`.fetch` (https / S3 with ETags), :mod:`.settings`, :mod:`.errors`.
"""

from __future__ import annotations

from .certificate import ClientCertificate, parse_certificate_der, parse_certificate_pem, serial_matches
from .crls import CrlMemory, parse_crl_bundle
from .errors import AuthorizerError, CertificateError, EventError, PolicyError, SettingsError, SourceError
from .event import ApiRequest, parse_event
from .fetch import sigv4_headers
from .handler import authorize, lambda_handler
from .policy import Policy, PolicyDecision, Route, parse_policy, request_path_variants
from .revocation import RevocationCache
from .revoked_json import RevocationList, parse_revocation_document
from .settings import AwsEnvironment, Settings, load_settings
from .truststore import Truststore, parse_truststore

__all__ = [
    "ApiRequest",
    "AuthorizerError",
    "AwsEnvironment",
    "CertificateError",
    "ClientCertificate",
    "CrlMemory",
    "EventError",
    "Policy",
    "PolicyDecision",
    "PolicyError",
    "RevocationCache",
    "RevocationList",
    "Route",
    "Settings",
    "SettingsError",
    "SourceError",
    "Truststore",
    "authorize",
    "lambda_handler",
    "load_settings",
    "parse_certificate_der",
    "parse_certificate_pem",
    "parse_crl_bundle",
    "parse_event",
    "parse_policy",
    "parse_revocation_document",
    "parse_truststore",
    "request_path_variants",
    "serial_matches",
    "sigv4_headers",
]
