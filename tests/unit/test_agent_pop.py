"""The renewal proof-of-possession JWS, checked against the contract by an independent verifier."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clients.agent.pop import jws_algorithm, renewal_token
from clients.errors import EX_CONFIG, ConfigError
from tests.unit.test_agent_fake_issuer import SERVER_ID, T0, TestCA, verify_pop


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


def _part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


@pytest.mark.parametrize(
    ("key", "alg", "signature_bytes"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "ES256", 64),
        (ec.generate_private_key(ec.SECP384R1()), "ES384", 96),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", 256),
    ],
    ids=["p256", "p384", "rsa2048"],
)
def test_token_verifies_and_carries_exactly_the_contract(ca: TestCA, key: Any, alg: str, signature_bytes: int) -> None:
    cert = ca.issue(key.public_key(), not_before=T0, not_after=T0 + timedelta(days=1), uri="spiffe://t/m")
    csr_der = b"\x30\x03new-csr-der"
    now = T0 + timedelta(hours=3, microseconds=900_000)
    token = renewal_token(key=key, certificate=cert, audience=SERVER_ID, csr_der=csr_der, now=now, jti="J" * 22)

    assert verify_pop(token, audience=SERVER_ID, csr_der=csr_der, now=now, seen_jti=set()) == cert
    parts = token.split(".")
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in parts)  # base64url, no padding
    assert len(base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))) == signature_bytes  # raw r||s
    header, claims = _part(token, 0), _part(token, 1)
    assert header == {
        "alg": alg,
        "typ": "JWT",
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],  # standard, not url-safe
    }
    iat = int(now.timestamp())
    assert claims == {
        "aud": SERVER_ID,
        "iat": iat,
        "exp": iat + 120,
        "jti": "J" * 22,
        "csr_sha256": hashlib.sha256(csr_der).hexdigest(),
        "sub": format(cert.serial_number, "x"),
    }


def test_each_token_gets_a_fresh_url_safe_jti(ca: TestCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(key.public_key(), not_before=T0, not_after=T0 + timedelta(days=1), uri="spiffe://t/m")
    jtis = {
        _part(renewal_token(key=key, certificate=cert, audience="a", csr_der=b"c", now=T0), 1)["jti"] for _ in range(5)
    }
    assert len(jtis) == 5
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22,64}", jti) for jti in jtis)


def test_a_token_for_another_csr_or_issuer_is_refused(ca: TestCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(key.public_key(), not_before=T0, not_after=T0 + timedelta(days=1), uri="spiffe://t/m")
    token = renewal_token(key=key, certificate=cert, audience=SERVER_ID, csr_der=b"csr-1", now=T0)
    for audience, csr, code in (
        (SERVER_ID, b"csr-2", "renew_csr_mismatch"),
        ("other", b"csr-1", "renew_audience_mismatch"),
    ):
        with pytest.raises(Exception) as err:
            verify_pop(token, audience=audience, csr_der=csr, now=T0, seen_jti=set())
        assert getattr(err.value, "code", None) == code


def test_a_key_the_issuer_would_not_accept_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as err:
        jws_algorithm(ec.generate_private_key(ec.SECP521R1()))
    assert err.value.code == "key_unsupported"
    assert err.value.exit_status == EX_CONFIG
