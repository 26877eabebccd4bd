"""Signers as the metrics see them: every signature timed, and every failure counted, by key backend.

:func:`observed_loader` wraps a :class:`~issuer.service.ca.registry.SignerLoader` so that each
signer it loads reports to a :class:`~issuer.observability.seams.SignerObserver`. The backend is
the signer's own ``backend`` attribute when it has one, else the scheme of the issuer's
``key_ref`` (``file:…``, ``kms:…``, and whatever a new backend registers, such as ``pca:…``), so
a new backend is measured without a change here. Anything else a backend offers (the KMS
signer's ``check()`` for readiness) is reached through the wrapper unchanged; ``inner`` is the
signer itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography import x509

from ca.crl import RevokedEntry
from ca.signer import IssuedCertificate, Signer, SignerCapabilities, SignerHealth, SigningRequest
from issuer.observability.seams import SignerObserver
from issuer.service.ca.registry import SignerLoader
from issuer.store.records import IssuerRecord

__all__ = ["ObservedSigner", "backend_of", "observed_loader"]


def backend_of(signer: object, key_ref: str) -> str:
    """The backend name of ``signer``: its ``backend`` attribute, else the scheme of ``key_ref``."""
    named = getattr(signer, "backend", None)
    if isinstance(named, str) and named:
        return named
    scheme, sep, _ = key_ref.partition(":")
    return scheme if sep and scheme else "unknown"


class ObservedSigner:
    """A :class:`~ca.signer.Signer` that reports each ``issue`` and ``sign_crl`` to ``observer``."""

    def __init__(self, inner: Signer, *, backend: str, observer: SignerObserver) -> None:
        self.inner = inner
        self.backend = backend
        self._observer = observer
        observer.signer_loaded(backend)

    @property
    def issuer_certificate(self) -> x509.Certificate:
        return self.inner.issuer_certificate

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self.inner.chain

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self.inner.roots

    @property
    def capabilities(self) -> SignerCapabilities:
        return self.inner.capabilities

    async def issue(self, request: SigningRequest) -> IssuedCertificate:
        started = time.perf_counter()
        try:
            issued = await self.inner.issue(request)
        except Exception as exc:
            self._failed("issue", started, exc)
            raise
        self._observer.signed(self.backend, "issue", "ok", time.perf_counter() - started, None)
        return issued

    async def revoke(self, serial: int, *, reason: x509.ReasonFlags | None) -> None:
        started = time.perf_counter()
        try:
            await self.inner.revoke(serial, reason=reason)
        except Exception as exc:
            self._failed("revoke", started, exc)
            raise
        self._observer.signed(self.backend, "revoke", "ok", time.perf_counter() - started, None)

    async def health(self) -> SignerHealth:
        return await self.inner.health()

    async def sign_crl(
        self, revoked: Sequence[RevokedEntry], *, now: datetime, next_update: datetime, crl_number: int
    ) -> x509.CertificateRevocationList:
        started = time.perf_counter()
        try:
            crl = await self.inner.sign_crl(revoked, now=now, next_update=next_update, crl_number=crl_number)
        except Exception as exc:
            self._failed("crl", started, exc)
            raise
        self._observer.signed(self.backend, "crl", "ok", time.perf_counter() - started, None)
        return crl

    def __getattr__(self, name: str) -> Any:
        # Capabilities of the backend (``check()``, …) pass through.
        return getattr(self.inner, name)

    def _failed(self, operation: str, started: float, exc: Exception) -> None:
        code = getattr(exc, "code", None) or type(exc).__name__
        self._observer.signed(self.backend, operation, "error", time.perf_counter() - started, str(code))


def observed_loader(load: SignerLoader, observer: SignerObserver) -> SignerLoader:
    """``load``, with every signer it returns wrapped in an :class:`ObservedSigner`."""

    async def observed(
        issuer: IssuerRecord,
        *,
        certificate: x509.Certificate,
        chain: tuple[x509.Certificate, ...],
        roots: tuple[x509.Certificate, ...],
    ) -> Signer:
        signer = await load(issuer, certificate=certificate, chain=chain, roots=roots)
        if isinstance(signer, ObservedSigner):
            return signer
        return ObservedSigner(signer, backend=backend_of(signer, issuer.key_ref), observer=observer)

    return observed
