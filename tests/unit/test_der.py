"""issuer.attest.der: DER elements written and read back, checked against asn1crypto's encoding."""

from __future__ import annotations

import pytest
from asn1crypto import core

from issuer.attest import der


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 70_000])
def test_an_element_is_what_asn1crypto_encodes_and_reads_back(size: int) -> None:
    contents = bytes(range(256)) * (size // 256) + bytes(size % 256)
    encoded = der.element(der.OCTET_STRING, contents)
    assert encoded == core.OctetString(contents).dump()
    assert der.elements(encoded + der.element(der.OID, der.oid("1.2.840.113549.1.7.1"))) == [
        (der.OCTET_STRING, contents),
        (der.OID, core.ObjectIdentifier("1.2.840.113549.1.7.1").contents),
    ]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x30\x80\x04\x00\x00\x00", id="indefinite-length"),
        pytest.param(b"\x04\x05abc", id="longer-than-the-data"),
        pytest.param(b"\x04", id="no-length"),
        pytest.param(b"\x1f\x81\x01\x00", id="high-tag-number"),
        pytest.param(b"\x04\x85\x01\x00\x00\x00\x00", id="five-length-octets"),
    ],
)
def test_what_is_not_a_run_of_der_elements_is_none(data: bytes) -> None:
    assert der.elements(data) is None
