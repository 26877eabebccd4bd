"""The issuer's 201 answer (issue and renew alike), checked before anything touches the disk."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from clients.errors import ResponseError
from clients.keys import PrivateKey, same_public_key
from clients.wire import ResponseField as R
from clients.wire import parse_timestamp

__all__ = ["IssuedCertificate", "IssuedIdentity", "parse_issue_response"]


@dataclass(frozen=True)
class IssuedIdentity:
    method: str
    principal: str
    uri_san: str | None


@dataclass(frozen=True)
class IssuedCertificate:
    """One issuance: PEM text as served and the times that matter to the machine."""

    serial: str
    certificate_pem: str
    chain_pem: str
    bundle_pem: str
    not_before: datetime
    not_after: datetime
    renew_after: datetime
    identity: IssuedIdentity
    nonce: str | None
    role: str | None = None
    # The issuer's own name for itself (the ``aud`` of renewal tokens), when it says.
    server_id: str | None = None
    # Renewals only: the serial of the certificate this one replaces.
    renewed_from: str | None = None


def parse_issue_response(body: Mapping[str, object], *, key: PrivateKey) -> IssuedCertificate:
    """Return the issuance in ``body`` after checking that it is usable.

    Checks: every field present and typed; the leaf parses and certifies ``key``
    (a certificate for another key would be useless, and writing it would lose the
    working pair); ``serial`` names the leaf; chain and bundle parse. Raises
    :class:`ResponseError` (code ``bad_response`` or ``certificate_key_mismatch``).
    """
    certificate_pem = _text(body, R.CERTIFICATE)
    chain_pem = _text(body, R.CHAIN, allow_empty=True)
    bundle_pem = _text(body, R.BUNDLE, allow_empty=True)
    serial = _text(body, R.SERIAL)
    try:
        leaves = x509.load_pem_x509_certificates(certificate_pem.encode("ascii"))
        for extra in (chain_pem, bundle_pem):
            if extra.strip():
                x509.load_pem_x509_certificates(extra.encode("ascii"))
    except ValueError as exc:
        raise ResponseError(f"the issuer sent a certificate that does not parse: {exc}") from None
    if len(leaves) != 1:
        raise ResponseError(f"the issuer sent {len(leaves)} certificates in {R.CERTIFICATE!r}, expected 1")
    leaf = leaves[0]
    if not same_public_key(leaf, key):
        raise ResponseError(
            "the issuer sent a certificate for a different key; nothing was written",
            code="certificate_key_mismatch",
        )
    try:
        serial_number = int(serial.replace(":", ""), 16)
    except ValueError:
        raise ResponseError(f"the issuer sent a serial that is not hex: {serial!r}") from None
    if serial_number != leaf.serial_number:
        raise ResponseError(f"the serial {serial} does not name the certificate sent")

    identity = body.get(R.IDENTITY)
    if not isinstance(identity, Mapping):
        raise ResponseError(f"the issuer's answer has no {R.IDENTITY!r} object")
    uri_san = identity.get(R.IDENTITY_URI_SAN)
    return IssuedCertificate(
        serial=serial,
        certificate_pem=certificate_pem,
        chain_pem=chain_pem,
        bundle_pem=bundle_pem,
        not_before=_time(body, R.NOT_BEFORE),
        not_after=_time(body, R.NOT_AFTER),
        renew_after=_time(body, R.RENEW_AFTER),
        identity=IssuedIdentity(
            method=_text(identity, R.IDENTITY_METHOD),
            principal=_text(identity, R.IDENTITY_PRINCIPAL),
            uri_san=uri_san if isinstance(uri_san, str) and uri_san else None,
        ),
        nonce=_optional(body, R.NONCE),
        role=_optional(body, R.ROLE),
        server_id=_optional(body, R.SERVER_ID),
        renewed_from=_optional(body, R.RENEWED_FROM),
    )


def _optional(body: Mapping[str, object], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value.strip() else None


def _text(body: Mapping[str, object], name: str, *, allow_empty: bool = False) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not (allow_empty or value.strip()):
        raise ResponseError(f"the issuer's answer has no usable {name!r} field")
    return value


def _time(body: Mapping[str, object], name: str) -> datetime:
    text = _text(body, name)
    try:
        # The API speaks UTC; a time without an offset is read as UTC rather than local time.
        return parse_timestamp(text)
    except ValueError:
        raise ResponseError(f"the issuer's {name!r} is not an ISO-8601 time: {text!r}") from None
