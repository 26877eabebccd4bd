"""The leaf and CA certificate profiles, checked field by field and by two independent verifiers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import VerificationError

from ca import (
    DEFAULT_KEY_TYPES,
    CAHierarchy,
    CAStateError,
    CSRError,
    LeafTemplate,
    LocalFileSigner,
    Signer,
    SignerCapabilities,
    SignerCapabilityMissing,
    SigningRequest,
    create_hierarchy,
    generate_private_key,
    parse_csr,
)
from ca.hierarchy import CA_BACKDATE, create_issuing, create_root
from tests.support.signing import sign
from tests.support.x509_check import (
    OpenSSLCheckError,
    make_csr,
    openssl_verify,
    pem,
    rsa_key,
    verify_client_chain,
)

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
URI = "spiffe://example.org/aws/123456789012/us-east-1/ec2/i-0abc"


@pytest.fixture(scope="module")
def hierarchy() -> CAHierarchy:
    return create_hierarchy(now=NOW - timedelta(days=30), organization="Example Corp")


@pytest.fixture(scope="module")
def other_hierarchy() -> CAHierarchy:
    return create_hierarchy(now=NOW - timedelta(days=30), organization="Example Corp")


def _template(**overrides: object) -> LeafTemplate:
    fields: dict[str, object] = {
        "common_name": "i-0abc",
        "uri_sans": (URI,),
        "not_before": NOW - timedelta(seconds=60),
        "not_after": NOW + timedelta(hours=24),
    }
    fields.update(overrides)
    return LeafTemplate(**fields)  # type: ignore[arg-type]


async def _issue(hierarchy: CAHierarchy, **overrides: object) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return await sign(hierarchy.signer(), _template(**overrides), key.public_key())


def _check_both(leaf: x509.Certificate, hierarchy: CAHierarchy, *, at: datetime = NOW) -> None:
    signer = hierarchy.signer()
    chain = verify_client_chain(leaf, signer.chain, signer.roots, at)
    assert chain == [leaf, hierarchy.issuing.certificate, hierarchy.root.certificate]
    openssl_verify(pem([leaf]), pem(signer.chain), pem(signer.roots), attime=at)


async def test_leaf_extensions_and_criticality(hierarchy: CAHierarchy) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    template = _template(dns_sans=("host.internal.example.org",))
    leaf = await sign(hierarchy.signer(), template, key.public_key())
    ext = leaf.extensions

    assert leaf.version is x509.Version.v3
    assert {e.oid for e in ext} == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    }
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert (bc.critical, bc.value.ca, bc.value.path_length) == (True, False, None)

    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical is True
    assert ku.value.digital_signature is True
    assert not any(
        getattr(ku.value, name)
        for name in ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    )
    assert (ku.value.key_cert_sign, ku.value.crl_sign) == (False, False)

    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical is False
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ski.critical is False
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(key.public_key())

    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier)
    issuer_ski = hierarchy.issuing.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.critical is False
    assert aki.value.key_identifier == issuer_ski.value.digest
    assert aki.value.authority_cert_issuer is None

    san = ext.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical is False
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [URI]
    assert san.value.get_values_for_type(x509.DNSName) == ["host.internal.example.org"]

    assert leaf.subject == x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, "i-0abc"),
        ]
    )
    assert leaf.issuer == hierarchy.issuing.certificate.subject
    assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    _check_both(leaf, hierarchy)


async def test_subject_is_cn_only_when_the_ca_has_no_organization() -> None:
    plain = create_hierarchy(now=NOW - timedelta(days=1))
    leaf = await _issue(plain)
    assert leaf.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "i-0abc")])
    _check_both(leaf, plain)


async def test_validity_is_as_given(hierarchy: CAHierarchy) -> None:
    not_before = NOW - timedelta(seconds=60)
    not_after = NOW + timedelta(hours=6)
    leaf = await _issue(hierarchy, not_before=not_before, not_after=not_after)
    assert leaf.not_valid_before_utc == not_before
    assert leaf.not_valid_after_utc == not_after


async def test_fractions_of_seconds_are_dropped(hierarchy: CAHierarchy) -> None:
    leaf = await _issue(hierarchy, not_after=NOW + timedelta(hours=1, microseconds=999_999))
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=1)


async def test_not_after_is_clamped_to_the_issuer(hierarchy: CAHierarchy) -> None:
    issuer_end = hierarchy.issuing.certificate.not_valid_after_utc
    leaf = await _issue(hierarchy, not_after=issuer_end + timedelta(days=3))
    assert leaf.not_valid_after_utc == issuer_end
    _check_both(leaf, hierarchy, at=issuer_end - timedelta(minutes=1))


async def test_not_before_is_clamped_to_the_issuer(hierarchy: CAHierarchy) -> None:
    issuer_start = hierarchy.issuing.certificate.not_valid_before_utc
    leaf = await _issue(hierarchy, not_before=issuer_start - timedelta(days=1))
    assert leaf.not_valid_before_utc == issuer_start


async def test_an_expired_issuer_issues_nothing(hierarchy: CAHierarchy) -> None:
    issuer_end = hierarchy.issuing.certificate.not_valid_after_utc
    with pytest.raises(CAStateError) as excinfo:
        await _issue(hierarchy, not_before=issuer_end + timedelta(seconds=1), not_after=issuer_end + timedelta(hours=1))
    assert excinfo.value.code == "ca_expired"


async def test_csr_subject_and_sans_never_reach_the_leaf(hierarchy: CAHierarchy) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    hostile = make_csr(
        key,
        common_name="Administrator",
        organization="Evil Corp",
        dns_names=("bank.evil.example",),
        uris=("spiffe://evil.example/admin",),
        request_ca=True,
    )
    checked = parse_csr(hostile, allowed_key_types=DEFAULT_KEY_TYPES)
    leaf = await sign(hierarchy.signer(), _template(), checked.public_key)

    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "i-0abc"
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example Corp"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(URI)]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    der = leaf.public_bytes(serialization.Encoding.DER)
    for planted in (b"Administrator", b"Evil Corp", b"bank.evil.example", b"evil.example"):
        assert planted not in der
    assert leaf.public_key() == key.public_key()


async def test_serials_are_random_and_large(hierarchy: CAHierarchy) -> None:
    signer = hierarchy.signer()
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    serials = [(await sign(signer, _template(), key)).serial_number for _ in range(32)]
    assert len(set(serials)) == len(serials)
    # x509.random_serial_number draws 159 bits; one below 2**64 would mean that is not what ran.
    assert all(2**64 < s < 2**159 for s in serials)


async def test_the_signer_chooses_the_serial_from_its_source(hierarchy: CAHierarchy) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    signer = LocalFileSigner(
        issuer_certificate=hierarchy.issuing.certificate,
        issuer_key=hierarchy.issuing.key,
        roots=(hierarchy.root.certificate,),
        serials=lambda: 0x1234_5678_9ABC_DEF0_1234,
    )
    issued = await signer.issue(SigningRequest(template=_template(), public_key=key))
    assert issued.certificate.serial_number == 0x1234_5678_9ABC_DEF0_1234
    assert issued.chain == (hierarchy.issuing.certificate,)


async def test_a_file_key_declares_it_signs_crls_and_keeps_no_list_upstream(hierarchy: CAHierarchy) -> None:
    signer = hierarchy.signer()
    assert signer.capabilities == SignerCapabilities(signs_crls=True, revokes_upstream=False, signs_locally=True)
    assert (await signer.health()).ok
    with pytest.raises(SignerCapabilityMissing) as excinfo:
        await signer.revoke(0x1234, reason=None)
    assert (excinfo.value.code, excinfo.value.status_hint) == ("ca_signer_capability_missing", 500)


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"])
async def test_every_key_type_chains_with_both_checkers(hierarchy: CAHierarchy, key_type: str) -> None:
    key = rsa_key(int(key_type[4:])) if key_type.startswith("rsa") else generate_private_key(key_type)
    leaf = await sign(hierarchy.signer(), _template(), key.public_key())
    _check_both(leaf, hierarchy)


async def test_the_wrong_root_fails_both_checkers(hierarchy: CAHierarchy, other_hierarchy: CAHierarchy) -> None:
    leaf = await _issue(hierarchy)
    signer, stranger = hierarchy.signer(), other_hierarchy.signer()
    with pytest.raises(VerificationError):
        verify_client_chain(leaf, signer.chain, stranger.roots, NOW)
    with pytest.raises(OpenSSLCheckError, match="unable to get"):
        openssl_verify(pem([leaf]), pem(signer.chain), pem(stranger.roots), attime=NOW)


async def test_openssl_checks_the_time(hierarchy: CAHierarchy) -> None:
    leaf = await _issue(hierarchy)
    with pytest.raises(OpenSSLCheckError, match="expired"):
        openssl_verify(
            pem([leaf]),
            pem([hierarchy.issuing.certificate]),
            pem([hierarchy.root.certificate]),
            attime=NOW + timedelta(days=2),
        )


async def test_signer_refuses_an_unsupported_key(hierarchy: CAHierarchy) -> None:
    with pytest.raises(CSRError) as excinfo:
        await sign(hierarchy.signer(), _template(), rsa_key(1024).public_key())
    assert excinfo.value.code == "key_type_unsupported"


def test_signer_refuses_a_key_that_is_not_the_issuers(hierarchy: CAHierarchy, other_hierarchy: CAHierarchy) -> None:
    with pytest.raises(ValueError, match="does not belong"):
        LocalFileSigner(
            issuer_certificate=hierarchy.issuing.certificate,
            issuer_key=other_hierarchy.issuing.key,
            roots=(hierarchy.root.certificate,),
        )


def test_signer_exposes_chain_and_roots(hierarchy: CAHierarchy) -> None:
    signer: Signer = hierarchy.signer()  # mypy checks LocalFileSigner against the Protocol here
    assert signer.issuer_certificate == hierarchy.issuing.certificate
    assert signer.chain == (hierarchy.issuing.certificate,)
    assert signer.roots == (hierarchy.root.certificate,)
    assert "PRIVATE" not in repr(signer)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"not_before": datetime(2031, 3, 14, 12, 0)}, "timezone-aware"),
        ({"not_after": NOW - timedelta(hours=1)}, "is not after"),
        ({"uri_sans": ()}, "at least one"),
        ({"uri_sans": ("no scheme here",)}, "scheme"),
        ({"uri_sans": ("spiffe://exämple.org/x",)}, "ASCII"),
        ({"dns_sans": ("bad name.example",)}, "DNS"),
        ({"common_name": "x" * 65}, "1 to 64"),
        ({"common_name": ""}, "1 to 64"),
    ],
)
def test_template_refuses_what_cannot_go_in_a_certificate(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _template(**overrides)


def _ku(cert: x509.Certificate) -> x509.Extension[x509.KeyUsage]:
    return cert.extensions.get_extension_for_class(x509.KeyUsage)


def test_root_profile(hierarchy: CAHierarchy) -> None:
    root = hierarchy.root.certificate
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert root.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA384
    assert root.subject == root.issuer
    root.verify_directly_issued_by(root)
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (bc.critical, bc.value.ca, bc.value.path_length) == (True, True, None)
    ku = _ku(root)
    assert ku.critical is True
    assert (ku.value.key_cert_sign, ku.value.crl_sign, ku.value.digital_signature) == (True, True, False)
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = root.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert ski.critical is False
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(root.public_key())
    assert aki.value.key_identifier == ski.value.digest
    start = NOW - timedelta(days=30)
    assert root.not_valid_before_utc == start - CA_BACKDATE
    assert root.not_valid_after_utc == start + timedelta(days=3653)
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Issuer Root CA"
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example Corp"


def test_issuing_profile(hierarchy: CAHierarchy) -> None:
    issuing, root = hierarchy.issuing.certificate, hierarchy.root.certificate
    assert issuing.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert issuing.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA384
    assert issuing.issuer == root.subject
    issuing.verify_directly_issued_by(root)
    bc = issuing.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (bc.critical, bc.value.ca, bc.value.path_length) == (True, True, 0)
    ku = _ku(issuing)
    assert ku.critical is True
    assert (ku.value.key_cert_sign, ku.value.crl_sign, ku.value.digital_signature) == (True, True, True)
    assert (ku.value.key_encipherment, ku.value.content_commitment) == (False, False)
    ski = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(issuing.public_key())
    assert (aki.critical, aki.value.key_identifier) == (False, root_ski.value.digest)
    start = NOW - timedelta(days=30)
    assert issuing.not_valid_before_utc == start - CA_BACKDATE
    assert issuing.not_valid_after_utc == start + timedelta(days=365)
    assert issuing.serial_number != root.serial_number
    assert issuing.serial_number > 2**64


def test_issuing_ca_never_outlives_its_root() -> None:
    root = create_root(now=NOW, validity=timedelta(days=30))
    issuing = create_issuing(root, now=NOW, validity=timedelta(days=365))
    assert issuing.certificate.not_valid_after_utc == root.certificate.not_valid_after_utc


def test_an_expired_root_certifies_nothing() -> None:
    root = create_root(now=NOW, validity=timedelta(days=1))
    with pytest.raises(CAStateError) as excinfo:
        create_issuing(root, now=NOW + timedelta(days=2))
    assert excinfo.value.code == "ca_expired"
