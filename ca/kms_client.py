"""The two AWS KMS calls a KMS-held CA key needs, and what their failures mean.

:class:`KmsClient` is the seam: a boto3 ``kms`` client satisfies it, tests pass
botocore's ``Stubber`` or moto's server behind a real client. Everything here is
blocking (the async :class:`ca.kms.KmsSigner` runs it in a worker thread) and
bounded only by the client's own botocore ``Config`` — see :func:`kms_botocore_config`.

Failures become :mod:`ca.errors` values::

    SignerUnavailable  503  ca_signer_unavailable   ThrottlingException, KMSInternalException,
                                                    DependencyTimeoutException, HTTP 5xx,
                                                    connection errors and timeouts
    SignerDenied       503  ca_kms_key_disabled     DisabledException, KMSInvalidStateException,
                                                    KeyUnavailableException
                            ca_kms_key_not_found    NotFoundException, InvalidArnException
                            ca_signer_denied        AccessDeniedException, bad or missing credentials,
                                                    any other refusal
    KMSKeyError        500  ca_kms_key_unsupported  not a SIGN_VERIFY key of a supported spec
                            ca_kms_key_mismatch     (ca.kms) the key is not the CA certificate's
                            ca_kms_signature_invalid  KMS's signature does not verify; nothing is returned

``detail`` names the key and what to check when ``public=False`` (set-up, start-up,
the operator reads it); with ``public=True`` (serving) it is generic and only
``reason`` (logs) names the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.errors import CAError, KMSKeyError, SignerDenied, SignerUnavailable
from ca.kms_x509 import (
    KMS_KEY_SPECS,
    KmsAlgorithm,
    KmsKeySpec,
    algorithm_for_key_spec,
    algorithm_for_public_key,
    assemble,
    certificate_tbs,
    crl_tbs,
    sign_request,
)

__all__ = [
    "KmsClient",
    "KmsKey",
    "kms_botocore_config",
    "kms_failure",
    "kms_public_key",
    "kms_sign",
    "kms_sign_certificate",
    "kms_sign_crl",
    "same_public_key",
]


class KmsClient(Protocol):
    """The KMS calls a CA key needs (a boto3 ``kms`` client has them)."""

    def sign(self, *, KeyId: str, Message: bytes, MessageType: str, SigningAlgorithm: str) -> Mapping[str, Any]: ...

    def get_public_key(self, *, KeyId: str) -> Mapping[str, Any]: ...


def kms_botocore_config(
    *, connect_timeout: float = 1.0, read_timeout: float = 3.0, max_attempts: int = 3, max_pool_connections: int = 10
) -> Config:
    """The botocore ``Config`` to build the KMS client with: ``boto3.client("kms", config=...)``.

    Short timeouts (KMS answers Sign in tens of milliseconds) and botocore's
    ``standard`` retry mode, which retries throttling and 5xx with backoff. The
    signer's own ``timeout`` caps the whole call on top of this; without these a
    hung connection would hold a worker thread until the OS gives up.
    ``max_pool_connections`` should be at least the number of concurrent signings.
    """
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
    )


@dataclass(frozen=True, slots=True)
class KmsKey:
    """A KMS signing key as ``GetPublicKey`` describes it.

    ``key_id`` is KMS's own name for it (the key ARN from real KMS, even when it was
    asked for by alias): signing with it keeps using this key if the alias moves.
    """

    key_id: str
    key_spec: KmsKeySpec
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    algorithm: KmsAlgorithm


def kms_public_key(client: KmsClient, key_id: str, *, public: bool = False) -> KmsKey:
    """Ask KMS for ``key_id``'s public key and check it can sign certificates here.

    Raises :class:`KMSKeyError` ``ca_kms_key_unsupported`` unless the key is
    SIGN_VERIFY with spec ECC_NIST_P256/P384 or RSA_2048/3072/4096 offering the
    matching signing algorithm, and the errors of :func:`kms_failure`.
    """
    try:
        reply = client.get_public_key(KeyId=key_id)
    except ParamValidationError:
        raise  # a malformed request is a bug here, not an answer from AWS
    except (ClientError, BotoCoreError) as exc:
        raise kms_failure(exc, key_id=key_id, operation="GetPublicKey", public=public) from exc
    # KeySpec is the current name; CustomerMasterKeySpec the deprecated one some emulators still send.
    spec = str(reply.get("KeySpec") or reply.get("CustomerMasterKeySpec") or "")
    usage = str(reply.get("KeyUsage", ""))
    algorithm = algorithm_for_key_spec(spec)

    def unsupported(why: str) -> KMSKeyError:
        return KMSKeyError(
            f"KMS key {key_id} cannot sign certificates here: {why}. Use an asymmetric SIGN_VERIFY key "
            f"of spec {', '.join(KMS_KEY_SPECS)}",
            code="ca_kms_key_unsupported",
        )

    if usage != "SIGN_VERIFY":
        raise unsupported(f"its key usage is {usage or 'unknown'}, not SIGN_VERIFY")
    if algorithm is None:
        raise unsupported(f"its key spec {spec or 'unknown'} is not supported")
    offered = reply.get("SigningAlgorithms")
    if offered is not None and algorithm.signing_algorithm not in offered:
        raise unsupported(f"it does not offer {algorithm.signing_algorithm} (offers {', '.join(offered)})")
    try:
        public_key = serialization.load_der_public_key(bytes(reply["PublicKey"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise unsupported(f"KMS returned no readable public key ({type(exc).__name__})") from exc
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) or (
        algorithm_for_public_key(public_key) != algorithm
    ):
        raise unsupported(f"its public key is not a {spec} key")
    return KmsKey(
        key_id=str(reply.get("KeyId") or key_id),
        key_spec=algorithm.key_spec,
        public_key=public_key,
        algorithm=algorithm,
    )


def kms_sign(client: KmsClient, key_id: str, algorithm: KmsAlgorithm, tbs: bytes, *, public: bool = False) -> bytes:
    """KMS's signature over ``tbs`` (sent RAW or as its digest, see ``ca.kms_x509.sign_request``).

    The signature is not checked here; raises the errors of :func:`kms_failure`, or
    :class:`SignerUnavailable` when the reply carries no signature.
    """
    request = sign_request(algorithm, tbs)
    try:
        reply = client.sign(
            KeyId=key_id,
            Message=request.message,
            MessageType=request.message_type,
            SigningAlgorithm=request.signing_algorithm,
        )
    except ParamValidationError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise kms_failure(exc, key_id=key_id, operation="Sign", public=public) from exc
    signature = reply.get("Signature")
    if not isinstance(signature, bytes) or not signature:
        raise SignerUnavailable(
            _UNAVAILABLE if public else f"AWS KMS returned no signature for key {key_id}; try again later",
            reason=f"kms:Sign {key_id}: reply without a Signature",
        )
    return signature


def kms_sign_certificate(
    client: KmsClient,
    key_id: str,
    builder: x509.CertificateBuilder,
    *,
    algorithm: KmsAlgorithm,
    issuer: x509.Certificate | None,
    public: bool = False,
) -> x509.Certificate:
    """``builder`` signed by the KMS key, verified against ``issuer`` (``None``: self-signed).

    Raises :class:`KMSKeyError` ``ca_kms_signature_invalid`` when the result does not
    verify (it is never returned), and the errors of :func:`kms_sign`.
    """
    tbs = certificate_tbs(builder, algorithm)
    certificate = x509.load_der_x509_certificate(
        assemble(tbs, kms_sign(client, key_id, algorithm, tbs.tbs, public=public))
    )
    try:
        certificate.verify_directly_issued_by(issuer if issuer is not None else certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise _bad_signature(key_id, "certificate", public=public) from exc
    return certificate


def kms_sign_crl(
    client: KmsClient,
    key_id: str,
    builder: x509.CertificateRevocationListBuilder,
    *,
    algorithm: KmsAlgorithm,
    issuer: x509.Certificate,
    public: bool = False,
) -> x509.CertificateRevocationList:
    """``builder`` signed by the KMS key, verified against ``issuer``'s public key; errors as for certificates."""
    tbs = crl_tbs(builder, algorithm)
    crl = x509.load_der_x509_crl(assemble(tbs, kms_sign(client, key_id, algorithm, tbs.tbs, public=public)))
    issuer_key = issuer.public_key()
    if not isinstance(issuer_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) or not crl.is_signature_valid(
        issuer_key
    ):
        raise _bad_signature(key_id, "CRL", public=public)
    return crl


def same_public_key(key: KmsKey, certificate: x509.Certificate) -> bool:
    """True if ``certificate`` certifies the public key of the KMS key."""
    spki, der = serialization.PublicFormat.SubjectPublicKeyInfo, serialization.Encoding.DER
    return bool(key.public_key.public_bytes(der, spki) == certificate.public_key().public_bytes(der, spki))


_UNAVAILABLE: Final = "The CA's signing key in AWS KMS cannot be used right now; try again later."
_DENIED_PUBLIC: Final = "The CA's signing key in AWS KMS is not usable; an operator must act. Try again later."
_THROTTLED: Final = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"})
_TRANSIENT: Final = frozenset(
    {"KMSInternalException", "DependencyTimeoutException", "InternalFailure", "ServiceUnavailable", "RequestTimeout"}
)
_DISABLED: Final = frozenset({"DisabledException", "KMSInvalidStateException", "KeyUnavailableException"})
_NOT_FOUND: Final = frozenset({"NotFoundException", "InvalidArnException"})
_UNSUPPORTED: Final = frozenset({"InvalidKeyUsageException", "UnsupportedOperationException"})
_NO_CREDENTIALS: Final = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)


def kms_failure(exc: ClientError | BotoCoreError, *, key_id: str, operation: str, public: bool) -> CAError:
    """The :mod:`ca.errors` value for a failed KMS call ``operation`` on ``key_id`` (see the module docstring)."""
    call = f"kms:{operation} on key {key_id}"
    if isinstance(exc, _NO_CREDENTIALS):
        text = f"No AWS credentials for {call} ({type(exc).__name__}): give the issuer a role or credentials"
        return SignerDenied(_DENIED_PUBLIC if public else text, reason=f"{text}; operator must act: {exc}")
    if not isinstance(exc, ClientError):
        # Connection refused or reset, DNS, TLS, connect/read timeouts: KMS may be back in a moment.
        text = f"AWS KMS could not be reached for {call} ({type(exc).__name__}); try again later"
        return SignerUnavailable(_UNAVAILABLE if public else text, reason=f"{text}: {exc}", retry_after=5)
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    aws = f"{code} (HTTP {status}): {error.get('Message', '')}"
    # Known codes first: KeyUnavailableException comes as HTTP 500 but needs an operator, not a retry.
    if code in _THROTTLED or code in _TRANSIENT or (status >= 500 and code not in _DISABLED):
        text = f"AWS KMS is {'throttling' if code in _THROTTLED else 'failing'} {call} ({code}); try again later"
        retry = 2 if code in _THROTTLED else 5
        return SignerUnavailable(_UNAVAILABLE if public else text, reason=f"{call}: {aws}", retry_after=retry)
    if code in _UNSUPPORTED:
        text = f"KMS key {key_id} cannot be used for {operation} ({code}): it must be an asymmetric SIGN_VERIFY key"
        return KMSKeyError(
            "The CA's signing key in AWS KMS cannot sign; an operator must act." if public else text,
            code="ca_kms_key_unsupported",
            reason=f"{text}: {aws}",
        )
    if code in _DISABLED:
        text = (
            f"KMS key {key_id} is disabled, pending deletion or unavailable ({code}): enable it or cancel its "
            "deletion (aws kms enable-key / cancel-key-deletion), or configure the issuer's current key"
        )
        return SignerDenied(
            _DENIED_PUBLIC if public else text,
            code="ca_kms_key_disabled",
            reason=f"{text}; operator must act, the client's request was fine: {aws}",
        )
    if code in _NOT_FOUND:
        text = f"KMS key {key_id} does not exist ({code}): check the key id or alias, the region and the account"
        return SignerDenied(
            _DENIED_PUBLIC if public else text,
            code="ca_kms_key_not_found",
            reason=f"{text}; operator must act, the client's request was fine: {aws}",
        )
    text = (
        f"AWS KMS refused {call} ({code or f'HTTP {status}'}): check the issuer's credentials, its IAM policy "
        f"(kms:{operation} on this key) and the key policy"
    )
    return SignerDenied(
        _DENIED_PUBLIC if public else text,
        code="ca_signer_denied",
        reason=f"{text}; operator must act, the client's request was fine: {aws}",
    )


def _bad_signature(key_id: str, what: str, *, public: bool) -> KMSKeyError:
    text = (
        f"KMS key {key_id} returned a {what} signature that does not verify with the CA certificate's public key; "
        "nothing was issued. Is the key id or alias still pointing at the CA's key?"
    )
    return KMSKeyError(
        "The CA's signing key produced an invalid signature; nothing was issued. An operator must act."
        if public
        else text,
        code="ca_kms_signature_invalid",
        reason=text,
    )
