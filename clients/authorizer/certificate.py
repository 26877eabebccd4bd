"""The client certificate API Gateway passes: a small DER reader of its own (RFC 5280, only what is needed).

It reads the serial, the subject's CN and OU values (the role), the URI SANs and the validity, and
refuses anything that is not one well-formed certificate. The signature is not checked here: API
Gateway verified the chain against its truststore, and the CRL check (:mod:`.crls`) verifies the
leaf against its issuer in the truststore the CRLs are verified with.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Final

from .errors import CertificateError

__all__ = ["ClientCertificate", "parse_certificate_der", "parse_certificate_pem", "serial_matches"]

_OID_CN: Final = "2.5.4.3"
_OID_OU: Final = "2.5.4.11"
_OID_SAN: Final = "2.5.29.17"
_PEM_BLOCK: Final = re.compile(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----")


@dataclass(frozen=True)
class ClientCertificate:
    """What the authorizer reads from a leaf: ``serial`` is lowercase hex without leading zeros,
    ``roles`` the subject's OU values and ``uri_sans`` the URI SANs, both in certificate order."""

    serial: str
    common_name: str
    roles: tuple[str, ...]
    uri_sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    der: bytes = field(default=b"", repr=False)  # the certificate as read, for the CRL check


def parse_certificate_pem(pem: str) -> ClientCertificate:
    """Parse exactly one PEM ``CERTIFICATE`` block.

    Raises :class:`CertificateError` for anything that is not one well-formed X.509 certificate.
    The signature is not checked: API Gateway already verified the chain against the truststore.
    """
    blocks = _PEM_BLOCK.findall(pem)
    if len(blocks) != 1:
        raise CertificateError(f"clientCertPem holds {len(blocks)} certificate blocks, not 1")
    try:
        der = base64.b64decode("".join(blocks[0].split()), validate=True)
    except (binascii.Error, ValueError):
        raise CertificateError("clientCertPem is not valid base64") from None
    return parse_certificate_der(der)


def parse_certificate_der(der: bytes) -> ClientCertificate:
    """Parse one DER certificate (no trailing bytes); raises :class:`CertificateError`."""
    tag, body, end = _tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise CertificateError("not a DER certificate (outer SEQUENCE)")
    outer = _children(body)
    if len(outer) != 3 or outer[0][0] != 0x30:
        raise CertificateError("certificate is not tbsCertificate, signatureAlgorithm, signature")
    fields = _children(outer[0][1])
    i = 1 if fields and fields[0][0] == 0xA0 else 0  # [0] EXPLICIT version
    if len(fields) < i + 6:
        raise CertificateError("tbsCertificate is truncated")
    serial_tag, serial_bytes = fields[i]
    if serial_tag != 0x02 or not serial_bytes:
        raise CertificateError("serialNumber is not an INTEGER")
    serial = int.from_bytes(serial_bytes, "big", signed=True)
    if serial <= 0:
        raise CertificateError("serialNumber is not positive")
    validity = _children(_expect(fields[i + 3], 0x30, "validity"))
    if len(validity) != 2:
        raise CertificateError("validity is not notBefore, notAfter")
    subject = _name(_expect(fields[i + 4], 0x30, "subject"))
    uris: tuple[str, ...] = ()
    for tag, content in fields[i + 6 :]:
        if tag == 0xA3:  # [3] EXPLICIT extensions
            uris = _uri_sans(_expect(_one(content, "extensions"), 0x30, "extensions"))
    return ClientCertificate(
        serial=format(serial, "x"),
        common_name=next((value for oid, value in subject if oid == _OID_CN), ""),
        roles=tuple(value for oid, value in subject if oid == _OID_OU),
        uri_sans=uris,
        not_before=_time(validity[0]),
        not_after=_time(validity[1]),
        der=der,
    )


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One tag-length-value at ``pos``: (tag, content, position after it)."""
    if pos + 2 > len(data):
        raise CertificateError("DER is truncated")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise CertificateError("DER high tag numbers do not occur in certificates")
    pos += 2
    if first == 0x80:
        raise CertificateError("indefinite lengths are not DER")
    if first > 0x80:
        count = first & 0x7F
        if count > 4 or pos + count > len(data):
            raise CertificateError("DER length is malformed")
        length, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    else:
        length = first
    if pos + length > len(data):
        raise CertificateError("DER is truncated")
    return tag, data[pos : pos + length], pos + length


def _children(content: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(content):
        tag, value, pos = _tlv(content, pos)
        out.append((tag, value))
    return out


def _expect(item: tuple[int, bytes], tag: int, what: str) -> bytes:
    if item[0] != tag:
        raise CertificateError(f"{what} has tag 0x{item[0]:02x}, expected 0x{tag:02x}")
    return item[1]


def _one(content: bytes, what: str) -> tuple[int, bytes]:
    items = _children(content)
    if len(items) != 1:
        raise CertificateError(f"{what} must hold exactly one element")
    return items[0]


def _oid(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise CertificateError("OBJECT IDENTIFIER is malformed")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


# Directory string types as they appear in certificate names, and how to decode them.
_STRINGS: Final = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x12: "ascii",  # NumericString
    0x14: "latin-1",  # TeletexString (commonly latin-1 in practice)
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}


def _name(content: bytes) -> list[tuple[str, str]]:
    """A Name as (oid, value) pairs in order; values decoded only for CN and OU."""
    out: list[tuple[str, str]] = []
    for rdn in _children(content):
        for attribute in _children(_expect(rdn, 0x31, "RelativeDistinguishedName")):
            parts = _children(_expect(attribute, 0x30, "AttributeTypeAndValue"))
            if len(parts) != 2:
                raise CertificateError("AttributeTypeAndValue is malformed")
            oid = _oid(_expect(parts[0], 0x06, "attribute type"))
            if oid in (_OID_CN, _OID_OU):
                tag, raw = parts[1]
                if tag not in _STRINGS:
                    raise CertificateError(f"name attribute {oid} has string tag 0x{tag:02x}")
                try:
                    out.append((oid, raw.decode(_STRINGS[tag])))
                except UnicodeDecodeError:
                    raise CertificateError(f"name attribute {oid} is not valid text") from None
    return out


def _uri_sans(extensions: bytes) -> tuple[str, ...]:
    found: tuple[str, ...] | None = None
    for extension in _children(extensions):
        parts = _children(_expect(extension, 0x30, "Extension"))
        if len(parts) not in (2, 3):
            raise CertificateError("Extension is malformed")
        if _oid(_expect(parts[0], 0x06, "extnID")) != _OID_SAN:
            continue
        if found is not None:
            raise CertificateError("subjectAltName appears twice")  # RFC 5280 4.2
        names = _children(_expect(_one(_expect(parts[-1], 0x04, "extnValue"), "extnValue"), 0x30, "GeneralNames"))
        try:
            found = tuple(value.decode("ascii") for tag, value in names if tag == 0x86)  # [6] URI
        except UnicodeDecodeError:
            raise CertificateError("a URI SAN is not ASCII") from None
    return found or ()


def _time(item: tuple[int, bytes]) -> datetime:
    tag, raw = item
    text = raw.decode("ascii", errors="replace")
    if tag == 0x17 and re.fullmatch(r"\d{12}Z", text):  # UTCTime YYMMDDHHMMSSZ (RFC 5280 4.1.2.5.1)
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif not (tag == 0x18 and re.fullmatch(r"\d{14}Z", text)):  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise CertificateError(f"validity time {text!r} is not UTCTime or GeneralizedTime in Z")
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise CertificateError(f"validity time {text!r} is not a date") from None


def serial_matches(serial_hex: str, printed: str) -> bool:
    """Whether API Gateway's ``serialNumber`` text names the same serial as ``serial_hex``.

    Liberal in what it accepts: colons, spaces, upper case, leading zeros, a ``0x`` prefix, and
    (the documentation shows ``"1"``) an all-digit decimal rendering.
    """
    text = printed.strip().lower().replace(":", "").replace(" ", "").removeprefix("0x")
    if not text or not re.fullmatch(r"[0-9a-f]+", text):
        return False
    candidates = {int(text, 16)}
    if text.isdigit():
        candidates.add(int(text, 10))
    return int(serial_hex, 16) in candidates
