"""``GET /v1/crls``: every current CRL in one PEM file — each issuing CA of the truststore and each root.

What a chain checker needs beside the truststore (``openssl verify -crl_check_all -CAfile
truststore.pem -CRLfile crls.pem``, nginx's ``ssl_crl``) and what the Lambda authorizer verifies and
enforces (``ISSUER_CRLS_URL``). The issuing CAs are those of the truststore (prepared or active, not
expired: every issuer that may have live leaves API Gateway accepts), in registry order, then the
active roots: the same bytes on every replica, so the strong ETag and ``If-None-Match`` work behind
a load balancer. A CA whose CRL cannot be had (its key unusable and no valid stored CRL; an offline
root that never got one) is left out and logged: relying parties then refuse that CA's
certificates, which is the safe side.

:class:`CrlBundles` also keeps them current: :meth:`CrlBundles.keep_current` rebuilds the bundle
every ``every`` seconds in the background, so each CRL is re-signed when its entries change or
it ages, whether or not anyone asks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.errors import CAError
from issuer.errors import ClientError, IssuerError, NotFound
from issuer.hashing import strong_etag
from issuer.service.ca.lifecycle import fingerprint_prefix
from issuer.service.ca.registry import IssuerRegistry, SignerLoader
from issuer.service.issuance.model import Clock
from issuer.service.revocation.lists import RevocationLists
from issuer.service.revocation.root_crls import RootCrl, RootCrls, RootSignerLoader
from issuer.store import issuers as registry_store

__all__ = ["BundledCrl", "CrlBundle", "CrlBundles", "export_crls"]

log = logging.getLogger("issuer.revocation")


@dataclass(frozen=True, slots=True)
class BundledCrl:
    kind: str  # "issuer" or "root"
    subject: str
    fingerprint: str  # the CA certificate's SHA-256
    crl_number: int
    next_update: datetime


@dataclass(frozen=True, slots=True)
class CrlBundle:
    body: bytes  # PEM, one X509 CRL block per CA
    etag: str
    crls: tuple[BundledCrl, ...]
    missing: tuple[str, ...]  # "<subject>: why", for each CA left out


class CrlBundles:
    """Builds the bundle from the issuers' CRLs (:class:`RevocationLists`) and the roots' (:class:`RootCrls`)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        registry: IssuerRegistry,
        lists: RevocationLists,
        roots: RootCrls,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._lists = lists
        self._roots = roots
        self._clock = clock
        self._reported: tuple[str, ...] = ()

    async def bundle(self, *, report: bool = True) -> CrlBundle:
        """The bundle as of now (signing what is due). Never raises for one CA's CRL: it is left out
        (and, with ``report``, logged once per change)."""
        now = self._clock()
        snapshot = self._registry.snapshot
        crls: list[BundledCrl] = []
        blocks: list[bytes] = []
        missing: list[str] = []
        issuers = [v for v in snapshot.issuers if v.record.state in ("prepared", "active") and v.record.not_after > now]
        for view in sorted(issuers, key=lambda v: v.id):
            try:
                published = await self._lists.crl(issuer=view.record.fingerprint_sha256)
            except (IssuerError, CAError) as exc:
                missing.append(f"{view.record.subject}: {getattr(exc, 'reason', None) or exc}")
                continue
            blocks.append(_pem(published.der))
            crls.append(
                BundledCrl(
                    "issuer", view.record.subject, view.record.fingerprint_sha256, published.crl_number,
                    published.next_update,
                )
            )  # fmt: skip
        async with self._sessions() as session:
            roots = [r for r in await registry_store.list_roots(session) if r.state == "active"]
        for root in roots:
            crl = await self._roots.current(root)
            if crl is None:
                missing.append(f"{root.subject}: its key is offline and no CRL was signed (`issuer ca root-crl`)")
                continue
            blocks.append(_pem(crl.der))
            crls.append(BundledCrl("root", root.subject, root.fingerprint_sha256, crl.crl_number, crl.next_update))
        if report:
            self._report(missing)
        body = b"".join(blocks)
        return CrlBundle(body=body, etag=strong_etag(body), crls=tuple(crls), missing=tuple(missing))

    async def root_crl(self, prefix: str) -> RootCrl | None:
        """The current CRL of the active root whose fingerprint starts with ``prefix``; None when no
        root (or several) matches. Raises NotFound ``crl_not_found`` for a root without a CRL."""
        wanted = fingerprint_prefix(prefix)
        async with self._sessions() as session:
            roots = [r for r in await registry_store.list_roots(session) if r.state == "active"]
        matching = [r for r in roots if r.fingerprint_sha256.startswith(wanted)]
        if len(matching) != 1:
            return None
        crl = await self._roots.current(matching[0])
        if crl is None:
            raise NotFound(
                f"the root {matching[0].subject} has no CRL yet (its key is offline: `issuer ca root-crl`)",
                code="crl_not_found",
            )
        return crl

    def _report(self, missing: Sequence[str]) -> None:
        if tuple(missing) != self._reported:  # once per change, not on every request
            self._reported = tuple(missing)
            for line in missing:
                log.error("GET /v1/crls leaves out a CA (relying parties will refuse its certificates): %s", line)

    async def keep_current(self, *, every: float) -> None:
        """Rebuild the bundle now and then every ``every`` seconds until cancelled; errors are logged."""
        while True:
            try:
                await self.bundle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("keeping the CRLs current failed; trying again in %.0f s", every)
            await asyncio.sleep(every)


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)


async def export_crls(
    sessions: async_sessionmaker[AsyncSession],
    *,
    load_signer: SignerLoader,
    load_root_signer: RootSignerLoader,
    clock: Clock,
) -> CrlBundle:
    """The bundle as ``GET /v1/crls`` serves it, built here (signing what is due, with the keys the
    loaders give), e.g. to publish beside the truststore.

    Raises ClientError ``crls_incomplete`` naming each CA whose CRL could not be had or has expired
    (an offline root's, not signed again in time): every authorizer would refuse that CA's certificates.
    """
    registry = IssuerRegistry(sessions, load_signer=load_signer, clock=clock)
    await registry.load()
    lists = RevocationLists(sessions, registry=registry, load_signer=load_signer, clock=clock)
    roots = RootCrls(sessions, load_signer=load_root_signer, clock=clock)
    bundle = await CrlBundles(sessions, registry=registry, lists=lists, roots=roots, clock=clock).bundle(report=False)
    now = clock()
    expired = [f"{c.subject}: its CRL expired {c.next_update.isoformat()}" for c in bundle.crls if c.next_update <= now]
    if bundle.missing or expired:
        problems = "; ".join([*bundle.missing, *expired])
        raise ClientError(f"no current CRL for {problems}; nothing was published", code="crls_incomplete")
    return bundle
