"""The issuer's HTTP API (v1) as the agent speaks it: paths, headers and field names.

The agent owns its copy of these names (it ships without the service); the
service's own schemas must agree with them, and the end-to-end tests check that.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Final, Literal, get_args

__all__ = [
    "AUTH_MODES",
    "CLOCK_REFUSALS",
    "CSR_SHA256_HEADER",
    "DEFAULT_KEY_TYPE",
    "ISSUE_PATHS",
    "KEY_TYPES",
    "METHODS",
    "POP_TOKEN_LIFETIME",
    "PROBLEM_CONTENT_TYPE",
    "RENEWAL_REFUSALS",
    "RENEW_PATH",
    "REQUEST_ID_HEADER",
    "REVOKED_PATH",
    "SERVER_ID_HEADER",
    "AuthMode",
    "Field",
    "KeyType",
    "Method",
    "ResponseField",
    "method_named",
    "parse_timestamp",
]

Method = Literal["token", "aws-ec2", "aws-ec2-role", "aws-iam", "x509pop"]
METHODS: Final[tuple[Method, ...]] = get_args(Method)


def method_named(name: str | None) -> Method | None:
    """The :data:`Method` spelled ``name``, or None when it names none."""
    return next((method for method in METHODS if method == name), None)


ISSUE_PATHS: Final[dict[Method, str]] = {
    "token": "/v1/issue/token",
    "aws-ec2": "/v1/issue/aws-ec2",
    "aws-ec2-role": "/v1/issue/aws-ec2-role",
    "aws-iam": "/v1/issue/aws-iam",
    "x509pop": "/v1/issue/x509pop",
}

# Revoked, unexpired serials (JSON; no credential needed): what `issuer-agent status` checks.
REVOKED_PATH: Final = "/v1/revoked"

# Renewal: the current certificate is the credential, shown either as a proof-of-possession
# JWS in ``Authorization: Bearer`` or as the TLS client certificate (mTLS).
RENEW_PATH: Final = "/v1/renew"
AuthMode = Literal["token", "mtls"]
AUTH_MODES: Final[tuple[AuthMode, ...]] = get_args(AuthMode)
# exp - iat of the proof-of-possession token; the issuer accepts at most 300 s.
POP_TOKEN_LIFETIME: Final = 120
# 401/403 codes of POST /v1/renew meaning "this certificate will not be renewed": `renew` then
# tells the user to bootstrap again. (The daemon re-attests after any 401/403 of a renewal.)
RENEWAL_REFUSALS: Final = frozenset(
    {
        "renew_auth_missing",
        "renew_token_invalid",
        "renew_token_expired",
        "renew_token_replayed",
        "renew_audience_mismatch",
        "renew_csr_mismatch",
        "renew_certificate_unknown",
        "certificate_revoked",
        "certificate_expired",
        "certificate_superseded",
        "renewal_chain_too_old",
    }
)

# Refusals that say the machine's clock is off, not that the certificate is beyond renewal.
CLOCK_REFUSALS: Final = frozenset({"renew_token_expired"})

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


_FRACTION = re.compile(r"(\.\d+)")


def parse_timestamp(text: str) -> datetime:
    """An ISO-8601 time of the API as an aware UTC datetime (no offset: read as UTC).

    Also takes what ``datetime.fromisoformat`` only reads from Python 3.11 on: a ``Z``
    suffix and fractions of other than 3 or 6 digits. Raises ``ValueError``.
    """
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    value = _FRACTION.sub(lambda m: (m.group(1) + "000000")[:7], value, count=1)
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


class Field:
    """Field names of the issue request bodies."""

    CSR: Final = "csr"
    ROLE: Final = "role"
    TOKEN: Final = "token"
    DOCUMENT: Final = "document"
    RSA2048: Final = "rsa2048"
    NONCE: Final = "nonce"
    STS_REQUEST: Final = "sts_request"
    CHAIN: Final = "chain"
    PROOF: Final = "proof"
    TTL: Final = "ttl"


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
    ROLE: Final = "role"
    SERVER_ID: Final = "server_id"
    RENEWED_FROM: Final = "renewed_from"
    # problem+json (RFC 9457) plus the service's two extensions
    TYPE: Final = "type"
    TITLE: Final = "title"
    STATUS: Final = "status"
    DETAIL: Final = "detail"
    CODE: Final = "code"
    REQUEST_ID: Final = "request_id"
