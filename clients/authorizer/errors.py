"""The authorizer's errors. Nothing escapes ``lambda_handler``: each becomes a Deny naming its ``code``.

::

    AuthorizerError
    ├── SettingsError     settings_invalid      environment variables missing or malformed
    ├── PolicyError       policy_invalid        ISSUER_AUTHZ_POLICY missing or malformed
    ├── EventError        event_malformed, client_cert_missing
    ├── CertificateError  cert_malformed
    └── SourceError       (upstream) revocation_source_failed, revocation_document_invalid,
                          crl_bundle_invalid, truststore_invalid
"""

from __future__ import annotations

__all__ = [
    "AuthorizerError",
    "CertificateError",
    "EventError",
    "PolicyError",
    "SettingsError",
    "SourceError",
]


class AuthorizerError(Exception):
    """Root of the authorizer's deliberate errors; ``code`` is stable, ``str(err)`` is for the log."""

    default_code = "authorizer_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code


class SettingsError(AuthorizerError):
    default_code = "settings_invalid"


class PolicyError(AuthorizerError):
    default_code = "policy_invalid"


class EventError(AuthorizerError):
    default_code = "event_malformed"


class CertificateError(AuthorizerError):
    default_code = "cert_malformed"


class SourceError(AuthorizerError):
    """A source (revocation list, CRL bundle, truststore) failed or answered with something unusable."""

    default_code = "revocation_source_failed"
