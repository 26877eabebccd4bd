"""x509pop, pure: the chain and the proof (accepted, and refused each way), the facts, the role's matchers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca.csr import CheckedCSR, parse_csr
from ca.keys import KEY_TYPES
from issuer.attest.x509pop import X509PopProof, certificate_facts, verify_x509pop
from issuer.errors import ClientError, ConfigError, Forbidden, IssuerError
from issuer.policy.roles import parse_roles
from issuer.policy.x509pop import X509POP, X509PopOptions
from tests.support.external_pki import ExternalPki, Machine, proof
from tests.support.x509_check import make_csr, rsa_key

AUDIENCE = "issuer.test.example"
PKI = ExternalPki()


def new_csr(key: Any = None) -> str:
    return make_csr(key or ec.generate_private_key(ec.SECP256R1())).decode()


def verify(machine: Machine, csr_pem: str, *, chain: str | None = None, **knobs: Any) -> Any:
    token = proof(machine.key, csr_pem=csr_pem, audience=AUDIENCE, **knobs)
    csr: CheckedCSR = parse_csr(csr_pem, allowed_key_types=KEY_TYPES)
    return verify_x509pop(
        X509PopProof(chain_pem=chain if chain is not None else machine.chain_pem, proof=token),
        anchors=(PKI.root,),
        audience=AUDIENCE,
        csr_sha256_hex=csr.sha256_hex,
        csr_public_key_sha256_hex=csr.public_key_sha256_hex,
        now=datetime.now(UTC),
    )


def refused(machine: Machine, csr: str | None = None, **knobs: Any) -> IssuerError:
    with pytest.raises(IssuerError) as info:
        verify(machine, csr or new_csr(), **knobs)
    return info.value


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (ec.generate_private_key(ec.SECP521R1()), "ES512"),
        (rsa_key(2048), "RS256"),
        (rsa_key(2048), "PS256"),
        (rsa_key(3072), "RS384"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
    ids=["p256", "p384", "p521", "rsa-rs256", "rsa-ps256", "rsa-rs384", "ed25519"],
)
def test_a_client_certificate_chaining_to_the_bundle_with_a_proof_by_its_key_is_proven(key: Any, alg: str) -> None:
    machine = PKI.machine(key=key)
    proven = verify(machine, new_csr(), alg=alg)
    assert proven.leaf == machine.certificate and proven.fingerprint == machine.fingerprint
    assert len(proven.jti) >= 16 and proven.replayable_until > datetime.now(UTC)


def test_a_leaf_signed_by_the_root_itself_and_one_without_a_san_are_proven() -> None:
    verify(PKI.machine(from_root=True), new_csr())
    assert PKI.machine().certificate.extensions.get_extension_for_class  # built without a SAN by default
    with pytest.raises(x509.ExtensionNotFound):
        PKI.machine().certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)


@pytest.mark.parametrize(
    ("case", "make", "knobs", "code"),
    [
        ("a CA outside the bundle", lambda: ExternalPki("Other Corp").machine(), {}, "x509pop_chain_untrusted"),
        ("no intermediate sent", lambda: PKI.machine(), {"chain": "__leaf_only__"}, "x509pop_chain_untrusted"),
        (
            "expired",
            lambda: PKI.machine(
                not_before=datetime.now(UTC) - timedelta(days=3), not_after=datetime.now(UTC) - timedelta(seconds=5)
            ),
            {},
            "x509pop_certificate_expired",
        ),
        (
            "not yet valid",
            lambda: PKI.machine(not_before=datetime.now(UTC) + timedelta(minutes=5)),
            {},
            "x509pop_certificate_not_yet_valid",
        ),
        (
            "server auth only",
            lambda: PKI.machine(usages=(ExtendedKeyUsageOID.SERVER_AUTH,)),
            {},
            "x509pop_not_client_certificate",
        ),
        ("no extended key usage", lambda: PKI.machine(usages=None), {}, "x509pop_not_client_certificate"),
        (
            "signed by another key",
            lambda: PKI.machine(),
            {"signing_key": ec.generate_private_key(ec.SECP256R1())},
            "x509pop_proof_invalid",
        ),
        ("alg none", lambda: PKI.machine(), {"alg": "none"}, "x509pop_proof_invalid"),
        ("alg HS256 keyed with the public key", lambda: PKI.machine(), {"alg": "HS256"}, "x509pop_proof_invalid"),
        ("ES384 with a P-256 key", lambda: PKI.machine(), {"alg": "ES384"}, "x509pop_proof_invalid"),
        ("RS256 with an EC key", lambda: PKI.machine(), {"alg": "RS256"}, "x509pop_proof_invalid"),
        ("ES256 with an RSA key", lambda: PKI.machine(key=rsa_key(2048)), {"alg": "ES256"}, "x509pop_proof_invalid"),
        ("an RSA-1024 key", lambda: PKI.machine(key=rsa_key(1024)), {}, "x509pop_proof_invalid"),
        ("a jwk in the header", lambda: PKI.machine(), {"header_jwk": {"kty": "EC"}}, "x509pop_proof_invalid"),
        ("for another server", lambda: PKI.machine(), {"aud": "elsewhere"}, "x509pop_audience_mismatch"),
        ("for another CSR", lambda: PKI.machine(), {"csr_sha256": "0" * 64}, "x509pop_csr_mismatch"),
        ("no jti", lambda: PKI.machine(), {"jti": None}, "x509pop_proof_invalid"),
        ("lives too long", lambda: PKI.machine(), {"lifetime": 301}, "x509pop_proof_invalid"),
        (
            "expired proof",
            lambda: PKI.machine(),
            {"age": 600},
            "x509pop_proof_expired",
        ),
        (
            "proof from the future",
            lambda: PKI.machine(),
            {"age": -600},
            "x509pop_proof_expired",
        ),
        ("not PEM", lambda: PKI.machine(), {"chain": "garbage"}, "x509pop_chain_malformed"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_refusals(case: str, make: Any, knobs: dict[str, Any], code: str) -> None:
    machine = make()
    knobs = dict(knobs)
    if "age" in knobs:  # made now, not when the cases were collected
        knobs["now"] = datetime.now(UTC).timestamp() - knobs.pop("age")
    if knobs.get("chain") == "__leaf_only__":
        knobs["chain"] = machine.certificate.public_bytes(serialization.Encoding.PEM).decode()
    if knobs.get("alg") == "HS256":
        # The classic confusion: an HMAC keyed with the public key the verifier holds.
        knobs["hmac_secret"] = machine.certificate.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    error = refused(machine, **knobs)
    assert error.code == code, (case, error.code, error.reason)
    assert code.split("_", 1)[1] not in error.detail.replace(" ", "_")  # the detail stays generic


def test_the_external_key_cannot_be_the_new_key() -> None:
    machine = PKI.machine()
    error = refused(machine, new_csr(machine.key))
    assert isinstance(error, ClientError) and error.code == "x509pop_key_reused"
    verify(machine, new_csr())  # any other key is fine


def test_more_than_eight_certificates_are_malformed() -> None:
    machine = PKI.machine()
    assert refused(machine, chain=machine.chain_pem * 5).code == "x509pop_chain_malformed"


def test_facts_single_values_only_when_single() -> None:
    one = certificate_facts(PKI.machine("web-1", ou=("Servers",), dns=("web-1.corp.example",)).certificate)
    assert (one["cn"], one["ou"], one["o"], one["dns_san"], one["issuer_cn"]) == (
        "web-1",
        "Servers",
        "Example Corp",
        "web-1.corp.example",
        "Example Corp Devices CA",
    )
    two = certificate_facts(PKI.machine("web-2", ou=("Servers", "Lab"), dns=("A.corp.example", "b")).certificate)
    assert "ou" not in two and "dns_san" not in two
    assert json.loads(two["organizational_units"]) == ["Servers", "Lab"]
    assert json.loads(two["dns_sans"]) == ["a.corp.example", "b"]  # DNS names lower-cased


def _identity(machine: Machine, options: X509PopOptions) -> Any:
    return options.identity(certificate_facts(machine.certificate), role="corp")


@pytest.mark.parametrize(
    ("options", "machine", "allowed"),
    [
        (X509PopOptions(), PKI.machine("anything"), True),
        (X509PopOptions(allowed_common_names=("web-*",)), PKI.machine("web-7"), True),
        (X509PopOptions(allowed_common_names=("web-*",)), PKI.machine("db-7"), False),
        (X509PopOptions(allowed_organizational_units=("Servers",)), PKI.machine(ou=("Lab", "Servers")), True),
        (X509PopOptions(allowed_organizational_units=("Servers",)), PKI.machine(ou=("Lab",)), False),
        (X509PopOptions(allowed_organizations=("Example Corp",)), PKI.machine(), True),
        (X509PopOptions(allowed_organizations=("Other",)), PKI.machine(), False),
        (X509PopOptions(allowed_dns_sans=("*.corp.example",)), PKI.machine(dns=("X.Corp.Example",)), True),
        (X509PopOptions(allowed_dns_sans=("*.corp.example",)), PKI.machine(dns=("corp.example.evil",)), False),
        (X509PopOptions(allowed_dns_sans=("*.corp.example",)), PKI.machine(), False),  # no SAN at all
    ],
)
def test_matchers_both_ways(options: X509PopOptions, machine: Machine, allowed: bool) -> None:
    identity = _identity(machine, options)
    now = datetime.now(UTC)
    if allowed:
        options.check(identity, role="corp", now=now, renewing=False)
    else:
        with pytest.raises(Forbidden) as info:
            options.check(identity, role="corp", now=now, renewing=False)
        assert info.value.code == "binding_mismatch" and "role corp" in info.value.reason


def test_fingerprint_allowlist_both_ways() -> None:
    machine = PKI.machine()
    options = X509PopOptions(allowed_fingerprints=(machine.fingerprint,))
    options.check(_identity(machine, options), role="corp", now=datetime.now(UTC), renewing=False)
    other = PKI.machine()
    with pytest.raises(Forbidden):
        options.check(_identity(other, options), role="corp", now=datetime.now(UTC), renewing=False)


def test_the_principal_comes_from_its_template_and_a_missing_fact_refuses() -> None:
    machine = PKI.machine("web-1", ou=("Servers",))
    assert _identity(machine, X509PopOptions()).principal == "web-1"
    assert _identity(machine, X509PopOptions(principal="{ou}/{cn}")).principal == "Servers/web-1"
    with pytest.raises(Forbidden) as info:
        _identity(PKI.machine(ou=("a", "b")), X509PopOptions(principal="{ou}"))
    assert info.value.code == "template_variable_missing"


def _roles(tmp_path: Path, fields: str) -> Any:
    PKI.write_bundle(tmp_path / "cas.pem")
    text = f"name = 'corp'\nmethods = ['x509pop']\n{fields}"
    import tomllib

    return parse_roles([tomllib.loads(text)], source="issuer.toml", trust_domain="t.example", base=tmp_path)


def test_a_role_reads_its_bundle_relative_to_the_configuration(tmp_path: Path) -> None:
    (role,) = _roles(
        tmp_path,
        "trust_bundle = 'cas.pem'\nallowed_fingerprints = ['AB:" + "cd" * 31 + "']\n"
        "allowed_dns_sans = ['*.Corp.Example']\n",
    )
    options = X509POP.of(role)
    assert options.trust_anchors == (PKI.root,) and options.trust_bundle == tmp_path / "cas.pem"
    assert options.allowed_fingerprints == ("ab" + "cd" * 31,) and options.allowed_dns_sans == ("*.corp.example",)
    assert role.uri_san_template("x509pop") == "spiffe://{trust_domain}/x509pop/{principal}"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("", "field 'trust_bundle': required"),
        ("trust_bundle = 'absent.pem'", "cannot read"),
        ("trust_bundle = 'not-pem.txt'", "holds no PEM certificates"),
        ("trust_bundle = 'leaf.pem'", "is not a CA certificate"),
        ("trust_bundle = 'cas.pem'\nallowed_fingerprints = ['abc']", "is not a hex SHA-256"),
        ("trust_bundle = 'cas.pem'\nprincipal = '{instance_id}'", "unknown variable {instance_id}"),
        ("trust_bundle = 'cas.pem'\nuri_san = 'spiffe://{trust_domain}/{account_id}'", "unknown variable"),
        ("trust_bundle = 'cas.pem'\nregions = ['us-east-1']", "only applies to roles with method 'aws-ec2'"),
        ("trust_bundle = 'cas.pem'\nallowed_cns = ['x']", "unknown field 'allowed_cns'"),
    ],
)
def test_role_errors_name_the_field(tmp_path: Path, fields: str, message: str) -> None:
    (tmp_path / "not-pem.txt").write_text("hello")
    (tmp_path / "leaf.pem").write_bytes(PKI.machine().certificate.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError) as info:
        _roles(tmp_path, fields)
    assert "role 'corp'" in info.value.detail and message in info.value.detail


def test_x509pop_fields_only_apply_to_x509pop_roles(tmp_path: Path) -> None:
    import tomllib

    table = tomllib.loads("name = 't'\nmethods = ['token']\nallowed_common_names = ['x']\n")
    with pytest.raises(ConfigError, match="only applies to roles with method 'x509pop'"):
        parse_roles([table], source="issuer.toml", trust_domain="t.example", base=tmp_path)


def test_rsa_keys_smaller_than_2048_bits_are_refused_by_the_proof_check() -> None:
    from issuer.attest import jws

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    token = proof(key, csr_pem=new_csr(), audience=AUDIENCE, alg="RS256")
    with pytest.raises(jws.JwsRefused, match="1024 bits"):
        jws.verify(jws.parse(token, header_keys={"alg", "typ"}), key.public_key(), algorithms=jws.ALGORITHMS)


def test_a_certificate_with_a_malformed_extension_is_a_malformed_chain_not_a_fault() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtensionOID

    machine = PKI.machine()
    broken = (
        x509.CertificateBuilder()
        .subject_name(machine.certificate.subject)
        .issuer_name(machine.certificate.issuer)
        .public_key(machine.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(machine.certificate.not_valid_before_utc)
        .not_valid_after(machine.certificate.not_valid_after_utc)
        .add_extension(x509.UnrecognizedExtension(ExtensionOID.BASIC_CONSTRAINTS, b"\x04\x01garbage"), critical=True)
        .sign(PKI.intermediate_key, hashes.SHA256())
    )
    chain = broken.public_bytes(serialization.Encoding.PEM).decode()
    error = refused(machine, chain=chain)
    assert isinstance(error, ClientError) and error.code == "x509pop_chain_malformed", error.reason
