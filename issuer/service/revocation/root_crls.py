"""Each root's CRL: signed by the root key while it is online, imported when it is kept offline.

Chain checkers (``openssl verify -crl_check_all``, nginx's ``ssl_crl``, the Lambda authorizer)
check every CA of the chain, so a root needs a CRL too; without one they refuse every client.

What a root's CRL lists: the issuing CAs it signed directly that were **retired** and have not
expired, with reason ``cessationOfOperation`` at the time of retirement. A retired issuer has left
the truststore, so API Gateway already refuses its leaves; the root CRL tells every other relying
party that trusts the root (and may take intermediates from the client) the same — and covers a
retired issuing key that is later found on an old disk.

- **Online key** (a ``file:`` key present in the CA directory, or a ``kms:`` key): the service
  (:meth:`RootCrls.current`, from its background task and every ``GET /v1/crls``) signs a CRL
  valid for ``validity`` (7 days) and signs the next one when less than half of that is left,
  or at once when an issuer under the root is retired.
- **Offline key**: ``issuer ca root-crl`` signs one where the key is brought for the ceremony
  (:meth:`RootCrls.sign`, a long ``nextUpdate`` such as 180 days), or ``--import`` stores one made
  by another tool (:meth:`RootCrls.import_crl`). It must be renewed before its nextUpdate, and
  after every retirement.

Numbers only grow: ``ca_roots.crl_number`` is taken (or, for an import, raised) in the
transaction that stores the CRL.
"""

from __future__ import annotations

import hashlib
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
from issuer.errors import ClientError, IssuerError
from issuer.service.ca.lifecycle import issued_by, short
from issuer.service.ca.registry import certificates_of
from issuer.service.issuance.model import Clock
from issuer.store import issuers as registry_store
from issuer.store import root_crls as store
from issuer.store.records import IssuerRecord, RootRecord
from issuer.store.root_crls import RootCrlRecord

__all__ = ["ROOT_CRL_VALIDITY", "RootCrl", "RootCrls", "RootSignerLoader", "current_root_crls", "root_entries"]

log = logging.getLogger("issuer.revocation")

ROOT_CRL_VALIDITY = timedelta(days=7)
_CLOCK_SKEW = timedelta(minutes=5)


class _AlreadyCurrent(Exception):
    """Another replica stored a current CRL while this one waited for the root's row lock."""

    def __init__(self, crl: RootCrlRecord) -> None:
        super().__init__(crl.crl_number)
        self.crl = crl


class RootSignerLoader(Protocol):
    async def __call__(self, root: RootRecord, *, certificate: x509.Certificate) -> Signer | None:
        """A signer with the root's key, or None when the key is not here (offline, or none registered).

        Raises ConfigError/CAError/UpstreamUnavailable when the key is here but cannot be used.
        """
        ...


@dataclass(frozen=True, slots=True)
class RootCrl:
    """A root's current CRL as stored and served."""

    root_id: int
    root_fingerprint: str
    subject: str
    crl_number: int
    this_update: datetime
    next_update: datetime
    revoked_count: int
    source: str  # "signed" or "imported"
    der: bytes

    @property
    def pem(self) -> bytes:
        return x509.load_der_x509_crl(self.der).public_bytes(serialization.Encoding.PEM)


def root_entries(issuers: Sequence[IssuerRecord], root: x509.Certificate, *, now: datetime) -> list[RevokedEntry]:
    """What ``root``'s CRL lists at ``now``: the retired, unexpired issuing CAs it signed, by serial."""
    entries = []
    for issuer in issuers:
        chain = certificates_of(issuer)
        if issuer.state != "retired" or issuer.not_after <= now or len(chain) != 1 or not issued_by(chain[0], root):
            continue
        retired_at = issuer.retired_at or issuer.updated_at
        entries.append(RevokedEntry(chain[0].serial_number, retired_at, x509.ReasonFlags.cessation_of_operation))
    return sorted(entries, key=lambda e: e.serial)


def entries_sha256(entries: Sequence[tuple[int, datetime, x509.ReasonFlags | None]]) -> str:
    """A digest of (serial, date, reason) triples: a stored CRL is current only while it is unchanged."""
    lines = "".join(
        f"{serial:x},{_second(date)},{reason.value if reason else 'unspecified'}\n"
        for serial, date, reason in sorted(entries, key=lambda e: e[0])
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def _second(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def _entries_of(crl: x509.CertificateRevocationList) -> list[tuple[int, datetime, x509.ReasonFlags | None]]:
    out: list[tuple[int, datetime, x509.ReasonFlags | None]] = []
    for entry in crl:
        try:
            reason: x509.ReasonFlags | None = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reason = None
        out.append((entry.serial_number, entry.revocation_date_utc, reason))
    return out


class RootCrls:
    """Signs, imports, stores and serves the roots' CRLs. Build one per process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        load_signer: RootSignerLoader | None,
        clock: Clock,
        validity: timedelta = ROOT_CRL_VALIDITY,
    ) -> None:
        if validity <= timedelta(0):
            raise ValueError("a root CRL's validity must be positive")
        self._sessions = sessions
        self._load_signer = load_signer
        self._clock = clock
        self.validity = validity
        self._signers: dict[str, Signer | None] = {}
        self._warned: set[tuple[int, str]] = set()
        self._failures: dict[str, str] = {}  # root fingerprint → why its key could not be loaded

    async def current(self, root: RootRecord) -> RootCrl | None:
        """The CRL of ``root`` to serve, signed anew first when the root key is online and the stored
        one is missing, lists other entries, or has less than half of ``validity`` left. None when
        there is none and the key is offline (or cannot be used: logged)."""
        now = self._clock()
        certificate = x509.load_pem_x509_certificate(root.certificate_pem.encode())
        async with self._sessions() as session:
            stored = await store.latest_root_crl(session, root_id=root.id)
            entries = root_entries(await registry_store.list_issuers(session), certificate, now=now)
        digest = entries_sha256([(e.serial, e.revoked_at, e.reason) for e in entries])
        if stored is not None and not self._due(stored, digest, now):
            return await self._read(root, stored)
        signer = await self._signer(root, certificate)
        if signer is None:
            if stored is not None and (root.id, stored.entries_sha256) not in self._warned:
                self._warned.add((root.id, stored.entries_sha256))
                why = "lists other issuers than those retired" if stored.entries_sha256 != digest else "is due"
                log.warning(
                    "the CRL of the root %s %s and its key is not here: sign one with `issuer ca root-crl` "
                    "(next update %s)",
                    root.subject,
                    why,
                    stored.next_update.isoformat(),
                )
            return None if stored is None else await self._read(root, stored)
        try:
            return await self.sign(root, signer=signer, next_update=now + self.validity, now=now, only_if_due=True)
        except IntegrityError:  # another replica stored this number first (SQLite): serve theirs
            async with self._sessions() as session:
                stored = await store.latest_root_crl(session, root_id=root.id)
            return None if stored is None else await self._read(root, stored)
        except (IssuerError, CAError) as exc:
            log.error("cannot sign the CRL of the root %s: %s", root.subject, getattr(exc, "reason", exc))
            return None if stored is None else await self._read(root, stored)

    def _due(self, stored: RootCrlRecord, digest: str, now: datetime) -> bool:
        return stored.entries_sha256 != digest or stored.next_update - now < self.validity / 2

    async def sign(
        self, root: RootRecord, *, signer: Signer, next_update: datetime, now: datetime, only_if_due: bool = False
    ) -> RootCrl:
        """Sign and store the next CRL of ``root`` with ``signer`` (the root's key), valid until
        ``next_update``. With ``only_if_due``, a CRL another replica stored meanwhile is returned instead.

        Raises ClientError ``next_update_invalid`` for a ``next_update`` not after ``now``.
        """
        if next_update <= now:
            raise ClientError("the CRL's next update must be in the future", code="next_update_invalid")
        try:
            return await self._sign(root, signer=signer, next_update=next_update, now=now, only_if_due=only_if_due)
        except _AlreadyCurrent as current:
            crl = await self._read(root, current.crl)
            if crl is None:
                raise
            return crl

    async def _sign(
        self, root: RootRecord, *, signer: Signer, next_update: datetime, now: datetime, only_if_due: bool
    ) -> RootCrl:
        certificate = x509.load_pem_x509_certificate(root.certificate_pem.encode())
        async with self._sessions() as session, session.begin():
            number = await store.take_root_crl_number(session, root_id=root.id)  # the root's row lock
            stored = await store.latest_root_crl(session, root_id=root.id)
            entries = root_entries(await registry_store.list_issuers(session), certificate, now=now)
            digest = entries_sha256([(e.serial, e.revoked_at, e.reason) for e in entries])
            if only_if_due and stored is not None and not self._due(stored, digest, now):
                raise _AlreadyCurrent(stored)  # rolls the number back
            crl = await signer.sign_crl(entries, now=now, next_update=next_update, crl_number=number)
            record = RootCrlRecord(
                root.id, number, crl.last_update_utc, crl.next_update_utc or next_update, digest, len(entries), "signed"
            )
            der = crl.public_bytes(serialization.Encoding.DER)
            await store.store_root_crl(session, record, der=der, source="signed", now=now)
        log.info(
            "signed CRL %d of the root %s: %d retired issuer(s), next update %s",
            number,
            root.subject,
            len(entries),
            record.next_update.isoformat(),
        )
        return _as_root_crl(root, record, der)

    async def import_crl(self, data: bytes, *, now: datetime) -> RootCrl:
        """Store a root CRL made where the root key is (PEM or DER).

        Refused with ClientError ``root_crl_invalid`` unless it parses, is signed by an active
        registered root's key, has a crlNumber and a nextUpdate in the future, and its thisUpdate is
        not in the future; ``root_crl_not_newer`` when its number is not above every one stored.
        """
        crl = _parse(data)
        async with self._sessions() as session:
            roots = [r for r in await registry_store.list_roots(session) if r.state == "active"]
        root = next((r for r in roots if _signed_by(crl, r)), None)
        if root is None:
            raise ClientError(
                f"the CRL of {crl.issuer.rfc4514_string()} is not signed by any active registered root",
                code="root_crl_invalid",
            )
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            raise ClientError("the CRL has no crlNumber", code="root_crl_invalid") from None
        next_update = crl.next_update_utc
        if next_update is None or next_update <= now:
            raise ClientError("the CRL has no nextUpdate in the future", code="root_crl_invalid")
        if crl.last_update_utc > now + _CLOCK_SKEW:
            raise ClientError("the CRL's thisUpdate is in the future", code="root_crl_invalid")
        entries = _entries_of(crl)
        record = RootCrlRecord(
            root.id, number, crl.last_update_utc, next_update, entries_sha256(entries), len(entries), "imported"
        )
        der = crl.public_bytes(serialization.Encoding.DER)
        async with self._sessions() as session, session.begin():
            if not await store.claim_root_crl_number(session, root_id=root.id, crl_number=number):
                raise ClientError(
                    f"CRL number {number} of the root {root.subject} is not above the last one used; "
                    "sign a new CRL (`issuer ca root-crl` uses the next number)",
                    code="root_crl_not_newer",
                )
            await store.store_root_crl(session, record, der=der, source="imported", now=now)
        log.info("imported CRL %d of the root %s, next update %s", number, root.subject, next_update.isoformat())
        return _as_root_crl(root, record, der)

    async def _signer(self, root: RootRecord, certificate: x509.Certificate) -> Signer | None:
        if self._load_signer is None:
            return None
        if root.fingerprint_sha256 not in self._signers:
            try:
                self._signers[root.fingerprint_sha256] = await self._load_signer(root, certificate=certificate)
            except (IssuerError, CAError) as exc:
                reason = str(getattr(exc, "reason", None) or exc)
                if self._failures.get(root.fingerprint_sha256) != reason:  # once per reason, not every minute
                    self._failures[root.fingerprint_sha256] = reason
                    log.error(
                        "the key of the root %s cannot sign its CRL (the stored one is served until its next "
                        "update; then sign one with `issuer ca root-crl`): %s",
                        root.subject,
                        reason,
                    )
                return None  # tried again on the next call
        return self._signers[root.fingerprint_sha256]

    async def _read(self, root: RootRecord, stored: RootCrlRecord) -> RootCrl | None:
        async with self._sessions() as session:
            der = await store.root_crl_der(session, root_id=root.id, crl_number=stored.crl_number)
        return None if der is None else _as_root_crl(root, stored, der)


async def current_root_crls(
    sessions: async_sessionmaker[AsyncSession], *, load_signer: RootSignerLoader, clock: Clock
) -> list[RootCrl | None]:
    """:meth:`RootCrls.current` for every active root, in registry order (``issuer ca init`` signs the
    first CRL this way): None for a root whose key is not here and that has no CRL."""
    async with sessions() as session:
        roots = [r for r in await registry_store.list_roots(session) if r.state == "active"]
    crls = RootCrls(sessions, load_signer=load_signer, clock=clock)
    return [await crls.current(root) for root in roots]


def _as_root_crl(root: RootRecord, record: RootCrlRecord, der: bytes) -> RootCrl:
    return RootCrl(
        root_id=root.id,
        root_fingerprint=root.fingerprint_sha256,
        subject=root.subject,
        crl_number=record.crl_number,
        this_update=record.this_update,
        next_update=record.next_update,
        revoked_count=record.revoked_count,
        source=record.source,
        der=der,
    )


def _parse(data: bytes) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise ClientError(f"not a CRL (PEM or DER): {exc}", code="root_crl_invalid") from None


def _signed_by(crl: x509.CertificateRevocationList, root: RootRecord) -> bool:
    certificate = x509.load_pem_x509_certificate(root.certificate_pem.encode())
    if crl.issuer != certificate.subject:
        return False
    try:
        return crl.is_signature_valid(certificate.public_key())  # type: ignore[arg-type]  # a CA's signing key
    except (TypeError, ValueError):
        return False


def describe(crl: RootCrl) -> str:
    """One line for an operator."""
    return (
        f"CRL {crl.crl_number} of the root {crl.subject} ({short(crl.root_fingerprint)}), {crl.source}, "
        f"{crl.revoked_count} revoked, next update {crl.next_update.isoformat()}"
    )
