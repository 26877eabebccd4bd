"""The AWS Private CA calls an issuing CA held there needs, and what their failures mean.

:class:`PcaClient` is the seam: a boto3 ``acm-pca`` client satisfies it; tests use moto's
server behind a real client. Everything here is blocking (the async :class:`ca.pca.PcaSigner`
runs it in a worker thread) and bounded by the client's botocore ``Config``
(:func:`pca_botocore_config`) and, for the polling of ``GetCertificate``, by a deadline.

Failures become :mod:`ca.errors` values::

    SignerUnavailable  503  ca_signer_unavailable  ThrottlingException, RequestFailedException,
                                                   RequestInProgressException past the deadline,
                                                   HTTP 5xx, connection errors and timeouts
    SignerDenied       503  ca_pca_not_active      InvalidStateException (disabled, expired, deleted)
                            ca_pca_not_found       ResourceNotFoundException, InvalidArnException
                            ca_signer_denied       AccessDeniedException, no credentials, LimitExceeded,
                                                   InvalidArgs/Validation (an operator must act)
    CSRError           400  key_type_unsupported   MalformedCSRException (Private CA signs RSA and ECDSA keys)

``detail`` names the CA and what to check when ``public=False`` (set-up, the operator reads
it); with ``public=True`` (serving) it is generic and only ``reason`` names the CA.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime
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
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.errors import CAError, CSRError, SignerDenied, SignerUnavailable
from ca.profile import LeafTemplate

__all__ = [
    "CLIENT_AUTH_TEMPLATE",
    "PcaClient",
    "api_passthrough",
    "colon_serial",
    "pca_botocore_config",
    "pca_ca_certificate",
    "pca_describe",
    "pca_failure",
    "pca_fetch",
    "pca_issue",
    "pca_revoke",
    "signing_algorithm_for",
]

# Private CA's client-authentication template whose Subject and SANs come from the API passthrough.
CLIENT_AUTH_TEMPLATE: Final = "arn:aws:acm-pca:::template/EndEntityClientAuthCertificate_APIPassthrough/V1"
_REVOCATION_REASONS: Final = {
    x509.ReasonFlags.unspecified: "UNSPECIFIED",
    x509.ReasonFlags.key_compromise: "KEY_COMPROMISE",
    x509.ReasonFlags.ca_compromise: "CERTIFICATE_AUTHORITY_COMPROMISE",
    x509.ReasonFlags.affiliation_changed: "AFFILIATION_CHANGED",
    x509.ReasonFlags.superseded: "SUPERSEDED",
    x509.ReasonFlags.cessation_of_operation: "CESSATION_OF_OPERATION",
    x509.ReasonFlags.privilege_withdrawn: "PRIVILEGE_WITHDRAWN",
    x509.ReasonFlags.aa_compromise: "A_A_COMPROMISE",
    # Private CA has no certificateHold; revocations here are final anyway.
    x509.ReasonFlags.certificate_hold: "UNSPECIFIED",
}


class PcaClient(Protocol):
    """The Private CA calls an issuing CA needs (a boto3 ``acm-pca`` client has them)."""

    def issue_certificate(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def get_certificate(self, *, CertificateAuthorityArn: str, CertificateArn: str) -> Mapping[str, Any]: ...

    def get_certificate_authority_certificate(self, *, CertificateAuthorityArn: str) -> Mapping[str, Any]: ...

    def describe_certificate_authority(self, *, CertificateAuthorityArn: str) -> Mapping[str, Any]: ...

    def revoke_certificate(
        self, *, CertificateAuthorityArn: str, CertificateSerial: str, RevocationReason: str
    ) -> Mapping[str, Any]: ...


def pca_botocore_config(
    *, connect_timeout: float = 1.0, read_timeout: float = 5.0, max_attempts: int = 3, max_pool_connections: int = 10
) -> Config:
    """The botocore ``Config`` for the ``acm-pca`` client: short timeouts, standard retries (throttling, 5xx)."""
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
    )


def signing_algorithm_for(issuer: x509.Certificate) -> str:
    """The ``SigningAlgorithm`` matching the CA's key: SHA-256/384/512 with ECDSA by curve, SHA-256 with RSA.

    Raises ``ValueError`` for a key Private CA cannot hold.
    """
    key = issuer.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "SHA256WITHECDSA", "secp384r1": "SHA384WITHECDSA", "secp521r1": "SHA512WITHECDSA"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
    elif isinstance(key, rsa.RSAPublicKey):
        return "SHA256WITHRSA"
    raise ValueError(f"the CA certificate's key ({type(key).__name__}) is not one AWS Private CA signs with")


def api_passthrough(template: LeafTemplate, *, organization: str | None) -> dict[str, Any]:
    """The ``ApiPassthrough`` carrying the leaf's subject (O, OU, CN), its SANs and client authentication."""
    subject: dict[str, str] = {"CommonName": template.common_name}
    if organization:
        subject["Organization"] = organization
    if template.organizational_unit:
        subject["OrganizationalUnit"] = template.organizational_unit
    names = [{"UniformResourceIdentifier": u} for u in template.uri_sans] + [{"DnsName": d} for d in template.dns_sans]
    return {
        "Subject": subject,
        "Extensions": {
            "SubjectAlternativeNames": names,
            "ExtendedKeyUsage": [{"ExtendedKeyUsageType": "CLIENT_AUTH"}],
        },
    }


def colon_serial(serial: int) -> str:
    """A serial as Private CA's RevokeCertificate takes it: hex byte pairs joined by colons."""
    text = format(serial, "x")
    text = text if len(text) % 2 == 0 else "0" + text
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2))


def pca_issue(
    client: PcaClient,
    ca_arn: str,
    *,
    csr_pem: bytes,
    signing_algorithm: str,
    passthrough: Mapping[str, Any],
    not_before: datetime,
    not_after: datetime,
    template_arn: str = CLIENT_AUTH_TEMPLATE,
    public: bool = True,
) -> str:
    """``IssueCertificate`` with ABSOLUTE validity from ``not_before`` to ``not_after``; the certificate ARN.

    An idempotency token makes botocore's retries of this call issue one certificate, not several.
    """
    try:
        reply = client.issue_certificate(
            CertificateAuthorityArn=ca_arn,
            Csr=csr_pem,
            SigningAlgorithm=signing_algorithm,
            TemplateArn=template_arn,
            ApiPassthrough=dict(passthrough),
            Validity={"Value": int(not_after.timestamp()), "Type": "ABSOLUTE"},
            ValidityNotBefore={"Value": int(not_before.timestamp()), "Type": "ABSOLUTE"},
            IdempotencyToken=secrets.token_hex(16),
        )
    except ParamValidationError:
        raise  # a malformed request is a bug here, not an answer from AWS
    except (ClientError, BotoCoreError) as exc:
        raise pca_failure(exc, ca_arn=ca_arn, operation="IssueCertificate", public=public) from exc
    arn = reply.get("CertificateArn")
    if not isinstance(arn, str) or not arn:
        raise SignerUnavailable(_UNAVAILABLE, reason=f"acm-pca:IssueCertificate on {ca_arn}: no CertificateArn")
    return arn


def pca_fetch(
    client: PcaClient,
    ca_arn: str,
    certificate_arn: str,
    *,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    public: bool = True,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """``GetCertificate`` until Private CA has signed (``RequestInProgressException`` means not yet).

    Polls after 0.1 s, doubling to at most 1 s, until ``deadline`` (a ``clock()`` value) — the
    ``certificate_issued`` waiter's loop with a sub-second start. Returns the certificate and the
    chain Private CA sent with it. Raises :class:`SignerUnavailable` past the deadline and the
    errors of :func:`pca_failure`.
    """
    delay = 0.1
    while True:
        try:
            reply = client.get_certificate(CertificateAuthorityArn=ca_arn, CertificateArn=certificate_arn)
        except ClientError as exc:
            if _code(exc) != "RequestInProgressException":
                raise pca_failure(exc, ca_arn=ca_arn, operation="GetCertificate", public=public) from exc
        except BotoCoreError as exc:
            raise pca_failure(exc, ca_arn=ca_arn, operation="GetCertificate", public=public) from exc
        else:
            return _certificates(reply, ca_arn=ca_arn, certificate="Certificate", chain="CertificateChain")
        if clock() + delay > deadline:
            text = f"AWS Private CA {ca_arn} had not signed {certificate_arn} by the deadline; try again later"
            raise SignerUnavailable(_UNAVAILABLE if public else text, reason=text, retry_after=2)
        sleep(delay)
        delay = min(delay * 2, 1.0)


def pca_ca_certificate(
    client: PcaClient, ca_arn: str, *, public: bool = False
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """The CA's certificate and its chain up to the root (empty for a root CA): GetCertificateAuthorityCertificate."""
    try:
        reply = client.get_certificate_authority_certificate(CertificateAuthorityArn=ca_arn)
    except (ClientError, BotoCoreError) as exc:
        raise pca_failure(exc, ca_arn=ca_arn, operation="GetCertificateAuthorityCertificate", public=public) from exc
    return _certificates(reply, ca_arn=ca_arn, certificate="Certificate", chain="CertificateChain")


def pca_describe(client: PcaClient, ca_arn: str, *, public: bool = False) -> Mapping[str, Any]:
    """``DescribeCertificateAuthority``'s ``CertificateAuthority`` (status, type, usage mode, CRL configuration)."""
    try:
        reply = client.describe_certificate_authority(CertificateAuthorityArn=ca_arn)
    except (ClientError, BotoCoreError) as exc:
        raise pca_failure(exc, ca_arn=ca_arn, operation="DescribeCertificateAuthority", public=public) from exc
    authority = reply.get("CertificateAuthority")
    if not isinstance(authority, Mapping):
        raise SignerUnavailable(_UNAVAILABLE, reason=f"acm-pca:DescribeCertificateAuthority on {ca_arn}: no answer")
    return authority


def pca_revoke(client: PcaClient, ca_arn: str, serial: int, *, reason: x509.ReasonFlags | None) -> None:
    """``RevokeCertificate`` for ``serial``; one revoked already (``RequestAlreadyProcessedException``) is fine."""
    try:
        client.revoke_certificate(
            CertificateAuthorityArn=ca_arn,
            CertificateSerial=colon_serial(serial),
            RevocationReason=_REVOCATION_REASONS.get(reason or x509.ReasonFlags.unspecified, "UNSPECIFIED"),
        )
    except ClientError as exc:
        if _code(exc) == "RequestAlreadyProcessedException":
            return
        raise pca_failure(exc, ca_arn=ca_arn, operation="RevokeCertificate", public=False) from exc
    except BotoCoreError as exc:
        raise pca_failure(exc, ca_arn=ca_arn, operation="RevokeCertificate", public=False) from exc


def _certificates(
    reply: Mapping[str, Any], *, ca_arn: str, certificate: str, chain: str
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    try:
        leaf = x509.load_pem_x509_certificate(str(reply[certificate]).encode())
        chain_pem = str(reply.get(chain) or "").strip()
        rest = tuple(x509.load_pem_x509_certificates(chain_pem.encode())) if chain_pem else ()
    except (KeyError, ValueError) as exc:
        raise SignerUnavailable(
            _UNAVAILABLE, reason=f"AWS Private CA {ca_arn} answered without a readable certificate: {exc}"
        ) from None
    return leaf, rest


_UNAVAILABLE: Final = "The CA (AWS Private CA) cannot issue right now; try again later."
_DENIED_PUBLIC: Final = "The CA (AWS Private CA) is not usable; an operator must act. Try again later."
_THROTTLED: Final = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"})
_TRANSIENT: Final = frozenset(
    {"RequestFailedException", "InternalFailure", "ServiceUnavailable", "RequestTimeout", "RequestInProgressException"}
)
_NOT_ACTIVE: Final = frozenset({"InvalidStateException"})
_NOT_FOUND: Final = frozenset({"ResourceNotFoundException", "InvalidArnException"})
_NO_CREDENTIALS: Final = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)


def pca_failure(exc: ClientError | BotoCoreError, *, ca_arn: str, operation: str, public: bool) -> CAError:
    """The :mod:`ca.errors` value for a failed Private CA call ``operation`` on ``ca_arn`` (module docstring)."""
    call = f"acm-pca:{operation} on {ca_arn}"
    if isinstance(exc, _NO_CREDENTIALS):
        text = f"No AWS credentials for {call} ({type(exc).__name__}): give the issuer a role or credentials"
        return SignerDenied(_DENIED_PUBLIC if public else text, reason=f"{text}; operator must act: {exc}")
    if not isinstance(exc, ClientError):
        text = f"AWS Private CA could not be reached for {call} ({type(exc).__name__}); try again later"
        return SignerUnavailable(_UNAVAILABLE if public else text, reason=f"{text}: {exc}", retry_after=5)
    code = _code(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    aws = f"{code} (HTTP {status}): {exc.response.get('Error', {}).get('Message', '')}"
    if code in _THROTTLED or code in _TRANSIENT or status >= 500:
        throttled = code in _THROTTLED
        text = f"AWS Private CA is {'throttling' if throttled else 'failing'} {call} ({code}); try again later"
        return SignerUnavailable(
            _UNAVAILABLE if public else text, reason=f"{call}: {aws}", retry_after=2 if throttled else 5
        )
    if code == "MalformedCSRException":
        return CSRError(
            "The CA (AWS Private CA) does not accept this CSR; it signs RSA and ECDSA keys only",
            code="key_type_unsupported",
            reason=f"{call}: {aws}",
        )
    if code in _NOT_ACTIVE:
        text = f"AWS Private CA {ca_arn} is not ACTIVE ({code}): enable or renew it, or rotate to another issuer"
        return SignerDenied(
            _DENIED_PUBLIC if public else text, code="ca_pca_not_active", reason=f"{text}; operator must act: {aws}"
        )
    if code in _NOT_FOUND:
        text = f"AWS Private CA {ca_arn} does not exist ({code}): check the ARN, the region and the account"
        return SignerDenied(
            _DENIED_PUBLIC if public else text, code="ca_pca_not_found", reason=f"{text}; operator must act: {aws}"
        )
    text = (
        f"AWS Private CA refused {call} ({code or f'HTTP {status}'}): check the issuer's credentials, its IAM "
        f"policy (acm-pca:{operation} on this CA), the CA's quotas and its configuration"
    )
    return SignerDenied(_DENIED_PUBLIC if public else text, reason=f"{text}; operator must act: {aws}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
