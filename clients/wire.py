"""The issuer's HTTP API (v1) as the agent speaks it: paths, headers and field names.

The agent owns its copy of these names (it ships without the service); the
service's own schemas must agree with them, and the end-to-end tests check that.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = [
    "CSR_SHA256_HEADER",
    "DEFAULT_KEY_TYPE",
    "ISSUE_PATHS",
    "KEY_TYPES",
    "METHODS",
    "PROBLEM_CONTENT_TYPE",
    "REQUEST_ID_HEADER",
    "SERVER_ID_HEADER",
    "Field",
    "KeyType",
    "Method",
    "ResponseField",
]

Method = Literal["token", "aws-ec2", "aws-iam"]
METHODS: Final[tuple[Method, ...]] = get_args(Method)

ISSUE_PATHS: Final[dict[Method, str]] = {
    "token": "/v1/issue/token",
    "aws-ec2": "/v1/issue/aws-ec2",
    "aws-iam": "/v1/issue/aws-iam",
}

KeyType = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"]
KEY_TYPES: Final[tuple[KeyType, ...]] = get_args(KeyType)
DEFAULT_KEY_TYPE: Final[KeyType] = "ec-p256"

# Signed into the STS GetCallerIdentity request by the agent (both must be in
# SignedHeaders): the first binds the proof to this issuer, the second to one CSR.
SERVER_ID_HEADER: Final = "X-Issuer-Server-ID"
CSR_SHA256_HEADER: Final = "X-Issuer-CSR-SHA256"

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
# Fallback only: the problem document's own request_id wins.
REQUEST_ID_HEADER: Final = "X-Request-ID"


class Field:
    """Field names of the issue request bodies."""

    CSR: Final = "csr"
    ROLE: Final = "role"
    TOKEN: Final = "token"
    DOCUMENT: Final = "document"
    RSA2048: Final = "rsa2048"
    NONCE: Final = "nonce"
    STS_REQUEST: Final = "sts_request"


class ResponseField:
    """Field names of the 201 issue response and of problem+json errors."""

    SERIAL: Final = "serial"
    CERTIFICATE: Final = "certificate"
    CHAIN: Final = "chain"
    BUNDLE: Final = "bundle"
    NOT_BEFORE: Final = "not_before"
    NOT_AFTER: Final = "not_after"
    RENEW_AFTER: Final = "renew_after"
    IDENTITY: Final = "identity"
    IDENTITY_METHOD: Final = "method"
    IDENTITY_PRINCIPAL: Final = "principal"
    IDENTITY_URI_SAN: Final = "uri_san"
    NONCE: Final = "nonce"
    # problem+json (RFC 9457) plus the service's two extensions
    TYPE: Final = "type"
    TITLE: Final = "title"
    STATUS: Final = "status"
    DETAIL: Final = "detail"
    CODE: Final = "code"
    REQUEST_ID: Final = "request_id"
