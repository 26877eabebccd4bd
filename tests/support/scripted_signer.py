"""The real CA signer behind switches a test flips: hold issuances, fail like KMS, hang a health check.

Passed to ``running_issuer(..., signer=...)`` (the registry hands it out for the active
issuer). Everything it signs is signed by the real CA key in ``tmp_path/state/ca``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509

from ca.crl import RevokedEntry
from ca.errors import SignerUnavailable
from ca.files import load_local_signer
from ca.signer import IssuedCertificate, Signer, SignerCapabilities, SignerHealth, SigningRequest
from tests.support.harness import PASSPHRASE, write_ca


class ScriptedSigner:
    """A :class:`~ca.signer.Signer` with a KMS-style ``health()``.

    ``hold()`` makes each ``issue`` wait until ``release()``; ``down`` makes ``issue`` raise
    :class:`SignerUnavailable` (what the KMS signer raises when KMS is throttled or unreachable)
    and ``health`` report it; ``hang_check`` makes ``health`` never return;
    ``before_issue(n)`` is awaited on the n-th ``issue`` before anything else.
    """

    def __init__(self, inner: Signer) -> None:
        self.inner = inner
        self.down = False
        self.hang_check = False
        self.arrived = 0
        self.checks = 0
        self.before_issue: Callable[[int], Awaitable[None]] | None = None
        self._gate: asyncio.Event | None = None
        self._arrival = asyncio.Event()

    @classmethod
    def for_state(cls, tmp_path: Path) -> ScriptedSigner:
        """The CA of ``tmp_path/state`` (made now), scripted."""
        write_ca(tmp_path / "state")
        return cls(load_local_signer(tmp_path / "state" / "ca", passphrase=PASSPHRASE.encode()))

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

    def hold(self) -> None:
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
        self._gate = None

    async def arrivals(self, count: int) -> None:
        """Return once ``count`` issuances have reached the signer (fails after 30 s rather than hang)."""
        async with asyncio.timeout(30):
            while self.arrived < count:
                self._arrival.clear()
                await self._arrival.wait()

    async def issue(self, request: SigningRequest) -> IssuedCertificate:
        self.arrived += 1
        self._arrival.set()
        if self.before_issue is not None:
            await self.before_issue(self.arrived)
        gate = self._gate
        if gate is not None:
            async with asyncio.timeout(60):  # a test that forgot to release fails instead of hanging
                await gate.wait()
        if self.down:
            raise SignerUnavailable("The CA's signer is unavailable; try again shortly.", reason="scripted: down")
        return await self.inner.issue(request)

    async def sign_crl(
        self, revoked: Sequence[RevokedEntry], *, now: datetime, next_update: datetime, crl_number: int
    ) -> x509.CertificateRevocationList:
        return await self.inner.sign_crl(revoked, now=now, next_update=next_update, crl_number=crl_number)

    async def revoke(self, serial: int, *, reason: x509.ReasonFlags | None) -> None:
        await self.inner.revoke(serial, reason=reason)

    async def health(self) -> SignerHealth:
        self.checks += 1
        if self.hang_check:
            await asyncio.Event().wait()
        if self.down:
            return SignerHealth.failed(SignerUnavailable("The CA's signer is unavailable.", reason="scripted: down"))
        return await self.inner.health()
