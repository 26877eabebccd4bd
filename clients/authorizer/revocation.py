"""The revocation check of one request, and what one Lambda environment keeps between invocations.

With ``ISSUER_CRLS_URL`` the signed CRLs decide (:mod:`.crls`, :mod:`.chain`) and the check fails
closed; otherwise the older JSON list (:mod:`.revoked_json`), failing closed unless
``ISSUER_FAIL_CLOSED=false``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .certificate import ClientCertificate
from .chain import check_chain
from .crls import CrlMemory, describe_crl_bundle, parse_crl_bundle
from .revoked_json import describe_revocation_list, parse_revocation_document
from .settings import Fetching, Settings
from .sources import Events, Log, SourceCache, log_line
from .truststore import TrustedCa, describe_truststore, parse_truststore

__all__ = ["RevocationCache", "RevocationOutcome"]


@dataclass(frozen=True)
class RevocationOutcome:
    """``reason`` is "" when the certificate may proceed to the policy."""

    reason: str
    detail: str = ""
    state: str = "fresh"  # fresh, stale, unavailable, unchecked (fail open)
    age: float | None = None  # seconds since the source last confirmed what was used
    crls: tuple[str, ...] = ()


class RevocationCache:
    """Everything kept in module memory between invocations: the three sources and the CRL memory."""

    def __init__(self) -> None:
        self.revoked = SourceCache(
            parse_revocation_document,
            describe_revocation_list,
            Events(
                "revocation_list_fetched",
                "revocation_list_not_modified",
                "revocation_source_failed",
                "revocation_document_invalid",
            ),
        )
        self.crls = SourceCache(
            parse_crl_bundle,
            describe_crl_bundle,
            Events("crl_bundle_fetched", "crl_bundle_not_modified", "crl_source_failed", "crl_bundle_invalid"),
        )
        self.truststore = SourceCache(
            parse_truststore,
            describe_truststore,
            Events("truststore_fetched", "truststore_not_modified", "truststore_source_failed", "truststore_invalid"),
        )
        self.memory = CrlMemory()
        self._seen_issuers: dict[tuple[str, bytes], tuple[TrustedCa, ...]] = {}
        self._warned: set[str] = set()

    def check(self, cert: ClientCertificate, settings: Settings, *, now: datetime, log: Log) -> RevocationOutcome:
        """Whether ``cert`` is revoked, or cannot be checked; never raises for a source's failure."""
        for name in settings.ignored:
            if name not in self._warned:
                self._warned.add(name)
                log_line(log, "warning", "setting_ignored", setting=name, why="ISSUER_CRLS_URL is set")
        if settings.crls is not None and settings.truststore is not None:
            return self._check_crls(cert, settings, settings.crls, settings.truststore, now=now, log=log)
        assert settings.revoked is not None  # load_settings sets one or the other
        return self._check_list(cert, settings, settings.revoked, now=now, log=log)

    def _check_list(
        self, cert: ClientCertificate, settings: Settings, fetching: Fetching, *, now: datetime, log: Log
    ) -> RevocationOutcome:
        held = self.revoked.get(fetching, aws=settings.aws, now=now, log=log)
        age = None if held.age is None else round(held.age, 3)
        if held.value is None:
            if settings.fail_closed:
                detail = f"no usable revocation list ({held.error}); ISSUER_FAIL_CLOSED is true"
                return RevocationOutcome("revocation_list_unavailable", detail, held.state, age)
            return RevocationOutcome("", state="unchecked", age=age)  # fail open: logged at error level
        if cert.serial in held.value.serials:
            return RevocationOutcome("revoked", f"serial {cert.serial} is on the revocation list", held.state, age)
        return RevocationOutcome("", state=held.state, age=age)

    def _check_crls(
        self,
        cert: ClientCertificate,
        settings: Settings,
        crls: Fetching,
        truststore: Fetching,
        *,
        now: datetime,
        log: Log,
    ) -> RevocationOutcome:
        trusted = self.truststore.get(truststore, aws=settings.aws, now=now, log=log)
        if trusted.value is None:
            detail = f"no usable truststore from {truststore.source.redacted()} ({trusted.error})"
            return RevocationOutcome("truststore_unavailable", detail, "unavailable")
        bundle = self.crls.get(crls, aws=settings.aws, now=now, log=log)
        age = None if bundle.age is None else round(bundle.age, 3)
        if bundle.value is None or bundle.confirmed_at is None:
            detail = f"no usable CRL bundle from {crls.source.redacted()} ({bundle.error})"
            return RevocationOutcome("crl_source_unavailable", detail, "unavailable", age)
        self.memory.update(
            bundle.value, trusted.value, confirmed_at=bundle.confirmed_at, now=now, grace=crls.max_stale, log=log
        )
        verdict = check_chain(
            cert.der,
            truststore=trusted.value,
            memory=self.memory,
            now=now,
            ttl=crls.ttl,
            grace=crls.max_stale,
            source_error=bundle.error,
            seen_issuers=self._seen_issuers,
        )
        state = "stale" if "stale" in (verdict.state, trusted.state, bundle.state) else "fresh"
        if not verdict.allowed:
            state = "unavailable" if verdict.reason.startswith("crl_") else state
            return RevocationOutcome(verdict.reason, verdict.detail, state, age, verdict.crls)
        return RevocationOutcome("", state=state, age=age, crls=verdict.crls)
