"""A :class:`~ca.signer.Signer` whose issuing key never leaves AWS KMS.

The certificate profile is the local backend's (``leaf_builder``/``crl_builder``);
only the signature comes from KMS (``ca.kms_x509`` explains how), and every
certificate and CRL is verified against the issuing certificate before it is
returned. Wiring it into a service::

    client = boto3.session.Session().client("kms", region_name=region, config=kms_botocore_config())
    signer = await load_kms_signer(client, "alias/issuer-ca", issuer_certificate=issuing, roots=roots)
    ...
    await signer.health()  # in /readyz: cached GetPublicKey; never raises

Each KMS call runs in a worker thread (``asyncio.to_thread``) under ``call_timeout``
seconds; botocore's connect/read timeouts and retries (``kms_botocore_config``)
bound the thread itself, which keeps running after the caller has given up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import ClassVar, Final, TypeVar

from cryptography import x509

from ca.crl import RevokedEntry, crl_builder
from ca.errors import CAError, KMSKeyError, SignerCapabilityMissing, SignerUnavailable
from ca.keys import key_type_of
from ca.kms_client import (
    KmsClient,
    KmsKey,
    kms_botocore_config,
    kms_public_key,
    kms_sign_certificate,
    kms_sign_crl,
    same_public_key,
)
from ca.kms_x509 import KmsAlgorithm, algorithm_for_public_key
from ca.profile import leaf_builder
from ca.signer import IssuedCertificate, Serials, SignerCapabilities, SignerHealth, SigningRequest

__all__ = [
    "DEFAULT_HEALTH_TIMEOUT",
    "DEFAULT_HEALTH_TTL",
    "DEFAULT_TIMEOUT",
    "KmsSigner",
    "kms_botocore_config",
    "load_kms_signer",
]

DEFAULT_TIMEOUT: Final = 5.0  # seconds for one signing, retries included
DEFAULT_HEALTH_TTL: Final = 30.0  # seconds a successful check (or signing) counts as healthy
DEFAULT_HEALTH_TIMEOUT: Final = 2.0  # seconds for the readiness GetPublicKey

_T = TypeVar("_T")


class KmsSigner:
    """A :class:`~ca.signer.Signer` issuing with the KMS key ``key_id`` of ``issuer_certificate``.

    Normally made by :func:`load_kms_signer`, which checks that the key belongs to the
    certificate; constructing it directly does no I/O and checks nothing in KMS (a
    wrong key is then caught on first use as ``ca_kms_signature_invalid``). ``chain``
    defaults to the issuing certificate alone. ``clock`` (monotonic seconds) times the
    health cache. Raises ``ValueError`` for a certificate key KMS cannot hold, no
    roots, an empty ``key_id`` or a non-positive timeout. ``serials`` gives the leaves' serials
    (default: cryptography's random 159-bit ones).
    """

    CAPABILITIES: ClassVar[SignerCapabilities] = SignerCapabilities(signs_crls=True, revokes_upstream=False)

    def __init__(
        self,
        *,
        client: KmsClient,
        key_id: str,
        issuer_certificate: x509.Certificate,
        roots: Sequence[x509.Certificate],
        chain: Sequence[x509.Certificate] | None = None,
        call_timeout: float = DEFAULT_TIMEOUT,
        health_ttl: float = DEFAULT_HEALTH_TTL,
        health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        serials: Serials = x509.random_serial_number,
    ) -> None:
        algorithm = algorithm_for_public_key(issuer_certificate.public_key())
        if algorithm is None:
            raise ValueError("the issuing certificate's key is not one KMS holds (ECDSA P-256/P-384, RSA 2048-4096)")
        if not roots:
            raise ValueError("a signer needs at least one root in its trust bundle")
        if not key_id:
            raise ValueError("key_id is empty")
        if call_timeout <= 0 or health_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._client = client
        self._key_id = key_id
        self._algorithm = algorithm
        self._certificate = issuer_certificate
        self._roots = tuple(roots)
        self._chain = tuple(chain) if chain is not None else (issuer_certificate,)
        self._timeout = call_timeout
        self._health_ttl = health_ttl
        self._health_timeout = health_timeout
        self._clock = clock
        self._healthy_at: float | None = None
        self._health_lock = asyncio.Lock()
        self._serials = serials

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
    def key_id(self) -> str:
        """The KMS key signing (the key ARN when loaded by :func:`load_kms_signer`)."""
        return self._key_id

    @property
    def algorithm(self) -> KmsAlgorithm:
        return self._algorithm

    async def issue(self, request: SigningRequest) -> IssuedCertificate:
        """A leaf signed in KMS, verified against the issuing certificate (see ``Signer.issue``).

        Raises ``CSRError`` ``key_type_unsupported``, ``CAStateError`` ``ca_expired``,
        :class:`SignerUnavailable` (throttled, unreachable, over ``call_timeout``),
        ``SignerDenied`` (access denied, key disabled or gone) and ``KMSKeyError``
        ``ca_kms_signature_invalid``. Their ``detail`` names no key; ``reason`` does.
        """
        # The caller should have checked the CSR already; refusing here too keeps the CA safe on its own.
        key_type_of(request.public_key)
        builder = leaf_builder(request.template, request.public_key, issuer=self._certificate, serial=self._serials())
        certificate = await self._signed(
            lambda: kms_sign_certificate(
                self._client, self._key_id, builder, algorithm=self._algorithm, issuer=self._certificate, public=True
            )
        )
        return IssuedCertificate(certificate, self._chain)

    async def sign_crl(
        self,
        revoked: Sequence[RevokedEntry],
        *,
        now: datetime,
        next_update: datetime,
        crl_number: int,
    ) -> x509.CertificateRevocationList:
        """A CRL listing ``revoked`` signed in KMS and verified; raises as :meth:`issue` does."""
        builder = crl_builder(
            revoked, issuer=self._certificate, now=now, next_update=next_update, crl_number=crl_number
        )
        return await self._signed(
            lambda: kms_sign_crl(
                self._client, self._key_id, builder, algorithm=self._algorithm, issuer=self._certificate, public=True
            )
        )

    async def revoke(self, serial: int, *, reason: x509.ReasonFlags | None) -> None:
        raise SignerCapabilityMissing("a KMS-held key keeps no revocation list of its own; nothing to revoke there")

    async def health(self) -> SignerHealth:
        """:meth:`check` as a value: healthy, or the code and reason of why not (never raises a CAError)."""
        try:
            await self.check()
        except CAError as exc:
            return SignerHealth.failed(exc)
        return SignerHealth.healthy()

    async def _signed(self, sign: Callable[[], _T]) -> _T:
        """``sign()`` (one kms:Sign) under ``call_timeout``; its outcome is the health :meth:`check` reports."""
        try:
            signed = await _bounded(self._timeout, f"kms:Sign on key {self._key_id}", sign)
        except CAError:
            self._healthy_at = None  # readiness asks KMS again rather than trusting an older success
            raise
        self._healthy_at = self._clock()  # a signature is the best health check there is
        return signed

    async def check(self) -> None:
        """Return if the KMS key answered within the last ``health_ttl`` seconds, else ask it now.

        For ``/readyz``: one ``GetPublicKey`` under ``health_timeout`` (concurrent
        callers share it), which must still return the issuing certificate's key.
        Failures are not cached. Raises :class:`SignerUnavailable`, ``SignerDenied``
        or ``KMSKeyError`` (``ca_kms_key_mismatch``: the key id now names another key).
        """
        if self._fresh():
            return
        async with self._health_lock:
            if self._fresh():
                return
            key = await _bounded(
                self._health_timeout,
                f"kms:GetPublicKey on key {self._key_id}",
                lambda: kms_public_key(self._client, self._key_id, public=True),
            )
            if not same_public_key(key, self._certificate):
                text = _mismatch(self._key_id, key, self._certificate)
                raise KMSKeyError(
                    "The CA's signing key in AWS KMS is not the issuing CA's key; an operator must act.",
                    code="ca_kms_key_mismatch",
                    reason=text,
                )
            self._healthy_at = self._clock()

    def _fresh(self) -> bool:
        return self._healthy_at is not None and self._clock() - self._healthy_at < self._health_ttl

    def __repr__(self) -> str:
        return (
            f"KmsSigner(issuer={self._certificate.subject.rfc4514_string()!r}, "
            f"serial={self._certificate.serial_number:x}, key_id={self._key_id!r})"
        )


async def load_kms_signer(
    client: KmsClient,
    key_id: str,
    *,
    issuer_certificate: x509.Certificate,
    roots: Sequence[x509.Certificate],
    chain: Sequence[x509.Certificate] | None = None,
    call_timeout: float = DEFAULT_TIMEOUT,
    health_ttl: float = DEFAULT_HEALTH_TTL,
    health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    serials: Serials = x509.random_serial_number,
) -> KmsSigner:
    """A :class:`KmsSigner` for ``key_id`` (key id, key ARN, alias name or alias ARN), checked once.

    Calls ``GetPublicKey`` once (under ``call_timeout``) and signs from then on with the
    key ARN it returns, so moving an alias later does not change the key. Raises
    ``KMSKeyError`` ``ca_kms_key_unsupported`` (not a SIGN_VERIFY key of a supported
    spec) or ``ca_kms_key_mismatch`` (not ``issuer_certificate``'s key),
    :class:`SignerUnavailable` / ``SignerDenied``; all name the key in ``detail``.
    """
    if not key_id:
        raise ValueError("key_id is empty")
    key = await _bounded(
        call_timeout, f"kms:GetPublicKey on key {key_id}", lambda: kms_public_key(client, key_id), public=False
    )
    if not same_public_key(key, issuer_certificate):
        raise KMSKeyError(_mismatch(key_id, key, issuer_certificate), code="ca_kms_key_mismatch")
    return KmsSigner(
        client=client,
        key_id=key.key_id,
        issuer_certificate=issuer_certificate,
        roots=roots,
        chain=chain,
        call_timeout=call_timeout,
        health_ttl=health_ttl,
        health_timeout=health_timeout,
        clock=clock,
        serials=serials,
    )


def _mismatch(key_id: str, key: KmsKey, certificate: x509.Certificate) -> str:
    named = key_id if key_id == key.key_id else f"{key_id} ({key.key_id})"
    return (
        f"KMS key {named} is not the key of the issuing certificate {certificate.subject.rfc4514_string()} "
        f"(serial {certificate.serial_number:x}): their public keys differ. Configure the key this certificate "
        "was issued for, or certify this key as a new issuing CA"
    )


async def _bounded(seconds: float, call: str, work: Callable[[], _T], *, public: bool = True) -> _T:
    # The thread is not stopped by the timeout (nothing can stop it); botocore's own timeouts end it.
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await asyncio.to_thread(work)
    except TimeoutError:
        if not scope.expired():
            raise
        text = f"AWS KMS did not answer {call} within {seconds:g} s; try again later"
        raise SignerUnavailable(
            "The CA's signing key in AWS KMS cannot be used right now; try again later." if public else text,
            reason=text,
            retry_after=5,
        ) from None
