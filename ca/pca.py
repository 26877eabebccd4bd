"""A :class:`~ca.signer.Signer` whose issuing CA is an AWS Private CA.

Private CA takes the CSR, applies a template (``EndEntityClientAuthCertificate_APIPassthrough``),
the API passthrough (the leaf's subject and SANs) and an ABSOLUTE validity, and chooses the
serial itself. Its answer is checked by :func:`ca.issued_check.check_issued` before it is
returned: a certificate that is not the one asked for is :class:`~ca.errors.SignerResultRejected`,
never a certificate. Private CA signs and publishes its own CRL (``signs_crls`` False) and keeps
its own revocation list, so a revocation is sent to it too (``revokes_upstream`` True). Wiring::

    client = boto3.client("acm-pca", region_name=region, config=pca_botocore_config())
    signer = await load_pca_signer(client, ca_arn, issuer_certificate=cert, roots=roots, chain=chain)

Each call runs in a worker thread (``asyncio.to_thread``) under ``call_timeout`` seconds, the
polling of ``GetCertificate`` included; botocore's timeouts and the polling deadline end the
thread itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.crl import RevokedEntry
from ca.errors import CAError, CAStateError, SignerCapabilityMissing, SignerDenied, SignerUnavailable
from ca.issued_check import DEFAULT_TOLERANCE, check_issued
from ca.keys import key_type_of
from ca.pca_client import (
    CLIENT_AUTH_TEMPLATE,
    PcaClient,
    api_passthrough,
    pca_ca_certificate,
    pca_describe,
    pca_fetch,
    pca_issue,
    pca_revoke,
    signing_algorithm_for,
)
from ca.profile import leaf_validity, organization_of
from ca.signer import IssuedCertificate, SignerCapabilities, SignerHealth, SigningRequest

__all__ = ["DEFAULT_HEALTH_TTL", "DEFAULT_TIMEOUT", "PcaSigner", "load_pca_signer"]

DEFAULT_TIMEOUT: Final = 10.0  # seconds for IssueCertificate plus the polling of GetCertificate
DEFAULT_HEALTH_TTL: Final = 30.0  # seconds a successful check (or issuance) counts as healthy
DEFAULT_HEALTH_TIMEOUT: Final = 2.0  # seconds for the readiness DescribeCertificateAuthority

_T = TypeVar("_T")


class PcaSigner:
    """Issues through the Private CA ``ca_arn`` whose certificate is ``issuer_certificate``.

    Normally made by :func:`load_pca_signer`, which checks the CA is ACTIVE and still has this
    certificate's key; constructing it directly does no I/O. ``chain`` defaults to the issuing
    certificate alone; ``tolerance`` is how far the returned validity may stray (see
    :func:`~ca.issued_check.check_issued`); ``clock`` (monotonic seconds) times the health
    cache and the polling deadline. Raises ``ValueError`` for a certificate key Private CA
    cannot hold, no roots, an empty ``ca_arn`` or a non-positive timeout.
    """

    CAPABILITIES: ClassVar[SignerCapabilities] = SignerCapabilities(signs_crls=False, revokes_upstream=True)

    def __init__(
        self,
        *,
        client: PcaClient,
        ca_arn: str,
        issuer_certificate: x509.Certificate,
        roots: Sequence[x509.Certificate],
        chain: Sequence[x509.Certificate] | None = None,
        call_timeout: float = DEFAULT_TIMEOUT,
        health_ttl: float = DEFAULT_HEALTH_TTL,
        health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
        tolerance: timedelta = DEFAULT_TOLERANCE,
        template_arn: str = CLIENT_AUTH_TEMPLATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ca_arn:
            raise ValueError("ca_arn is empty")
        if not roots:
            raise ValueError("a signer needs at least one root in its trust bundle")
        if call_timeout <= 0 or health_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._algorithm = signing_algorithm_for(issuer_certificate)
        self._client = client
        self._arn = ca_arn
        self._certificate = issuer_certificate
        self._organization = organization_of(issuer_certificate)
        self._roots = tuple(roots)
        self._chain = tuple(chain) if chain is not None else (issuer_certificate,)
        self._timeout = call_timeout
        self._health_ttl = health_ttl
        self._health_timeout = health_timeout
        self._tolerance = tolerance
        self._template_arn = template_arn
        self._clock = clock
        self._healthy_at: float | None = None
        self._health_lock = asyncio.Lock()

    @property
    def issuer_certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self._chain

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self._roots

    @property
    def capabilities(self) -> SignerCapabilities:
        return self.CAPABILITIES

    @property
    def ca_arn(self) -> str:
        return self._arn

    async def issue(self, request: SigningRequest) -> IssuedCertificate:
        """A leaf from Private CA for ``request`` (which must carry the CSR), checked before it is returned.

        Raises ``CSRError`` ``key_type_unsupported``, ``CAStateError`` ``ca_expired``,
        ``SignerResultRejected`` (the certificate differs from the request), ``SignerUnavailable``
        (throttled, failing, unreachable, over ``call_timeout``) and ``SignerDenied``.
        """
        if request.csr_der is None:
            raise ValueError("AWS Private CA signs the CSR itself: the signing request must carry it")
        key_type_of(request.public_key)
        not_before, not_after = leaf_validity(request.template, issuer=self._certificate)
        csr_pem = x509.load_der_x509_csr(request.csr_der).public_bytes(serialization.Encoding.PEM)
        passthrough = api_passthrough(request.template, organization=self._organization)
        deadline = self._clock() + self._timeout

        def issue_and_fetch() -> x509.Certificate:
            arn = pca_issue(
                self._client,
                self._arn,
                csr_pem=csr_pem,
                signing_algorithm=self._algorithm,
                passthrough=passthrough,
                not_before=not_before,
                not_after=not_after,
                template_arn=self._template_arn,
            )
            certificate, _ = pca_fetch(self._client, self._arn, arn, deadline=deadline, clock=self._clock)
            return certificate

        certificate = await self._call(f"acm-pca:IssueCertificate on {self._arn}", self._timeout, issue_and_fetch)
        check_issued(certificate, request, issuer=self._certificate, tolerance=self._tolerance)
        return IssuedCertificate(certificate, self._chain)

    async def sign_crl(
        self, revoked: Sequence[RevokedEntry], *, now: datetime, next_update: datetime, crl_number: int
    ) -> x509.CertificateRevocationList:
        raise SignerCapabilityMissing("AWS Private CA signs and publishes its own CRL (to its S3 bucket)")

    async def revoke(self, serial: int, *, reason: x509.ReasonFlags | None) -> None:
        """``RevokeCertificate`` at Private CA (done before counts as done); raises its errors, naming the CA."""
        await self._call(
            f"acm-pca:RevokeCertificate on {self._arn}",
            self._timeout,
            lambda: pca_revoke(self._client, self._arn, serial, reason=reason),
            public=False,
        )

    async def health(self) -> SignerHealth:
        """Healthy if Private CA answered within ``health_ttl``, else one bounded DescribeCertificateAuthority
        (shared by concurrent callers) that must say ACTIVE. Never raises a CAError."""
        if self._fresh():
            return SignerHealth.healthy()
        async with self._health_lock:
            if self._fresh():
                return SignerHealth.healthy()
            try:
                authority = await self._call(
                    f"acm-pca:DescribeCertificateAuthority on {self._arn}",
                    self._health_timeout,
                    lambda: pca_describe(self._client, self._arn, public=True),
                )
                _require_active(authority, self._arn, public=True)
            except CAError as exc:
                self._healthy_at = None  # Private CA answered, but not ACTIVE: not a success to cache
                return SignerHealth.failed(exc)
        return SignerHealth.healthy()

    def _fresh(self) -> bool:
        return self._healthy_at is not None and self._clock() - self._healthy_at < self._health_ttl

    async def _call(self, call: str, seconds: float, work: Callable[[], _T], *, public: bool = True) -> _T:
        try:
            result = await _bounded(seconds, call, work, public=public)
        except (SignerUnavailable, CAStateError):
            self._healthy_at = None  # readiness asks Private CA again rather than trusting an older success
            raise
        self._healthy_at = self._clock()
        return result

    def __repr__(self) -> str:
        return f"PcaSigner(issuer={self._certificate.subject.rfc4514_string()!r}, ca_arn={self._arn!r})"


async def load_pca_signer(
    client: PcaClient,
    ca_arn: str,
    *,
    issuer_certificate: x509.Certificate,
    roots: Sequence[x509.Certificate],
    chain: Sequence[x509.Certificate] | None = None,
    call_timeout: float = DEFAULT_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    **options: Any,
) -> PcaSigner:
    """A :class:`PcaSigner` for ``ca_arn``, checked once: the CA is ACTIVE and its key is the certificate's.

    Raises ``SignerDenied`` (``ca_pca_not_active``, ``ca_pca_not_found``, denied),
    ``SignerUnavailable`` and ``CAStateError`` ``ca_pca_mismatch`` (Private CA now holds another
    key); all name the CA in ``detail``.
    """
    authority = await _bounded(
        call_timeout, f"acm-pca:DescribeCertificateAuthority on {ca_arn}", lambda: pca_describe(client, ca_arn)
    )
    _require_active(authority, ca_arn, public=False)
    current, _ = await _bounded(
        call_timeout,
        f"acm-pca:GetCertificateAuthorityCertificate on {ca_arn}",
        lambda: pca_ca_certificate(client, ca_arn),
    )
    if _spki(current) != _spki(issuer_certificate):
        raise CAStateError(
            f"AWS Private CA {ca_arn} holds another key than the registered issuing certificate "
            f"{issuer_certificate.subject.rfc4514_string()}; register it again (`issuer ca rotate --aws-pca-arn`)",
            code="ca_pca_mismatch",
        )
    return PcaSigner(
        client=client,
        ca_arn=ca_arn,
        issuer_certificate=issuer_certificate,
        roots=roots,
        chain=chain,
        call_timeout=call_timeout,
        clock=clock,
        **options,
    )


def _require_active(authority: Any, ca_arn: str, *, public: bool) -> None:
    status = str(authority.get("Status", ""))
    if status != "ACTIVE":
        text = f"AWS Private CA {ca_arn} is {status or 'in an unknown state'}, not ACTIVE: it cannot issue"
        raise SignerDenied(
            "The CA (AWS Private CA) is not usable; an operator must act. Try again later." if public else text,
            code="ca_pca_not_active",
            reason=text,
        )


def _spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def _bounded(seconds: float, call: str, work: Callable[[], _T], *, public: bool = True) -> _T:
    # The thread is not stopped by the timeout (nothing can stop it); botocore's timeouts and the deadline end it.
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await asyncio.to_thread(work)
    except TimeoutError:
        if not scope.expired():
            raise
        text = f"AWS Private CA did not answer {call} within {seconds:g} s; try again later"
        raise SignerUnavailable(
            "The CA (AWS Private CA) cannot issue right now; try again later." if public else text,
            reason=text,
            retry_after=5,
        ) from None
