"""DER read and written as bytes, for the few places where comparing encodings is the check.

Only definite lengths and one-byte tags: anything else (BER's indefinite lengths, a high tag
number) is "not one" (None), for the caller to hand to a full parser (asn1crypto).
"""

from __future__ import annotations

from asn1crypto import core

__all__ = ["OCTET_STRING", "OID", "SEQUENCE", "SET", "element", "elements", "oid"]

OCTET_STRING = 0x04
OID = 0x06
SEQUENCE = 0x30
SET = 0x31


def oid(dotted: str) -> bytes:
    """The contents octets of the object identifier ``dotted`` (what an OID element carries)."""
    return bytes(core.ObjectIdentifier(dotted).contents)


def element(tag: int, contents: bytes) -> bytes:
    """One DER element: ``tag``, the definite length of ``contents``, ``contents``."""
    n = len(contents)
    if n < 0x80:
        return bytes([tag, n]) + contents
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + contents


def elements(data: bytes) -> list[tuple[int, bytes]] | None:
    """``data`` as a run of DER elements, (tag, contents) each; None if it is not one."""
    out: list[tuple[int, bytes]] = []
    at, end = 0, len(data)
    while at < end:
        if at + 2 > end or data[at] & 0x1F == 0x1F:
            return None
        tag, length, at = data[at], data[at + 1], at + 2
        if length & 0x80:
            count = length & 0x7F
            if not 0 < count <= 4 or at + count > end:
                return None  # indefinite (BER) or absurd
            length, at = int.from_bytes(data[at : at + count], "big"), at + count
        if at + length > end:
            return None
        out.append((tag, data[at : at + length]))
        at += length
    return out
