"""The CA issuer registry: which issuing CA signs, and what the truststore holds — read by every replica.

The ``ca_issuers`` and ``ca_roots`` tables are the source of truth. Each replica
loads them at start-up, then polls a cheap version query every few seconds and
rebuilds its :class:`TrustSnapshot` when anything changed, so an issuer prepared,
activated or retired on one replica takes effect on all of them within seconds,
without a restart. A snapshot is immutable; a request uses one from start to end.

The truststore (``GET /v1/truststore``) holds every issuing CA that is prepared or
active and not expired — a prepared one appears before it signs anything, so API
Gateway already trusts its leaves when it becomes active — then the active roots.
Retired issuers leave it (``issuer ca retire`` refuses while their leaves live).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.signer import Signer
from ca.truststore import build_truststore
from issuer.errors import ConfigError
from issuer.hashing import strong_etag
from issuer.service.issuance.model import Clock
from issuer.store import issuers as store
from issuer.store.records import IssuerRecord, RootRecord

__all__ = [
    "ActiveIssuer",
    "IssuerRegistry",
    "IssuerView",
    "SignerLoader",
    "TrustSnapshot",
    "certificates_of",
    "export_bundle",
    "export_truststore",
    "truststore_of",
    "truststore_pem",
]

log = logging.getLogger("issuer.registry")


class SignerLoader(Protocol):
    async def __call__(
        self,
        issuer: IssuerRecord,
        *,
        certificate: x509.Certificate,
        chain: tuple[x509.Certificate, ...],
        roots: tuple[x509.Certificate, ...],
    ) -> Signer:
        """A signer for ``issuer`` (its ``key_ref`` says where the key is); raises ConfigError/CAError."""
        ...


@dataclass(frozen=True, slots=True)
class IssuerView:
    """A registered issuing CA with its certificate parsed."""

    record: IssuerRecord
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # the issuing certificate, then its intermediates (nearest first)

    @property
    def id(self) -> int:
        return self.record.id


@dataclass(frozen=True, slots=True)
class ActiveIssuer:
    id: int
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    signer: Signer


@dataclass(frozen=True, slots=True)
class TrustSnapshot:
    """One consistent view of the registry."""

    active: ActiveIssuer
    issuers: tuple[IssuerView, ...]
    roots: tuple[x509.Certificate, ...]
    bundle_pem: bytes  # the roots: what clients trust
    truststore_pem: bytes  # what API Gateway's truststore must hold
    truststore_etag: str
    version: tuple[object, ...]

    def names_issuer_of(self, certificate: x509.Certificate) -> bool:
        """Whether a registered issuer has the name ``certificate`` gives as its issuer.

        A name, not a signature: a caller that must know the certificate is one of ours compares
        its bytes with the recorded certificate (see ``issuer.service.issuance.renew``).
        """
        return any(view.certificate.subject == certificate.issuer for view in self.issuers)


class IssuerRegistry:
    """Loads and refreshes the :class:`TrustSnapshot` of this replica."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        load_signer: SignerLoader,
        clock: Clock,
        refresh_every: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._load_signer = load_signer
        self._clock = clock
        self.refresh_every = refresh_every
        self._snapshot: TrustSnapshot | None = None
        self._signers: dict[str, Signer] = {}
        # Why the last refresh failed (this replica still serves the previous view), or None.
        self.stale_reason: str | None = None

    @property
    def snapshot(self) -> TrustSnapshot:
        if self._snapshot is None:
            raise RuntimeError("the issuer registry has not been loaded")
        return self._snapshot

    async def load(self) -> TrustSnapshot:
        """Read the registry and load the active issuer's signer.

        Raises :class:`ConfigError` when no issuer is active, and whatever the signer
        loader raises when the active issuer's key cannot be used.
        """
        async with self._sessions() as session:
            version = await store.registry_version(session)
            issuers = await store.list_issuers(session)
            roots = await store.list_roots(session)
        views = tuple(_view(r) for r in issuers)
        root_certs = _roots(roots)
        active = [v for v in views if v.record.state == "active"]
        if not active:
            raise ConfigError("no active issuing CA in the registry; create one with `issuer ca init`")
        (view,) = active
        signer = self._signers.get(view.record.fingerprint_sha256)
        if signer is None:
            signer = await self._load_signer(
                view.record, certificate=view.certificate, chain=view.chain, roots=root_certs
            )
            self._signers = {view.record.fingerprint_sha256: signer}
        truststore = truststore_pem(views, root_certs, now=self._clock())
        self._snapshot = TrustSnapshot(
            active=ActiveIssuer(id=view.id, certificate=view.certificate, chain=view.chain, signer=signer),
            issuers=views,
            roots=root_certs,
            bundle_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in root_certs),
            truststore_pem=truststore,
            truststore_etag=strong_etag(truststore),
            version=version,
        )
        return self._snapshot

    async def refresh(self) -> bool:
        """Reload when the registry changed; True if it did. A failed reload keeps the old snapshot."""
        async with self._sessions() as session:
            version = await store.registry_version(session)
        if self._snapshot is not None and version == self._snapshot.version:
            return False
        before = self._snapshot.active.id if self._snapshot else None
        snapshot = await self.load()
        if snapshot.active.id != before:
            log.info(
                "issuing CA is now %s (registry id %d)",
                snapshot.active.certificate.subject.rfc4514_string(),
                snapshot.active.id,
            )
        else:
            log.info(
                "CA registry changed; truststore now holds %d certificates", snapshot.truststore_pem.count(b"BEGIN")
            )
        return True

    async def watch(self) -> None:
        """Refresh every ``refresh_every`` seconds until cancelled; errors are logged, never raised."""
        while True:
            await asyncio.sleep(self.refresh_every)
            try:
                await self.refresh()
                self.stale_reason = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {getattr(exc, 'detail', None) or exc}"
                if reason != self.stale_reason:
                    log.error("CA registry refresh failed (keeping the previous view): %s", reason)
                self.stale_reason = reason


def truststore_pem(views: Sequence[IssuerView], roots: Sequence[x509.Certificate], *, now: datetime) -> bytes:
    """The truststore: prepared and active issuers that have not expired (the active one first,
    then the newest), each followed by its intermediates, then the roots."""
    trusted = [v for v in views if v.record.state in ("prepared", "active") and v.record.not_after > now]
    trusted.sort(key=lambda v: (v.record.state != "active", -v.record.id))
    return build_truststore([c for v in trusted for c in v.chain], roots)


async def export_truststore(sessions: async_sessionmaker[AsyncSession], *, now: datetime) -> bytes:
    """The truststore as ``GET /v1/truststore`` serves it, read straight from the registry (no key needed)."""
    async with sessions() as session:
        issuers = await store.list_issuers(session)
        roots = await store.list_roots(session)
    return truststore_of(issuers, roots, now=now)


def truststore_of(issuers: Sequence[IssuerRecord], roots: Sequence[RootRecord], *, now: datetime) -> bytes:
    """The truststore of these registry rows, as :func:`export_truststore` gives it.

    Raises :class:`ConfigError` when there are no issuers.
    """
    if not issuers:
        raise ConfigError("the CA registry is empty; create a CA with `issuer ca init`")
    return truststore_pem(tuple(_view(r) for r in issuers), _roots(roots), now=now)


async def export_bundle(sessions: async_sessionmaker[AsyncSession]) -> bytes:
    """The trust anchors (the active roots) as PEM, as ``GET /v1/bundle`` serves them."""
    async with sessions() as session:
        roots = _roots(await store.list_roots(session))
    if not roots:
        raise ConfigError("the CA registry has no roots; create a CA with `issuer ca init`")
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in roots)


def _roots(records: Sequence[RootRecord]) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificate(r.certificate_pem.encode()) for r in records if r.state == "active")


def certificates_of(record: IssuerRecord) -> tuple[x509.Certificate, ...]:
    """The issuer's certificate, then its intermediates (nearest first)."""
    certificate = x509.load_pem_x509_certificate(record.certificate_pem.encode())
    chain = x509.load_pem_x509_certificates(record.chain_pem.encode()) if record.chain_pem.strip() else []
    return (certificate, *chain)


def _view(record: IssuerRecord) -> IssuerView:
    chain = certificates_of(record)
    return IssuerView(record=record, certificate=chain[0], chain=chain)
