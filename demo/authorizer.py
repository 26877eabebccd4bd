"""Run the API Gateway Lambda authorizer (the deployed package, as is) on events like API Gateway's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from clients.authorizer import RevocationCache, authorize

POLICY = {"rules": [{"name": "orders", "routes": ["GET /orders"], "roles": ["onprem", "web-fleet"]}], "default": "deny"}


def http_api_event(cert_pem: str, *, route: str = "GET /orders") -> dict[str, Any]:
    """An HTTP API (payload 2.0) REQUEST authorizer event for a client that presented ``cert_pem``."""
    leaf = x509.load_pem_x509_certificate(cert_pem.encode())
    method, path = route.split(" ", 1)
    return {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": f"arn:aws:execute-api:us-east-1:123456789012:demo/$default/{method}{path}",
        "routeKey": route,
        "rawPath": path,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "demo",
            "authentication": {
                "clientCert": {
                    "clientCertPem": cert_pem,
                    "subjectDN": leaf.subject.rfc4514_string(),
                    "issuerDN": leaf.issuer.rfc4514_string(),
                    "serialNumber": format(leaf.serial_number, "x"),
                    "validity": {"notBefore": "", "notAfter": ""},
                }
            },
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": "demo",
            "routeKey": route,
            "stage": "$default",
        },
    }


def decide(cert: Path, *, crls_url: str, truststore_url: str) -> tuple[bool, str]:
    """The authorizer's answer for a request with the certificate in ``cert``: (allowed, reason).

    It enforces the signed CRLs (``ISSUER_CRLS_URL``), each verified against the truststore.
    """
    env = {
        "ISSUER_CRLS_URL": crls_url,
        "ISSUER_TRUSTSTORE_URL": truststore_url,
        "ISSUER_AUTHZ_POLICY": json.dumps(POLICY),
        "ISSUER_CRLS_TTL": "1",
    }
    lines: list[str] = []
    answer = authorize(
        http_api_event(cert.read_text()),
        env=env,
        cache=RevocationCache(),
        now=datetime.now(UTC),
        log=lambda line: lines.append(str(line)),
    )
    reason = next((json.loads(line).get("reason", "") for line in lines if "authorizer_decision" in line), "")
    return bool(answer.get("isAuthorized")), reason
