"""The values the issuance pipeline passes around: a request's context, what it asks, what it gets."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from cryptography import x509

from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ClientError

__all__ = [
    "Attempt",
    "Clock",
    "IssueRequest",
    "Issued",
    "RequestContext",
    "normalise_serial",
    "serial_hex",
]

Clock = Callable[[], datetime]
P = TypeVar("P")
_HEX = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who sent a request, as far as the transport knows."""

    request_id: str  # ours, always generated
    remote_addr: str | None
    client_request_id: str | None = None  # the caller's X-Request-ID, for logs only


@dataclass(slots=True)
class Attempt:
    """What is known so far about one request, for its audit row."""

    method: str
    ctx: RequestContext
    principal: str | None = None
    role: str | None = None
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, slots=True)
class IssueRequest(Generic[P]):
    """An issuance request as the wire schema read it: the CSR, options, and the method's typed proof."""

    csr_pem: str
    proof: P
    role: str | None = None
    ttl: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Issued:
    """What a successful issuance returns; everything in it is committed."""

    serial: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]
    renew_after: datetime
    identity: VerifiedIdentity
    uri_san: str
    role: str
    server_id: str
    nonce: str | None = None
    renewed_from: str | None = None
    certificate_pem: str = ""  # the certificate as recorded (PEM), so the answer need not encode it again


def serial_hex(serial: int) -> str:
    """How serials are stored and shown: lower-case hex, no leading zeros."""
    return format(serial, "x")


def normalise_serial(text: str) -> str:
    """A serial as a person pastes it (``0A:1B:…``, ``0x…``, upper case, spaces) in the stored form.

    Raises :class:`ClientError` ``serial_invalid`` when it is not hexadecimal.
    """
    compact = "".join(text.split()).replace(":", "").lower().removeprefix("0x")
    if not _HEX.fullmatch(compact):
        raise ClientError(f"{text!r} is not a certificate serial (hexadecimal)", code="serial_invalid")
    return compact.lstrip("0") or "0"
