"""The pure rules of CA rotation: what phase an issuer is in, and when it may be activated, retired, warned about.

No I/O here: the use cases in :mod:`issuer.service.ca.rotation` read the registry, call these
with ``now`` and the role limits, and act on the answer. Each refusal is an
:class:`~issuer.errors.IssuerError` with a stable ``code`` and a one-line ``detail`` that says
what to do instead.

Phases (the database keeps only prepared/active/retired; ``activated_at`` tells the rest)::

    prepared ──activate──▶ active ──(next activation)──▶ previous ──retire──▶ retired
       │                                                     ▲
       └──────────────── retire (never signed) ──────────────┴── expired (not_after passed)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from issuer.durations import format_duration
from issuer.errors import ClientError, NotFound
from issuer.store.records import IssuerRecord, RootRecord

__all__ = [
    "EXPIRY_WARNING",
    "LeafCounts",
    "Phase",
    "activation_warnings",
    "check_activation",
    "check_retirement",
    "check_rotation",
    "expiry_warnings",
    "fingerprint_prefix",
    "issued_by",
    "match_fingerprint",
    "phase_of",
    "short",
    "when",
]

Phase = Literal["prepared", "active", "previous", "expired", "retired"]
# How long before the active issuer (or a root) expires `issuer ca status` starts warning.
EXPIRY_WARNING: Final = timedelta(days=30)
_HEX_PREFIX = re.compile(r"[0-9a-f]{4,64}")
R = TypeVar("R", IssuerRecord, RootRecord)


@dataclass(frozen=True, slots=True)
class LeafCounts:
    """The leaves one issuer signed: all of them, the live ones (unexpired, not revoked), the last live expiry."""

    issued: int = 0
    live: int = 0
    last_expiry: datetime | None = None


def short(fingerprint: str) -> str:
    """The 16-hex-digit prefix operators type and see."""
    return fingerprint[:16]


def when(moment: datetime) -> str:
    """A UTC time for a person: ``2027-01-31 12:00Z``."""
    return moment.strftime("%Y-%m-%d %H:%MZ")


def fingerprint_prefix(text: str) -> str:
    """A fingerprint (prefix) as operators type it — hex, any case, colons allowed — in lower-case hex.

    Raises ClientError ``fingerprint_invalid`` for anything but 4 to 64 hex digits.
    """
    value = text.strip().lower().replace(":", "")
    if not _HEX_PREFIX.fullmatch(value):
        raise ClientError(
            f"{text!r} is not a fingerprint; give at least 4 hex digits of the SHA-256 fingerprint "
            "(`issuer ca status` shows them)",
            code="fingerprint_invalid",
        )
    return value


def match_fingerprint(records: Sequence[R], text: str, *, kind: Literal["issuer", "root"], among: str = "") -> R:
    """The one issuer or root (``kind``) of ``records`` whose fingerprint starts with ``text``.

    ``among`` qualifies the records in the not-found message (``"active"``). Raises ClientError
    ``fingerprint_invalid`` / ``<kind>_ambiguous``, NotFound ``<kind>_not_found``.
    """
    prefix = fingerprint_prefix(text)
    found = [r for r in records if r.fingerprint_sha256.startswith(prefix)]
    if not found:
        noun = " ".join(filter(None, [among, "issuing CA" if kind == "issuer" else "root"]))
        raise NotFound(f"no {noun} has a fingerprint starting {prefix}", code=f"{kind}_not_found")
    if len(found) > 1:
        raise ClientError(
            f"{prefix} starts the fingerprints of {len(found)} {kind}s; give more of it", code=f"{kind}_ambiguous"
        )
    return found[0]


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key signed ``certificate`` (and the names match)."""
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def phase_of(record: IssuerRecord, *, now: datetime) -> Phase:
    """The issuer's phase at ``now``; ``previous`` is a prepared issuer that has signed before."""
    if record.state == "retired":
        return "retired"
    if record.state == "active":
        return "active"
    if record.not_after <= now:
        return "expired"
    return "previous" if record.activated_at is not None else "prepared"


def check_rotation(
    *, validity: timedelta, effective: timedelta, min_validity: timedelta, root_expiry: datetime
) -> None:
    """Refuse a new issuing CA that could not outlive the longest leaf a role may ask for.

    ``validity`` is what was asked, ``effective`` what the root allows (the issuer is clamped into
    the root's validity). Raises ClientError ``validity_too_short`` or ``root_expires_too_soon``.
    """
    if validity < min_validity:
        raise ClientError(
            f"--validity {format_duration(validity)} is shorter than the longest role max_ttl "
            f"({format_duration(min_validity)}); leaves would outlive their issuer",
            code="validity_too_short",
        )
    if effective < min_validity:
        raise ClientError(
            f"the root expires {when(root_expiry)}, so a new issuing CA would be valid for only "
            f"{format_duration(max(effective, timedelta(seconds=1)))}, less than the longest role max_ttl "
            f"({format_duration(min_validity)}); rotate the root first (`issuer ca add-root`)",
            code="root_expires_too_soon",
        )


def check_activation(record: IssuerRecord, *, now: datetime, min_validity: timedelta, force: bool) -> None:
    """Refuse to activate an issuer that cannot sign sensibly at ``now``.

    Raises ClientError ``issuer_already_active``, ``issuer_retired``, ``issuer_expired``,
    ``issuer_not_yet_valid``, and — unless ``force`` — ``issuer_expires_too_soon`` (it would
    expire before the longest leaf a role may ask for, so every leaf would be cut short).
    """
    name = f"{record.subject} ({short(record.fingerprint_sha256)})"
    if record.state == "active":
        raise ClientError(f"issuer {name} is already the active one", code="issuer_already_active")
    if record.state == "retired":
        raise ClientError(
            f"issuer {name} is retired and out of the truststore; prepare a new one with `issuer ca rotate`",
            code="issuer_retired",
        )
    if record.not_after <= now:
        raise ClientError(f"issuer {name} expired {when(record.not_after)}", code="issuer_expired")
    if record.not_before > now:
        raise ClientError(f"issuer {name} is not valid before {when(record.not_before)}", code="issuer_not_yet_valid")
    if not force and record.not_after - now < min_validity:
        raise ClientError(
            f"issuer {name} expires {when(record.not_after)}, within the longest role max_ttl "
            f"({format_duration(min_validity)}), so its leaves would be cut short; "
            "rotate a new one, or --force to activate it anyway",
            code="issuer_expires_too_soon",
        )


def activation_warnings(record: IssuerRecord, *, now: datetime, warn_within: timedelta = EXPIRY_WARNING) -> list[str]:
    """What to tell an operator who activates ``record`` (already checked by :func:`check_activation`)."""
    warnings = []
    if record.not_after - now < warn_within:
        warnings.append(
            f"the issuer expires {when(record.not_after)} (in {_days(record.not_after - now)}); "
            "prepare its successor soon"
        )
    return warnings


def check_retirement(
    record: IssuerRecord, leaves: LeafCounts, *, now: datetime, settle: timedelta, force: bool
) -> None:
    """Refuse to take an issuer out of the truststore while API Gateway may still meet its leaves.

    ``settle`` is how long a replica may keep signing with an issuer after it stopped being active
    (the registry refresh, twice). Raises ClientError ``issuer_active`` (never, even with ``force``),
    ``issuer_retired``, and — unless ``force`` — ``issuer_has_live_leaves`` (naming how many and when
    the last expires) and ``issuer_recently_active``.
    """
    name = f"{record.subject} ({short(record.fingerprint_sha256)})"
    if record.state == "active":
        raise ClientError(
            f"issuer {name} is the active issuer; activate its successor first (`issuer ca activate`)",
            code="issuer_active",
        )
    if record.state == "retired":
        raise ClientError(f"issuer {name} was retired already", code="issuer_retired")
    if force:
        return
    if leaves.live:
        last = f"; the last expires {when(leaves.last_expiry)}" if leaves.last_expiry else ""
        raise ClientError(
            f"issuer {name} still has {leaves.live} live lea{'f' if leaves.live == 1 else 'ves'}{last}; "
            "retire it after that, or --force (those machines then fail mutual TLS until they renew)",
            code="issuer_has_live_leaves",
        )
    if record.activated_at is not None and now - record.updated_at < settle:
        raise ClientError(
            f"issuer {name} was active until {when(record.updated_at)}; replicas may still sign with it "
            f"for up to {format_duration(settle)} after that; try again then, or --force",
            code="issuer_recently_active",
        )


def expiry_warnings(
    issuers: Sequence[IssuerRecord], roots: Sequence[RootRecord], *, now: datetime, warn_within: timedelta
) -> list[str]:
    """Warnings for the active issuer and the active roots that expire within ``warn_within`` (or have)."""
    warnings = []
    active = [r for r in issuers if r.state == "active"]
    successors = [
        r for r in issuers if phase_of(r, now=now) == "prepared" and (not active or r.not_after > active[0].not_after)
    ]
    for record in active:
        left = record.not_after - now
        if left >= warn_within:
            continue
        state = f"expired {when(record.not_after)}" if left <= timedelta(0) else f"expires {when(record.not_after)}"
        span = "" if left <= timedelta(0) else f" (in {_days(left)})"
        step = (
            f"activate the prepared {short(successors[-1].fingerprint_sha256)} (`issuer ca activate`)"
            if successors
            else "run `issuer ca rotate`, publish the truststore, then `issuer ca activate`"
        )
        warnings.append(f"the active issuing CA {record.subject} {state}{span}: {step}")
    for root in roots:
        left = root.not_after - now
        if root.state != "active" or left >= warn_within:
            continue
        state = f"expired {when(root.not_after)}" if left <= timedelta(0) else f"expires {when(root.not_after)}"
        warnings.append(
            f"the root {root.subject} ({short(root.fingerprint_sha256)}) {state}: "
            "add its successor (`issuer ca add-root`) and move the issuers under it"
        )
    return warnings


def _days(delta: timedelta) -> str:
    if delta >= timedelta(days=2):
        return f"{delta.days} days"
    hours = max(1, int(delta.total_seconds() // 3600))
    return f"{hours} hour{'s' if hours != 1 else ''}"
