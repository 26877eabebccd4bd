"""The exception root of the issuer service.

Every error the service raises on purpose derives from :class:`IssuerError` and
carries a stable machine-readable ``code`` and an HTTP status *hint* (the service
core never imports the web framework; the error middleware maps the hint)::

    IssuerError
    ├── ClientError            400  the request is malformed
    │   ├── RequestTimeout     408  the body did not arrive in time
    │   ├── PayloadTooLarge    413
    │   └── UnsupportedMediaType 415  the body is not application/json
    ├── Unauthorized           401  the proof did not verify
    ├── Forbidden              403  the proof verified but policy says no
    ├── NotFound               404
    ├── Conflict               409  a single-use thing was used already
    ├── RateLimited            429  one identity asked too often     (issuer.policy.ratelimit)
    ├── ClientGone             499  the client closed the connection before its request was read
    ├── UpstreamUnavailable    503  AWS, the database or the signer did not answer usefully
    ├── Overloaded             503  this process has all the issuance work it may take (issuer.http.overload)
    ├── ConfigError            (start-up) invalid configuration, never sent to a client
    ├── ServeError             ``issuer serve`` cannot listen or start (issuer.http.server_config)
    └── CliError               a command's one-line failure          (issuer.cli.errors)

Classes drawn with a module live beside the code that raises them. Finer subclasses
keep their parent's status: the attestation errors of :mod:`issuer.attest.cms` and
:mod:`issuer.attest.ec2` (ClientError, Unauthorized) and the publishing errors of
:mod:`issuer.service.ca.publish` (ClientError, Conflict).

Denials carry a public ``detail`` (safe to send) and a private ``reason`` that
goes only to the log and the audit table, so a client never learns which binding failed.
"""

from __future__ import annotations

__all__ = [
    "ClientError",
    "ClientGone",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "IssuerError",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamUnavailable",
]


class IssuerError(Exception):
    """Root of every deliberate error of the service."""

    status_hint: int = 500
    default_code: str = "internal_error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        reason: str | None = None,
        retry_after: int | None = None,
        principal: str | None = None,
        role: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        # Private: for logs and the attestations table only, never for the client.
        self.reason = reason or detail
        self.retry_after = retry_after
        # Who a refusal was about, when only the failing step learnt it (the audit row names them).
        self.principal = principal
        self.role = role


class ClientError(IssuerError):
    status_hint = 400
    default_code = "bad_request"
    title = "Bad request"


class PayloadTooLarge(ClientError):
    status_hint = 413
    default_code = "payload_too_large"
    title = "Payload too large"


class RequestTimeout(ClientError):
    status_hint = 408
    default_code = "body_timeout"
    title = "Request timeout"


class UnsupportedMediaType(ClientError):
    status_hint = 415
    default_code = "unsupported_media_type"
    title = "Unsupported media type"


class ClientGone(IssuerError):
    """The client went away mid-request; nothing can be answered (logged as 499, nginx's convention)."""

    status_hint = 499
    default_code = "client_disconnected"
    title = "Client closed the connection"


class Unauthorized(IssuerError):
    status_hint = 401
    default_code = "unauthorized"
    title = "Attestation failed"


class Forbidden(IssuerError):
    status_hint = 403
    default_code = "forbidden"
    title = "Not allowed by policy"


class NotFound(IssuerError):
    status_hint = 404
    default_code = "not_found"
    title = "Not found"


class Conflict(IssuerError):
    status_hint = 409
    default_code = "conflict"
    title = "Conflict"


class UpstreamUnavailable(IssuerError):
    status_hint = 503
    default_code = "upstream_unavailable"
    title = "Upstream unavailable"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        reason: str | None = None,
        retry_after: int | None = 5,
        principal: str | None = None,
        role: str | None = None,
    ) -> None:
        super().__init__(detail, code=code, reason=reason, retry_after=retry_after, principal=principal, role=role)


class ConfigError(IssuerError):
    """Invalid configuration; raised at start-up with the file, role and field named."""

    default_code = "config_invalid"
    title = "Invalid configuration"
