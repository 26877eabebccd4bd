"""Signed CRLs: which are used, and whether a certificate's chain is revoked.

A CRL from the bundle is used only when

- its issuer is a CA of the truststore (name, and authorityKeyIdentifier = subjectKeyIdentifier
  when both are present) whose key verifies its signature (``crl_issuer_unknown``,
  ``crl_signature_invalid``: a foreign or tampered CRL);
- it has a crlNumber and a nextUpdate (``crl_number_missing``, ``crl_next_update_missing``), is
  complete (no delta CRL, no indirect or reason-partitioned CRL, no unknown critical extension:
  ``crl_unsupported``), its thisUpdate is not in the future (``crl_not_yet_valid``) and its
  nextUpdate has not passed by more than the grace (``crl_expired``);
- its crlNumber is not lower than one already accepted for that CA in this process
  (``crl_rolled_back``) — an older copy served again is refused.

:class:`CrlMemory` lives in module memory across invocations: per CA the accepted CRL, when the
source last served it (``confirmed_at``), the highest crlNumber, and why the last one was refused.
A CA's CRL stays usable for ``max_stale`` seconds after the source last served a valid one, so a
bundle that turns bad is ridden out for the grace and then the authorizer fails closed.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from .errors import SourceError
from .sources import Log, log_line
from .truststore import Truststore

__all__ = ["AcceptedCrl", "CrlBundle", "CrlMemory", "Refusal", "describe_crl_bundle", "parse_crl_bundle"]

_PEM: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\s]*?)-----END \1-----")
_CLOCK_SKEW: Final = timedelta(minutes=5)
_MAX_CRLS: Final = 1000


@dataclass(frozen=True)
class CrlBundle:
    ders: tuple[bytes, ...]


def describe_crl_bundle(bundle: CrlBundle) -> dict[str, Any]:
    return {"crls": len(bundle.ders)}


def parse_crl_bundle(body: bytes) -> CrlBundle:
    """The DER CRLs of a PEM bundle (``X509 CRL`` blocks). Raises :class:`SourceError`
    ``crl_bundle_invalid`` for no CRL, another kind of block, bad base64 or more than 1,000."""

    def bad(why: str) -> SourceError:
        return SourceError(f"CRL bundle refused: {why}", code="crl_bundle_invalid")

    if body.count(b"-----BEGIN") > _MAX_CRLS:
        raise bad(f"more than {_MAX_CRLS} PEM blocks")
    blocks = _PEM.findall(body)
    if len(blocks) != body.count(b"-----BEGIN"):
        raise bad("a PEM block is malformed")
    ders: list[bytes] = []
    for label, text in blocks:
        if label != b"X509 CRL":
            raise bad(f"it holds a {label.decode()!r} block")
        try:
            ders.append(base64.b64decode(b"".join(text.split()), validate=True))
        except (binascii.Error, ValueError):
            raise bad("a block is not base64") from None
    if not ders:
        raise bad("it holds no CRL")
    return CrlBundle(tuple(ders))


@dataclass(frozen=True)
class Refusal:
    code: str
    detail: str


@dataclass(frozen=True)
class AcceptedCrl:
    ca_id: str
    issuer: str  # the CA's name, RFC 4514
    crl_number: int
    this_update: datetime
    next_update: datetime
    revoked: frozenset[int] = field(repr=False)
    confirmed_at: float  # when the source last served it (epoch seconds)
    covers_leaves: bool = True
    covers_cas: bool = True


class CrlMemory:
    """The CRLs this process uses, and what it has seen (see the module)."""

    def __init__(self) -> None:
        self.accepted: dict[str, AcceptedCrl] = {}
        self.highest: dict[str, int] = {}
        self.refusals: dict[str, Refusal] = {}  # by ca_id; "" for a CRL no CA could be found for
        self._evaluated: tuple[float, str, int] | None = None

    def update(
        self,
        bundle: CrlBundle,
        truststore: Truststore,
        *,
        confirmed_at: float,
        now: datetime,
        grace: float,
        log: Log,
    ) -> None:
        """Check every CRL of ``bundle`` (served at ``confirmed_at``) against ``truststore``; a no-op
        when neither has changed since the last call."""
        stamp = (confirmed_at, truststore.digest, id(bundle))
        if stamp == self._evaluated:
            return
        self._evaluated = stamp
        served: set[str] = set()  # CAs with a valid CRL in this bundle: a refused copy beside it is moot
        refused: list[tuple[str, Refusal]] = []
        for der in bundle.ders:
            outcome = self._check(der, truststore, now=now, grace=timedelta(seconds=grace))
            if isinstance(outcome, AcceptedCrl):
                # _check refused any number below the highest seen, so this one is the newest.
                served.add(outcome.ca_id)
                self.accepted[outcome.ca_id] = _confirmed(outcome, confirmed_at)
                self.highest[outcome.ca_id] = outcome.crl_number
                self.refusals.pop(outcome.ca_id, None)
            else:
                refused.append(outcome)
        for ca_id, refusal in refused:
            log_line(log, "error", "crl_refused", code=refusal.code, detail=refusal.detail)
            if ca_id not in served:
                self.refusals[ca_id] = refusal

    def _check(
        self, der: bytes, truststore: Truststore, *, now: datetime, grace: timedelta
    ) -> AcceptedCrl | tuple[str, Refusal]:
        try:
            crl = x509.load_der_x509_crl(der)
            issuer_der = crl.issuer.public_bytes()
            issuer_name = crl.issuer.rfc4514_string()
        except ValueError as exc:
            return "", Refusal("crl_malformed", f"a CRL in the bundle does not parse: {exc}")
        named = truststore.by_subject.get(issuer_der, ())
        if not named:
            return "", Refusal("crl_issuer_unknown", f"a CRL of {issuer_name}, which is not in the truststore")
        key_id = _crl_key_id(crl)
        candidates = [ca for ca in named if key_id is None or ca.key_id is None or ca.key_id == key_id]
        signer = next((ca for ca in candidates if _signature_valid(crl, ca.certificate)), None)
        if signer is None:
            ca_id = named[0].ca_id if len({ca.ca_id for ca in named}) == 1 else ""
            detail = f"the CRL of {issuer_name} is not signed by that CA's key (tampered, or from another CA)"
            return ca_id, Refusal("crl_signature_invalid", detail)

        def refuse(code: str, why: str) -> tuple[str, Refusal]:
            return signer.ca_id, Refusal(code, f"the CRL of {issuer_name}: {why}")

        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            return refuse("crl_number_missing", "no crlNumber")
        except ValueError as exc:
            return refuse("crl_malformed", f"extensions do not parse ({exc})")
        scope = _scope(crl)
        if isinstance(scope, str):
            return refuse("crl_unsupported", scope)
        next_update = crl.next_update_utc
        if next_update is None:
            return refuse("crl_next_update_missing", "no nextUpdate")
        if crl.last_update_utc > now + _CLOCK_SKEW:
            return refuse("crl_not_yet_valid", f"thisUpdate {crl.last_update_utc.isoformat()} is in the future")
        if now > next_update + grace:
            return refuse("crl_expired", f"nextUpdate {next_update.isoformat()} passed more than the grace ago")
        highest = self.highest.get(signer.ca_id)
        if highest is not None and number < highest:
            return refuse("crl_rolled_back", f"crlNumber {number} is lower than {highest}, seen before")
        try:
            revoked = frozenset(entry.serial_number for entry in crl)
        except ValueError as exc:
            return refuse("crl_malformed", f"its entries do not parse ({exc})")
        return AcceptedCrl(
            ca_id=signer.ca_id,
            issuer=issuer_name,
            crl_number=number,
            this_update=crl.last_update_utc,
            next_update=next_update,
            revoked=revoked,
            confirmed_at=0.0,
            covers_leaves=scope[0],
            covers_cas=scope[1],
        )


def _confirmed(crl: AcceptedCrl, confirmed_at: float) -> AcceptedCrl:
    return AcceptedCrl(
        ca_id=crl.ca_id,
        issuer=crl.issuer,
        crl_number=crl.crl_number,
        this_update=crl.this_update,
        next_update=crl.next_update,
        revoked=crl.revoked,
        confirmed_at=confirmed_at,
        covers_leaves=crl.covers_leaves,
        covers_cas=crl.covers_cas,
    )


def _signature_valid(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]  # CA keys are signing keys
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


def _crl_key_id(crl: x509.CertificateRevocationList) -> bytes | None:
    try:
        return crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except (x509.ExtensionNotFound, ValueError):
        return None


def _scope(crl: x509.CertificateRevocationList) -> tuple[bool, bool] | str:
    """(covers leaves, covers CAs), or why the CRL is not a complete one this authorizer can use."""
    leaves = cas = True
    for extension in crl.extensions:
        value = extension.value
        if isinstance(value, x509.DeltaCRLIndicator):
            return "a delta CRL (only a complete CRL is used)"
        if isinstance(value, x509.IssuingDistributionPoint):
            if value.indirect_crl or value.only_some_reasons or value.only_contains_attribute_certs:
                return "an indirect or partitioned CRL (issuingDistributionPoint)"
            leaves, cas = not value.only_contains_ca_certs, not value.only_contains_user_certs
        elif extension.critical and isinstance(value, x509.UnrecognizedExtension):
            return f"an unknown critical extension {extension.oid.dotted_string}"
    return leaves, cas
