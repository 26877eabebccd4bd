"""The exception root of the CA library.

Every error the library raises on purpose derives from :class:`CAError` and carries
a stable machine-readable ``code`` and an HTTP status *hint* (the library never
imports a web framework; whoever serves it maps the hint)::

    CAError
    ├── CSRError        400  the caller's CSR is unusable
    │                        csr_malformed, csr_signature_invalid,
    │                        key_type_unsupported, key_type_not_allowed
    ├── CAStateError    500  the CA itself is missing, present, broken or expired
    │                        ca_not_initialised, ca_exists, ca_files_corrupt, ca_expired
    └── CAKeyError      500  the CA key cannot be unlocked
                             ca_passphrase_wrong, ca_passphrase_empty, ca_passphrase_weak

``detail`` is written for a person and is safe to show to the caller of the
library; ``reason`` (defaulting to ``detail``) is for logs only. The shape matches
``issuer.errors.IssuerError`` on purpose, but this package imports nothing from it.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CAError",
    "CAKeyError",
    "CAKeyErrorCode",
    "CAStateError",
    "CAStateErrorCode",
    "CSRError",
    "CSRErrorCode",
]

CSRErrorCode = Literal[
    "csr_malformed",
    "csr_signature_invalid",
    "key_type_unsupported",
    "key_type_not_allowed",
]
CAStateErrorCode = Literal["ca_not_initialised", "ca_exists", "ca_files_corrupt", "ca_expired"]
CAKeyErrorCode = Literal["ca_passphrase_wrong", "ca_passphrase_empty", "ca_passphrase_weak"]


class CAError(Exception):
    """Root of every deliberate error of the CA library."""

    status_hint: int = 500
    default_code: str = "ca_error"
    title: str = "CA error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        reason: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        # Private: for logs only, never for a remote client.
        self.reason = reason or detail
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r}, code={self.code!r})"


class CSRError(CAError):
    """The CSR is malformed, its signature does not verify, or its key is refused (400)."""

    status_hint = 400
    default_code = "csr_malformed"
    title = "Unusable certificate signing request"

    def __init__(self, detail: str, *, code: CSRErrorCode = "csr_malformed", reason: str | None = None) -> None:
        super().__init__(detail, code=code, reason=reason)


class CAStateError(CAError):
    """The CA is not there, already there, damaged on disk, or expired (500: an operator must act)."""

    status_hint = 500
    default_code = "ca_files_corrupt"
    title = "CA unavailable"

    def __init__(self, detail: str, *, code: CAStateErrorCode, reason: str | None = None) -> None:
        super().__init__(detail, code=code, reason=reason)


class CAKeyError(CAError):
    """The CA private key cannot be unlocked with the passphrase given (500)."""

    status_hint = 500
    default_code = "ca_passphrase_wrong"
    title = "CA key locked"

    def __init__(self, detail: str, *, code: CAKeyErrorCode = "ca_passphrase_wrong", reason: str | None = None) -> None:
        super().__init__(detail, code=code, reason=reason)
