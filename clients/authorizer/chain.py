"""Whether a client certificate, or any CA above it, is revoked — by the signed CRLs, the whole chain.

Like ``openssl verify -crl_check_all`` and nginx's ``ssl_crl``: the leaf's issuer is the CA of the
truststore whose key signed it; its serial must not be on that CA's CRL; and each CA certificate
up to a self-signed root must not be on the CRL of the CA that signed it. Every CRL needed must
be usable (see :mod:`.crls`); when one is not, the answer is a Deny naming why. A serial on any
usable CRL of the chain is revoked; otherwise at least one path to a root must be fully checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509

from .crls import AcceptedCrl, CrlMemory
from .truststore import TrustedCa, Truststore

__all__ = ["ChainVerdict", "check_chain"]

_MAX_DEPTH: Final = 4  # API Gateway's longest truststore chain
_SEEN_ISSUERS: Final = 4096


@dataclass(frozen=True)
class ChainVerdict:
    allowed: bool
    reason: str  # "" when allowed; revoked, issuer_revoked, issuer_unknown, crl_* otherwise
    detail: str = ""
    state: str = "fresh"  # "stale" when a CRL used is past its TTL or its nextUpdate, within the grace
    crls: tuple[str, ...] = ()  # "issuer #crlNumber" of each CRL used, for the log


@dataclass(frozen=True)
class _Problem:
    reason: str
    detail: str
    final: bool = False  # a revocation: no other path can undo it


@dataclass(frozen=True)
class _Context:
    truststore: Truststore
    memory: CrlMemory
    now: datetime
    ttl: float
    grace: float
    source_error: str


def check_chain(
    der: bytes,
    *,
    truststore: Truststore,
    memory: CrlMemory,
    now: datetime,
    ttl: float,
    grace: float,
    source_error: str = "",
    seen_issuers: MutableMapping[tuple[str, bytes], tuple[TrustedCa, ...]] | None = None,
) -> ChainVerdict:
    """The verdict on the certificate ``der`` at ``now``; ``source_error`` (why the bundle could not
    be refreshed) is added to the detail of a CRL that went stale. ``seen_issuers`` remembers which
    truststore CAs signed a certificate (by truststore and certificate digest): machines call again
    and again with the same certificate, and a signature check is the costliest step."""
    try:
        leaf = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return ChainVerdict(False, "cert_malformed", f"the certificate does not parse: {exc}")
    key = (truststore.digest, hashlib.sha256(der).digest())
    issuers = seen_issuers.get(key) if seen_issuers is not None else None
    if issuers is None:
        issuers = truststore.issuers_of(leaf)
        if seen_issuers is not None:
            if len(seen_issuers) >= _SEEN_ISSUERS:
                seen_issuers.pop(next(iter(seen_issuers)))  # the oldest first
            seen_issuers[key] = issuers
    if not issuers:
        detail = f"no CA in the truststore signed it (issuer {leaf.issuer.rfc4514_string()})"
        return ChainVerdict(False, "issuer_unknown", detail)
    context = _Context(truststore, memory, now, ttl, grace, source_error)
    used: list[AcceptedCrl] = []
    problems: list[_Problem] = []
    checked = False
    for ca_id in dict.fromkeys(ca.ca_id for ca in issuers):
        crl = _usable(context, ca_id, for_ca=False)
        if isinstance(crl, _Problem):
            problems.append(crl)
            continue
        used.append(crl)
        if leaf.serial_number in crl.revoked:
            detail = f"serial {leaf.serial_number:x} is on CRL #{crl.crl_number} of {crl.issuer}"
            state = "fresh" if _fresh(context, crl) else "stale"
            return ChainVerdict(False, "revoked", detail, state, (f"{crl.issuer} #{crl.crl_number}",))
        upper = _ca_checked(context, ca_id, depth=1, seen=frozenset(), used=used)
        if upper is None:
            checked = True
        elif upper.final:
            return ChainVerdict(False, upper.reason, upper.detail)
        else:
            problems.append(upper)
    if not checked:
        return ChainVerdict(False, problems[0].reason, problems[0].detail)
    stale = any(not _fresh(context, crl) for crl in used)
    return ChainVerdict(
        True,
        "",
        state="stale" if stale else "fresh",
        crls=tuple(dict.fromkeys(f"{crl.issuer} #{crl.crl_number}" for crl in used)),
    )


def _ca_checked(
    context: _Context, ca_id: str, *, depth: int, seen: frozenset[str], used: list[AcceptedCrl]
) -> _Problem | None:
    """None when the CA ``ca_id`` is a root, or a path above it to a root is checked and not revoked."""
    certificates = context.truststore.by_id[ca_id]
    if any(ca.self_signed for ca in certificates):
        return None
    subject = certificates[0].subject
    if depth > _MAX_DEPTH or ca_id in seen:
        return _Problem("issuer_chain_unknown", f"the chain above {subject} is longer than {_MAX_DEPTH}")
    problems: list[_Problem] = []
    checked = False
    for ca in certificates:
        for parent in ca.parents:
            crl = _usable(context, parent, for_ca=True)
            if isinstance(crl, _Problem):
                problems.append(crl)
                continue
            used.append(crl)
            if ca.certificate.serial_number in crl.revoked:
                detail = f"the issuing CA {subject} is on CRL #{crl.crl_number} of {crl.issuer}"
                return _Problem("issuer_revoked", detail, final=True)
            upper = _ca_checked(context, parent, depth=depth + 1, seen=seen | {ca_id}, used=used)
            if upper is None:
                checked = True
            elif upper.final:
                return upper
            else:
                problems.append(upper)
    if checked:
        return None
    if problems:
        return problems[0]
    return _Problem("issuer_chain_unknown", f"no CA in the truststore signed {subject}")


def _usable(context: _Context, ca_id: str, *, for_ca: bool) -> AcceptedCrl | _Problem:
    subject = context.truststore.by_id[ca_id][0].subject
    crl = context.memory.accepted.get(ca_id)
    refusal = context.memory.refusals.get(ca_id)
    if crl is None:
        if refusal is not None:
            return _Problem(refusal.code, refusal.detail)
        return _Problem("crl_missing", f"the bundle has no CRL of {subject}")
    age = context.now.timestamp() - crl.confirmed_at
    if age > context.grace:
        why = refusal.detail if refusal is not None else context.source_error or "the bundle no longer holds it"
        detail = f"the CRL of {subject} was last served {age:.0f} s ago, more than the grace ({why})"
        return _Problem(refusal.code if refusal is not None else "crl_stale", detail)
    if context.now > crl.next_update + timedelta(seconds=context.grace):
        detail = f"the CRL of {subject} is past its nextUpdate {crl.next_update.isoformat()} and the grace"
        return _Problem("crl_expired", detail)
    if not (crl.covers_cas if for_ca else crl.covers_leaves):
        kind = "CA certificates" if for_ca else "end-entity certificates"
        return _Problem("crl_missing", f"the CRL of {subject} does not cover {kind}")
    return crl


def _fresh(context: _Context, crl: AcceptedCrl) -> bool:
    age = context.now.timestamp() - crl.confirmed_at
    return (age < context.ttl or age == 0) and context.now <= crl.next_update
