"""The published revocation lists: each issuing CA's CRL (``GET /v1/crl``) and the JSON list (``GET /v1/revoked``).

Both list the revoked certificates that have not expired, and both are the same bytes on every
replica, so ETags and ``If-None-Match`` work behind a load balancer:

- The CRL of an issuer is stored in ``ca_crls`` and served from there. A replica serves the stored
  CRL while it lists exactly the issuer's revoked, unexpired certificates (a digest of the entries
  says so), is younger than ``crl_refresh`` and has not reached ``nextUpdate``; otherwise it signs
  a new one. Building takes the next ``ca_issuers.crl_number`` with an UPDATE — the issuer row's
  lock serialises builders across replicas — and stores the CRL in the same transaction, so the
  ``crlNumber`` only ever grows. A replica that waited on that lock finds the new CRL and serves it.
- The JSON document is derived from the ``certificates`` table alone; its ``generated_at`` is when
  the list's content last changed (a revocation, or a revoked certificate expiring), not the time
  of the request, so the document and its strong ETag stay the same until the list changes.

The active issuer signs with the registry's signer; another registered issuer (prepared or retired,
whose leaves may still be live) with a signer loaded once through the registry's signer loader.
Only issuers whose backend declares ``signs_crls`` get a CRL signed here; for the others (AWS
Private CA, which publishes its own) the CRL comes from ``upstream_crls`` (:class:`~issuer.service.
revocation.pca_crl.PcaCrls`), verified against the issuer's certificate, and is served as published.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.crl import RevokedEntry
from ca.errors import CAError
from ca.signer import Signer
from issuer.errors import ClientError, IssuerError, NotFound, UpstreamUnavailable
from issuer.hashing import strong_etag
from issuer.service.ca.lifecycle import fingerprint_prefix, match_fingerprint
from issuer.service.ca.registry import IssuerRegistry, IssuerView, SignerLoader, TrustSnapshot
from issuer.service.ca.signers import capabilities_of
from issuer.service.issuance.model import Clock
from issuer.service.revocation.revoke import reason_flag
from issuer.store import revocations as store
from issuer.store.revocations import CrlRecord, RevokedRow

__all__ = [
    "PublishedCrl",
    "RevocationLists",
    "RevokedList",
    "UpstreamCrls",
    "entries_digest",
    "export_revoked",
    "revocation_document",
    "select_issuer",
    "strong_etag",
]

log = logging.getLogger("issuer.revocation")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BUILD_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class RevokedList:
    """``GET /v1/revoked``: the JSON document and its strong ETag."""

    body: bytes
    etag: str
    count: int


@dataclass(frozen=True, slots=True)
class PublishedCrl:
    """One issuer's current CRL as stored and served."""

    issuer_fingerprint: str
    crl_number: int
    this_update: datetime
    next_update: datetime
    der: bytes
    etag: str


def _when(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def revocation_document(rows: Sequence[RevokedRow], *, generated_at: datetime) -> bytes:
    """The ``/v1/revoked`` document (version 1) for ``rows``; the Lambda authorizer's
    ``parse_revocation_document`` reads it."""
    document = {
        "version": 1,
        "generated_at": _when(generated_at),
        "serials": [r.serial for r in rows],
        "entries": [
            {
                "serial": r.serial,
                "issuer_fingerprint": r.issuer_fingerprint,
                "revoked_at": _when(r.revoked_at),
                "reason": r.reason,
                "not_after": _when(r.not_after),
            }
            for r in rows
        ],
    }
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


async def export_revoked(sessions: async_sessionmaker[AsyncSession], *, now: datetime) -> RevokedList:
    """The ``/v1/revoked`` document as of ``now``, read straight from the database (no CA key, no registry):
    what ``GET /v1/revoked`` serves, e.g. to publish beside the truststore."""
    async with sessions() as session:
        rows = await store.list_revoked(session, now=now)
        changed = await store.last_change(session, now=now) or await store.first_issuer_created(session)
    body = revocation_document(rows, generated_at=changed or _EPOCH)
    return RevokedList(body=body, etag=strong_etag(body), count=len(rows))


def entries_digest(rows: Sequence[RevokedRow]) -> str:
    """What a CRL lists, as a digest: a stored CRL is current only while this is unchanged."""
    lines = "".join(f"{r.serial},{_when(r.revoked_at)},{r.reason}\n" for r in rows)
    return hashlib.sha256(lines.encode()).hexdigest()


class UpstreamCrls(Protocol):
    """The CRL a backend publishes itself for ``view`` (verified), or None when it publishes none."""

    async def __call__(self, view: IssuerView) -> x509.CertificateRevocationList | None: ...


class _AlreadyCurrent(Exception):
    """Another replica stored a current CRL while this one waited for the issuer's row lock."""

    def __init__(self, crl: CrlRecord) -> None:
        super().__init__(crl.crl_number)
        self.crl = crl


class RevocationLists:
    """Builds, stores and serves the revocation lists. Build one per process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        registry: IssuerRegistry,
        load_signer: SignerLoader,
        clock: Clock,
        crl_validity: timedelta = timedelta(hours=24),
        crl_refresh: timedelta = timedelta(hours=1),
        upstream_crls: UpstreamCrls | None = None,
    ) -> None:
        if not timedelta(0) < crl_refresh < crl_validity:
            raise ValueError("crl_refresh must be positive and shorter than crl_validity")
        self._sessions = sessions
        self._registry = registry
        self._load_signer = load_signer
        self._clock = clock
        self.crl_validity = crl_validity
        self.crl_refresh = crl_refresh
        self._signers: dict[str, Signer] = {}  # fingerprint → signer of a non-active issuer
        self._der: dict[int, tuple[int, bytes, str]] = {}  # issuer id → (CRL number, DER, ETag)
        self._upstream_crls = upstream_crls

    async def revoked(self) -> RevokedList:
        """The ``/v1/revoked`` document as of now."""
        return await export_revoked(self._sessions, now=self._clock())

    async def crl(self, *, issuer: str | None = None) -> PublishedCrl:
        """The current CRL of the issuer whose SHA-256 fingerprint starts with ``issuer`` (default: the active one).

        An issuer whose backend publishes its own CRL (AWS Private CA) gets that CRL, as published.
        Hook for the CRL bundle (``GET /v1/crls``): call this with each truststore issuer's full
        fingerprint; it covers both kinds of issuer (skip ``crl_not_published``).

        Raises :class:`ClientError` ``issuer_invalid`` / ``issuer_ambiguous``, :class:`NotFound`
        ``issuer_not_found`` and ``crl_not_published`` (the backend publishes none), and
        :class:`UpstreamUnavailable` ``crl_unavailable`` when no CRL can be signed (or read) and
        no stored one is still valid.
        """
        snapshot = self._registry.snapshot
        view = select_issuer(snapshot, issuer)
        if not self._signs_crls(view, snapshot):
            return await self._upstream(view)
        for _ in range(_BUILD_ATTEMPTS):
            now = self._clock()
            async with self._sessions() as session:
                stored = await store.latest_crl(session, issuer_id=view.id)
                digest = entries_digest(await store.list_revoked(session, now=now, issuer_id=view.id))
            if stored is not None and self._is_current(stored, digest, now):
                published = await self._published(view, stored)
            else:
                try:
                    published = await self._build(view, snapshot, now)
                except _AlreadyCurrent as current:
                    published = await self._published(view, current.crl)
                except IntegrityError:
                    continue  # another replica stored this number first (SQLite); read theirs
                except (IssuerError, CAError) as exc:
                    if stored is None or stored.next_update <= now:
                        raise UpstreamUnavailable(
                            "No CRL can be signed for this issuer now.",
                            code="crl_unavailable",
                            reason=f"{view.record.subject}: {type(exc).__name__}: {exc}",
                            retry_after=30,
                        ) from exc
                    log.warning(
                        "serving CRL %d of %s until %s: a new one cannot be signed (%s)",
                        stored.crl_number,
                        view.record.subject,
                        stored.next_update.isoformat(),
                        getattr(exc, "reason", exc),
                    )
                    published = await self._published(view, stored)
            if published is not None:
                return published
        raise UpstreamUnavailable(
            "The CRL changed while it was read; try again.", code="crl_unavailable", retry_after=1
        )

    @staticmethod
    def _signs_crls(view: IssuerView, snapshot: TrustSnapshot) -> bool:
        """What the issuer's backend declares: the loaded signer's for the active one, the key_ref's for others."""
        if view.id == snapshot.active.id:
            return snapshot.active.signer.capabilities.signs_crls
        return capabilities_of(view.record.key_ref).signs_crls

    async def _upstream(self, view: IssuerView) -> PublishedCrl:
        """The CRL the backend published for ``view`` (verified by the source), as served."""
        crl = await self._upstream_crls(view) if self._upstream_crls is not None else None
        if crl is None:
            raise NotFound(
                "This issuing CA publishes no CRL (its CA keeps CRLs disabled, or has not written one yet).",
                code="crl_not_published",
                reason=f"{view.record.subject}: its backend signs no CRL here and published none",
            )
        der = crl.public_bytes(serialization.Encoding.DER)
        try:
            number = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except x509.ExtensionNotFound:
            number = 0
        return PublishedCrl(
            issuer_fingerprint=view.record.fingerprint_sha256,
            crl_number=number,
            this_update=crl.last_update_utc,
            next_update=crl.next_update_utc or crl.last_update_utc,
            der=der,
            etag=strong_etag(der),
        )

    def _is_current(self, stored: CrlRecord, digest: str, now: datetime) -> bool:
        return (
            stored.entries_sha256 == digest and stored.next_update > now and now - stored.this_update < self.crl_refresh
        )

    async def _build(self, view: IssuerView, snapshot: TrustSnapshot, now: datetime) -> PublishedCrl:
        """Sign and store the next CRL of ``view``; raises :class:`_AlreadyCurrent` when another replica just did."""
        async with self._sessions() as session, session.begin():
            number = await store.take_crl_number(session, issuer_id=view.id)
            # Whoever held the lock before us may have stored a current CRL; then ours is not needed.
            stored = await store.latest_crl(session, issuer_id=view.id)
            rows = await store.list_revoked(session, now=now, issuer_id=view.id)
            digest = entries_digest(rows)
            if stored is not None and self._is_current(stored, digest, now):
                raise _AlreadyCurrent(stored)  # rolls the number back
            signer = await self._signer(view, snapshot)
            crl = await signer.sign_crl(
                [RevokedEntry(int(r.serial, 16), r.revoked_at, reason_flag(r.reason)) for r in rows],
                now=now,
                next_update=now + self.crl_validity,
                crl_number=number,
            )
            record = CrlRecord(
                issuer_id=view.id,
                crl_number=number,
                this_update=crl.last_update_utc,
                next_update=crl.next_update_utc or now + self.crl_validity,
                entries_sha256=digest,
                revoked_count=len(rows),
            )
            der = crl.public_bytes(serialization.Encoding.DER)
            await store.store_crl(session, record, der=der, now=now)
        log.info(
            "signed CRL %d of %s: %d revoked certificate(s), next update %s",
            number,
            view.record.subject,
            len(rows),
            record.next_update.isoformat(),
        )
        return self._remember(view, record, der)

    async def _published(self, view: IssuerView, stored: CrlRecord) -> PublishedCrl | None:
        """``stored`` with its DER (from memory when this replica has it); None when it was replaced meanwhile."""
        cached = self._der.get(view.id)
        if cached is not None and cached[0] == stored.crl_number:
            return _as_published(view, stored, cached[1], cached[2])
        async with self._sessions() as session:
            der = await store.crl_der(session, issuer_id=view.id, crl_number=stored.crl_number)
        return None if der is None else self._remember(view, stored, der)

    def _remember(self, view: IssuerView, record: CrlRecord, der: bytes) -> PublishedCrl:
        etag = strong_etag(der)
        current = self._der.get(view.id)
        if current is None or current[0] <= record.crl_number:
            self._der[view.id] = (record.crl_number, der, etag)
        return _as_published(view, record, der, etag)

    async def _signer(self, view: IssuerView, snapshot: TrustSnapshot) -> Signer:
        """The active issuer's signer from the registry; another issuer's loaded once and kept."""
        if view.id == snapshot.active.id:
            return snapshot.active.signer
        fingerprint = view.record.fingerprint_sha256
        signer = self._signers.get(fingerprint)
        if signer is None:
            signer = await self._load_signer(
                view.record, certificate=view.certificate, chain=view.chain, roots=snapshot.roots
            )
            self._signers[fingerprint] = signer
        return signer


def _as_published(view: IssuerView, record: CrlRecord, der: bytes, etag: str) -> PublishedCrl:
    return PublishedCrl(
        issuer_fingerprint=view.record.fingerprint_sha256,
        crl_number=record.crl_number,
        this_update=record.this_update,
        next_update=record.next_update,
        der=der,
        etag=etag,
    )


def select_issuer(snapshot: TrustSnapshot, prefix: str | None) -> IssuerView:
    """The registered issuer named by a fingerprint prefix (colons and case as openssl prints them are fine),
    or the active one. Raises ClientError ``issuer_invalid``/``issuer_ambiguous``, NotFound ``issuer_not_found``."""
    if prefix is None:
        return next(v for v in snapshot.issuers if v.id == snapshot.active.id)
    try:
        fingerprint_prefix(prefix)
    except ClientError:
        raise ClientError(
            "issuer must be 4 to 64 hex digits of the issuing CA's SHA-256 fingerprint", code="issuer_invalid"
        ) from None
    record = match_fingerprint([v.record for v in snapshot.issuers], prefix, kind="issuer")
    return next(v for v in snapshot.issuers if v.record is record)
