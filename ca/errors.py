"""The exception root of the CA library.

Every error the library raises on purpose derives from :class:`CAError` and carries
a stable machine-readable ``code`` and an HTTP status *hint* (the library never
imports a web framework; whoever serves it maps the hint)::

    CAError
    ├── CSRError        400  the caller's CSR is unusable
    │                        csr_malformed, csr_signature_invalid,
    │                        key_type_unsupported, key_type_not_allowed
    ├── CAStateError    500  the CA itself is missing, present, broken or expired
    │                        ca_not_initialised, ca_exists, ca_files_corrupt, ca_expired,
    │                        ca_pca_mismatch (AWS Private CA now holds another key than the registered certificate)
    ├── CAKeyError      500  the CA key cannot be unlocked
    │                        ca_passphrase_wrong, ca_passphrase_empty, ca_passphrase_weak
    ├── KMSKeyError     500  (a CAStateError) the KMS key cannot be this CA's key
    │                        ca_kms_key_mismatch, ca_kms_key_unsupported, ca_kms_signature_invalid
    ├── SignerCapabilityMissing 500  a caller asked a backend for what it declared it cannot do (a bug)
    │                        ca_signer_capability_missing
    ├── SignerResultRejected 502  a remote signer (AWS Private CA) returned a certificate that is not the one
    │                        asked for; nothing is recorded or answered: ca_signer_result_rejected
    └── SignerUnavailable 503  the signer backend (AWS KMS, AWS Private CA) cannot sign now; retry_after set
        │                      ca_signer_unavailable (throttled, internal error, timeout, unreachable)
        └── SignerDenied  503  the backend refuses this CA's key: an operator must act
                               ca_signer_denied, ca_kms_key_disabled, ca_kms_key_not_found,
                               ca_pca_not_active, ca_pca_not_found

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
    "KMSKeyError",
    "KMSKeyErrorCode",
    "SignerCapabilityMissing",
    "SignerDenied",
    "SignerDeniedCode",
    "SignerResultRejected",
    "SignerUnavailable",
]

CSRErrorCode = Literal[
    "csr_malformed",
    "csr_signature_invalid",
    "key_type_unsupported",
    "key_type_not_allowed",
]
CAStateErrorCode = Literal["ca_not_initialised", "ca_exists", "ca_files_corrupt", "ca_expired", "ca_pca_mismatch"]
CAKeyErrorCode = Literal["ca_passphrase_wrong", "ca_passphrase_empty", "ca_passphrase_weak"]
KMSKeyErrorCode = Literal["ca_kms_key_mismatch", "ca_kms_key_unsupported", "ca_kms_signature_invalid"]
SignerDeniedCode = Literal[
    "ca_signer_denied", "ca_kms_key_disabled", "ca_kms_key_not_found", "ca_pca_not_active", "ca_pca_not_found"
]


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


class KMSKeyError(CAStateError):
    """The KMS key is not (or no longer) the issuing CA's key, or cannot sign certificates (500).

    ``ca_kms_key_mismatch``: its public key differs from the CA certificate's;
    ``ca_kms_key_unsupported``: wrong key usage or key spec; ``ca_kms_signature_invalid``:
    KMS returned a signature that does not verify with the CA certificate (nothing is issued).
    """

    default_code = "ca_kms_key_mismatch"

    def __init__(self, detail: str, *, code: KMSKeyErrorCode, reason: str | None = None) -> None:
        # CAStateError narrows ``code`` to its own codes; these are the KMS ones.
        CAError.__init__(self, detail, code=code, reason=reason)


class SignerCapabilityMissing(CAError):
    """A signer was asked to sign a CRL or revoke at its end although its ``capabilities`` say it cannot (500).

    A bug in the caller, which must read :attr:`ca.signer.Signer.capabilities` first.
    """

    status_hint = 500
    default_code = "ca_signer_capability_missing"
    title = "CA error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, code="ca_signer_capability_missing")


class SignerResultRejected(CAError):
    """A remote signer returned a certificate that is not what was asked for (502).

    Its public key, names, usages, validity or signature differ from the request: the
    certificate is neither recorded nor answered. ``detail`` is generic; ``reason`` says
    what differed (for the log and the audit row).
    """

    status_hint = 502
    default_code = "ca_signer_result_rejected"
    title = "Signer result rejected"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail, code="ca_signer_result_rejected", reason=reason)


class SignerUnavailable(CAError):
    """The signer backend cannot sign right now: throttled, failing, unreachable or too slow (503).

    The client's request was fine; ``retry_after`` (seconds) says when to try again.
    """

    status_hint = 503
    default_code = "ca_signer_unavailable"
    title = "Signer unavailable"

    def __init__(self, detail: str, *, reason: str | None = None, retry_after: int = 5) -> None:
        super().__init__(detail, code="ca_signer_unavailable", reason=reason, retry_after=retry_after)


class SignerDenied(SignerUnavailable):
    """The signer backend refuses to use the CA's key: access denied, key disabled or gone (503).

    Still 503, not 4xx: the client's request was fine and an operator must act
    (``reason`` names the key and what to check). A subclass of :class:`SignerUnavailable`
    so that code treating "cannot sign now" alike needs one ``except``.
    """

    default_code = "ca_signer_denied"
    title = "Signer unavailable"

    def __init__(
        self,
        detail: str,
        *,
        code: SignerDeniedCode = "ca_signer_denied",
        reason: str | None = None,
        retry_after: int = 30,
    ) -> None:
        super().__init__(detail, reason=reason, retry_after=retry_after)
        self.code = code
