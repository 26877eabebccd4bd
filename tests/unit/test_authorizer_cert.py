"""The authorizer's own DER reader, checked against certificates made by ``cryptography``.

Also the certificate builders the other authorizer tests use (``make_ca``, ``make_leaf``).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from clients.authorizer import (
    CertificateError,
    parse_certificate_der,
    parse_certificate_pem,
    serial_matches,
)

URI = "spiffe://example.org/aws/123456789012/us-east-1/ec2/i-0123456789abcdef0"


@dataclass(frozen=True)
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_ca(name: str = "Test Issuing CA") -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Ca(key, cert)


def make_leaf(
    ca: Ca,
    *,
    serial: int | None = None,
    role: str | None = "web-fleet",
    extra_roles: Sequence[str] = (),
    common_name: str = "web-1",
    uris: Sequence[str] = (URI,),
    dns: Sequence[str] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    rsa_key: bool = False,
    name_type: _ASN1Type | None = None,
) -> x509.Certificate:
    """A client leaf like the issuer's: OU=<role>, CN=<machine>, URI SAN, clientAuth."""
    now = datetime.now(UTC)
    key = rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1())

    def attribute(oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
        if name_type is None:
            return x509.NameAttribute(oid, value)
        return x509.NameAttribute(oid, value, name_type)

    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example.org")]
    attributes += [attribute(NameOID.ORGANIZATIONAL_UNIT_NAME, r) for r in [role, *extra_roles] if r]
    attributes.append(attribute(NameOID.COMMON_NAME, common_name))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(seconds=60))
        .not_valid_after(not_after or now + timedelta(hours=24))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


# --- what the reader finds --------------------------------------------------------------------


def test_reads_serial_role_name_uri_and_validity(ca: Ca) -> None:
    cert = make_leaf(ca)
    parsed = parse_certificate_pem(pem(cert))
    assert parsed.serial == format(cert.serial_number, "x")
    assert parsed.roles == ("web-fleet",)
    assert parsed.common_name == "web-1"
    assert parsed.uri_sans == (URI,)
    assert parsed.not_before == cert.not_valid_before_utc
    assert parsed.not_after == cert.not_valid_after_utc


@pytest.mark.parametrize(
    "serial",
    [1, 0x7F, 0x80, 0xFF, 0x100, 0x00FF_0000, 0x80 << 144, (1 << 159) - 1, 0x5D60CE9D0A1B],
    ids=lambda s: hex(s),
)
def test_serial_is_lowercase_hex_without_leading_zeros(ca: Ca, serial: int) -> None:
    # 0x80... needs a leading 00 byte in DER (INTEGER is signed); it must not show in the hex.
    parsed = parse_certificate_der(der(make_leaf(ca, serial=serial)))
    assert parsed.serial == format(serial, "x")
    assert not parsed.serial.startswith("0")


def test_agrees_with_cryptography_on_many_certificates(ca: Ca) -> None:
    rng = random.Random(20261129)
    for _ in range(40):
        serial = rng.getrandbits(rng.choice([8, 63, 64, 127, 159])) | 1
        cert = make_leaf(ca, serial=serial, rsa_key=False, common_name=f"m-{serial:x}", uris=(f"{URI}/{serial}",))
        parsed = parse_certificate_der(der(cert))
        assert (parsed.serial, parsed.common_name, parsed.uri_sans) == (
            format(cert.serial_number, "x"),
            cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
            tuple(
                cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                    x509.UniformResourceIdentifier
                )
            ),
        )
        assert parsed.not_after == cert.not_valid_after_utc


def test_rsa_leaf(ca: Ca) -> None:
    cert = make_leaf(ca, rsa_key=True)
    assert parse_certificate_pem(pem(cert)).serial == format(cert.serial_number, "x")


def test_generalized_time_after_2049_and_utc_time_before_2000(ca: Ca) -> None:
    # RFC 5280: UTCTime through 2049 (YY >= 50 means 19YY), GeneralizedTime from 2050.
    before = datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)
    after = datetime(2051, 1, 2, 3, 4, 5, tzinfo=UTC)
    parsed = parse_certificate_der(der(make_leaf(ca, not_before=before, not_after=after)))
    assert (parsed.not_before, parsed.not_after) == (before, after)


def test_only_uri_sans_in_order_and_all_ous(ca: Ca) -> None:
    cert = make_leaf(ca, extra_roles=["batch"], uris=("spiffe://a/1", "https://b/2"), dns=("web-1.internal",))
    parsed = parse_certificate_pem(pem(cert))
    assert parsed.uri_sans == ("spiffe://a/1", "https://b/2")
    assert parsed.roles == ("web-fleet", "batch")


def test_no_san_and_no_ou(ca: Ca) -> None:
    parsed = parse_certificate_pem(pem(make_leaf(ca, role=None, uris=())))
    assert (parsed.roles, parsed.uri_sans, parsed.common_name) == ((), (), "web-1")


@pytest.mark.parametrize(
    ("name_type", "common_name"),
    [
        (None, "wéb-1 ☃"),  # UTF8String
        (_ASN1Type.PrintableString, "web-1"),
        (_ASN1Type.BMPString, "wéb-1"),
        (_ASN1Type.UniversalString, "wéb-1 ☃"),
        (_ASN1Type.IA5String, "web-1"),
    ],
)
def test_directory_string_types(ca: Ca, name_type: _ASN1Type | None, common_name: str) -> None:
    parsed = parse_certificate_der(der(make_leaf(ca, common_name=common_name, name_type=name_type)))
    assert parsed.common_name == common_name
    assert parsed.roles == ("web-fleet",)


def test_pem_with_surrounding_text_and_crlf(ca: Ca) -> None:
    cert = make_leaf(ca)
    text = "subject=...\r\n" + pem(cert).replace("\n", "\r\n") + "trailing\r\n"
    assert parse_certificate_pem(text).serial == format(cert.serial_number, "x")


# --- what the reader refuses ------------------------------------------------------------------


def _pem_of(data: bytes) -> str:
    body = base64.encodebytes(data).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "CERT_CONTENT",
        "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        _pem_of(b"\x30\x80\x02\x01\x01\x00\x00"),  # indefinite length
        _pem_of(b"\x30\x03\x02\x01\x01"),  # not three parts
        _pem_of(b"\x1f\x01\x00"),  # high tag number
        _pem_of(b"\x30\x85\x01\x00\x00\x00\x00"),  # length of length too long
    ],
    ids=["empty", "placeholder", "bad-base64", "zero-bytes", "truncated", "indefinite", "short", "high-tag", "len5"],
)
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(CertificateError):
        parse_certificate_pem(text)


def test_two_certificates_are_refused(ca: Ca) -> None:
    with pytest.raises(CertificateError, match="2 certificate blocks"):
        parse_certificate_pem(pem(make_leaf(ca)) + pem(make_leaf(ca)))


def test_a_csr_is_not_a_certificate(ca: Ca) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CertificateError):
        parse_certificate_pem(csr.public_bytes(serialization.Encoding.PEM).decode())


def test_trailing_bytes_and_truncation_are_refused(ca: Ca) -> None:
    data = der(make_leaf(ca))
    parse_certificate_der(data)
    with pytest.raises(CertificateError):
        parse_certificate_der(data + b"\x00")
    for cut in (1, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(CertificateError):
            parse_certificate_der(data[:cut])


def test_negative_serial_is_refused(ca: Ca) -> None:
    serial = 0x7F1122334455667788
    data = der(make_leaf(ca, serial=serial))
    encoded = b"\x02\x09" + serial.to_bytes(9, "big")
    assert data.count(encoded) == 1
    parse_certificate_der(data)
    with pytest.raises(CertificateError, match="not positive"):
        parse_certificate_der(data.replace(encoded, b"\x02\x09\x80" + encoded[3:]))


def test_duplicate_subject_alt_name_is_refused(ca: Ca) -> None:
    # Build a second extension with an OID of the same encoded length (2.5.29.99), carrying the
    # SAN's value, then rename it to 2.5.29.17: two SANs, which RFC 5280 forbids.
    leaf = make_leaf(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    value = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://evil/x")]).public_bytes()
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(leaf.public_key())
        .serial_number(leaf.serial_number)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
        .add_extension(san, critical=False)
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.99"), value), critical=False)
    )
    data = der(builder.sign(ca.key, hashes.SHA256()))
    assert parse_certificate_der(data).uri_sans == (URI,)
    with pytest.raises(CertificateError, match="twice"):
        parse_certificate_der(data.replace(b"\x06\x03\x55\x1d\x63", b"\x06\x03\x55\x1d\x11"))


# --- comparing with API Gateway's serialNumber ------------------------------------------------


@pytest.mark.parametrize(
    ("serial", "printed"),
    [
        ("5d60ce9d0a1b", "5d60ce9d0a1b"),
        ("5d60ce9d0a1b", "5D60CE9D0A1B"),
        ("5d60ce9d0a1b", "5d:60:ce:9d:0a:1b"),
        ("5d60ce9d0a1b", "00:5D:60:CE:9D:0A:1B"),
        ("5d60ce9d0a1b", "0x5d60ce9d0a1b"),
        ("5d60ce9d0a1b", " 5d 60 ce 9d 0a 1b "),
        ("a1", "00a1"),
        ("1", "1"),  # the HTTP API doc page prints "1"
        ("a", "10"),  # an all-digit text may be decimal ...
        ("10", "10"),  # ... or hex
    ],
)
def test_serial_matches_liberally(serial: str, printed: str) -> None:
    assert serial_matches(serial, printed)


@pytest.mark.parametrize(
    ("serial", "printed"),
    [
        ("5d60ce9d0a1b", "5d60ce9d0a1c"),
        ("5d60ce9d0a1b", "5d60ce9d0a1b00"),
        ("5d60ce9d0a1b", ""),
        ("5d60ce9d0a1b", "zz"),
        ("5d60ce9d0a1b", "-5d60ce9d0a1b"),
        ("a", "11"),
    ],
)
def test_serial_mismatch(serial: str, printed: str) -> None:
    assert not serial_matches(serial, printed)
