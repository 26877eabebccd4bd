"""Key type names, key generation, and the error shape callers map to HTTP."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from ca import DEFAULT_KEY_TYPES, KEY_TYPES, CAError, CAKeyError, CAStateError, CSRError, key_type_of
from ca.keys import generate_private_key, signature_hash_for
from tests.support.x509_check import rsa_key


def test_key_type_names() -> None:
    assert KEY_TYPES == ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519")
    assert DEFAULT_KEY_TYPES == ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "ed25519", "rsa-2048"])
def test_generated_keys_have_the_type_asked_for(key_type: str) -> None:
    assert key_type_of(generate_private_key(key_type).public_key()) == key_type


def test_rsa_sizes_are_named() -> None:
    for bits in (2048, 3072, 4096):
        assert key_type_of(rsa_key(bits).public_key()) == f"rsa-{bits}"


def test_unknown_key_type_name() -> None:
    with pytest.raises(ValueError, match="unknown key type 'ec-p521'"):
        generate_private_key("ec-p521")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: rsa_key(1024), "RSA keys must be 2048, 3072 or 4096 bits; this is a 1024-bit key"),
        (lambda: rsa.generate_private_key(65537, 2304), "this is a 2304-bit key"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "P-256 or P-384; this is a secp521r1 key"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "this is a secp256k1 key"),
        (lambda: dsa.generate_private_key(1024), "this is a DSA key"),
        (lambda: ed448.Ed448PrivateKey.generate(), "this is a Ed448 key"),
    ],
    ids=["rsa-1024", "rsa-2304", "p521", "secp256k1", "dsa", "ed448"],
)
def test_unsupported_keys_are_named_in_the_error(make: object, message: str) -> None:
    key = make()  # type: ignore[operator]
    with pytest.raises(CSRError) as excinfo:
        key_type_of(key.public_key())
    assert excinfo.value.code == "key_type_unsupported"
    assert message in excinfo.value.detail


def test_holder_is_named_in_the_error() -> None:
    with pytest.raises(CSRError, match="this CSR has a 1024-bit key"):
        key_type_of(rsa_key(1024).public_key(), holder="this CSR")


def test_ca_signature_hashes() -> None:
    assert isinstance(signature_hash_for(generate_private_key("ec-p384")), hashes.SHA384)
    assert isinstance(signature_hash_for(generate_private_key("ec-p256")), hashes.SHA256)
    assert signature_hash_for(ed25519.Ed25519PrivateKey.generate()) is None


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (CSRError("bad"), 400, "csr_malformed"),
        (CSRError("bad", code="key_type_not_allowed"), 400, "key_type_not_allowed"),
        (CAStateError("gone", code="ca_not_initialised"), 500, "ca_not_initialised"),
        (CAKeyError("locked"), 500, "ca_passphrase_wrong"),
    ],
)
def test_errors_carry_code_status_and_detail(error: CAError, status: int, code: str) -> None:
    assert isinstance(error, CAError)
    assert (error.status_hint, error.code, error.detail, error.reason) == (status, code, str(error), str(error))
