"""parse_csr: which CSRs a machine may send, and the clear errors for the rest."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519

from ca import DEFAULT_KEY_TYPES, KEY_TYPES, CSRError, parse_csr
from ca.hierarchy import create_hierarchy
from tests.support.x509_check import make_csr, pem, rsa_key


def _to_pem(der: bytes, label: str = "CERTIFICATE REQUEST") -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def _flip_last_signature_byte(csr_pem: bytes) -> bytes:
    csr = x509.load_pem_x509_csr(csr_pem)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    # The signature is the CSR's last field; its last byte is signature value, never structure.
    assert der.endswith(csr.signature)
    der[-1] ^= 0x01
    return _to_pem(bytes(der))


def _code(excinfo: pytest.ExceptionInfo[CSRError]) -> str:
    return excinfo.value.code


@pytest.mark.parametrize(
    ("curve", "key_type"), [(ec.SECP256R1(), "ec-p256"), (ec.SECP384R1(), "ec-p384")], ids=["p256", "p384"]
)
def test_ecdsa_csr_accepted(curve: ec.EllipticCurve, key_type: str) -> None:
    key = ec.generate_private_key(curve)
    checked = parse_csr(make_csr(key), allowed_key_types=DEFAULT_KEY_TYPES)
    assert checked.key_type == key_type
    assert checked.public_key == key.public_key()


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_rsa_csr_accepted(bits: int) -> None:
    key = rsa_key(bits)
    checked = parse_csr(make_csr(key), allowed_key_types=DEFAULT_KEY_TYPES)
    assert checked.key_type == f"rsa-{bits}"
    assert checked.public_key == key.public_key()


def test_text_input_and_hashes() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr_pem = make_csr(key)
    checked = parse_csr(csr_pem.decode(), allowed_key_types=DEFAULT_KEY_TYPES)
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert checked.der == der
    assert checked.sha256_hex == hashlib.sha256(der).hexdigest()
    assert checked.public_key_sha256_hex == hashlib.sha256(spki).hexdigest()


def test_rsa_1024_refused_with_a_clear_message() -> None:
    with pytest.raises(CSRError) as excinfo:
        parse_csr(make_csr(rsa_key(1024)), allowed_key_types=KEY_TYPES)
    assert _code(excinfo) == "key_type_unsupported"
    assert excinfo.value.status_hint == 400
    assert excinfo.value.detail == "RSA keys must be 2048, 3072 or 4096 bits; this CSR has a 1024-bit key"


def test_p521_refused() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    with pytest.raises(CSRError) as excinfo:
        parse_csr(make_csr(key), allowed_key_types=KEY_TYPES)
    assert _code(excinfo) == "key_type_unsupported"
    assert "P-256 or P-384" in excinfo.value.detail
    assert "secp521r1" in excinfo.value.detail


def test_dsa_refused() -> None:
    key = dsa.generate_private_key(1024)
    with pytest.raises(CSRError) as excinfo:
        parse_csr(make_csr(key), allowed_key_types=KEY_TYPES)
    assert _code(excinfo) == "key_type_unsupported"
    assert "DSA" in excinfo.value.detail


def test_unknown_key_algorithm_refused() -> None:
    der = x509.load_pem_x509_csr(make_csr(ec.generate_private_key(ec.SECP256R1()))).public_bytes(
        serialization.Encoding.DER
    )
    id_ec_public_key = bytes.fromhex("06072a8648ce3d0201")  # OID 1.2.840.10045.2.1
    assert der.count(id_ec_public_key) == 1
    unknown = der.replace(id_ec_public_key, bytes.fromhex("06072a8648ce3d0209"))
    with pytest.raises(CSRError) as excinfo:
        parse_csr(_to_pem(unknown), allowed_key_types=KEY_TYPES)
    assert _code(excinfo) == "key_type_unsupported"


def test_ed25519_refused_unless_allowed() -> None:
    csr_pem = make_csr(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(CSRError) as excinfo:
        parse_csr(csr_pem, allowed_key_types=DEFAULT_KEY_TYPES)
    assert _code(excinfo) == "key_type_not_allowed"
    assert "ed25519" in excinfo.value.detail
    assert parse_csr(csr_pem, allowed_key_types=KEY_TYPES).key_type == "ed25519"


def test_supported_type_outside_the_allow_list_refused() -> None:
    csr_pem = make_csr(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(CSRError) as excinfo:
        parse_csr(csr_pem, allowed_key_types=["ec-p256"])
    assert _code(excinfo) == "key_type_not_allowed"


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_tampered_signature_refused(kind: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa_key(2048)
    csr_pem = make_csr(key)
    parse_csr(csr_pem, allowed_key_types=DEFAULT_KEY_TYPES)  # the untampered one is fine
    with pytest.raises(CSRError) as excinfo:
        parse_csr(_flip_last_signature_byte(csr_pem), allowed_key_types=DEFAULT_KEY_TYPES)
    assert _code(excinfo) == "csr_signature_invalid"


def test_csr_signed_by_another_key_refused() -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    genuine = x509.load_pem_x509_csr(make_csr(key))
    forged = x509.load_pem_x509_csr(make_csr(other))
    # Splice key's public key into other's request info: the signature no longer matches the key.
    genuine_spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    other_spki = other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = forged.public_bytes(serialization.Encoding.DER).replace(other_spki, genuine_spki)
    assert genuine.public_key() == x509.load_der_x509_csr(der).public_key()
    with pytest.raises(CSRError) as excinfo:
        parse_csr(_to_pem(der), allowed_key_types=DEFAULT_KEY_TYPES)
    assert _code(excinfo) == "csr_signature_invalid"


def test_sha1_signature_refused(tmp_path: Path) -> None:
    # cryptography will not sign with SHA-1 any more; openssl still will.
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    subprocess.run(
        ["openssl", "req", "-new", "-sha1", "-key", "key.pem", "-subj", "/CN=old", "-out", "csr.pem"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    csr_pem = (tmp_path / "csr.pem").read_bytes()
    with pytest.raises(CSRError) as excinfo:
        parse_csr(csr_pem, allowed_key_types=DEFAULT_KEY_TYPES)
    assert _code(excinfo) == "csr_signature_invalid"
    assert "SHA1" in excinfo.value.detail


def _a_csr() -> bytes:
    return make_csr(ec.generate_private_key(ec.SECP256R1()))


def _der_csr() -> bytes:
    return x509.load_pem_x509_csr(_a_csr()).public_bytes(serialization.Encoding.DER)


def _a_certificate() -> bytes:
    from datetime import UTC, datetime

    return pem([create_hierarchy(now=datetime(2030, 1, 1, tzinfo=UTC)).root.certificate])


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: b"", "not PEM"),
        (lambda: b"hello, I am a CSR", "not PEM"),
        (_der_csr, "not PEM"),
        (lambda: _a_csr() + _a_csr(), "exactly one"),
        (_a_certificate, "got a PEM 'CERTIFICATE'"),
        (lambda: _to_pem(b"\x30\x03\x02\x01\x01"), "could not be decoded"),
        (lambda: _to_pem(b"not a csr", label="CERTIFICATE REQUEST"), "could not be decoded"),
        (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\n%%%%\n-----END CERTIFICATE REQUEST-----\n", "PEM"),
        (lambda: b"Certificate Request:\n  Data: ...\n" + _a_csr(), "only the block"),
        (lambda: _a_csr() + b"x" * 70_000, "at most"),
        (lambda: "-----BEGIN CERTIFICATE REQUEST-----\né\n-----END CERTIFICATE REQUEST-----", "ASCII"),
    ],
    ids=[
        "empty",
        "garbage",
        "der-not-pem",
        "two-csrs",
        "certificate",
        "der-not-a-csr",
        "pem-of-junk",
        "bad-base64",
        "text-around",
        "too-large",
        "non-ascii",
    ],
)
def test_malformed_input_refused(make: object, words: str) -> None:
    data = make()  # type: ignore[operator]
    with pytest.raises(CSRError) as excinfo:
        parse_csr(data, allowed_key_types=KEY_TYPES)
    assert _code(excinfo) == "csr_malformed"
    assert excinfo.value.status_hint == 400
    assert words in excinfo.value.detail
