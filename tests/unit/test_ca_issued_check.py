"""The check of a certificate a remote signer returned: what policy asked for is accepted, every difference refused.

The "remote signer" here is a test CA that builds the leaf itself from a tweakable recipe, as
AWS Private CA does from its template, passthrough and validity.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ca import SignerResultRejected, SigningRequest, check_issued
from ca.hierarchy import CAHierarchy, create_hierarchy
from ca.profile import LeafTemplate, leaf_builder

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
URI = "spiffe://example.org/onprem/build-7"


@pytest.fixture(scope="module")
def hierarchy() -> CAHierarchy:
    return create_hierarchy(now=NOW - timedelta(days=30), organization="Example Corp")


@pytest.fixture(scope="module")
def request_() -> SigningRequest:
    template = LeafTemplate(
        common_name="build-7",
        organizational_unit="onprem",
        uri_sans=(URI,),
        dns_sans=("build-7.example.org",),
        not_before=NOW - timedelta(seconds=60),
        not_after=NOW + timedelta(hours=24),
    )
    return SigningRequest(template=template, public_key=ec.generate_private_key(ec.SECP256R1()).public_key())


_DEFAULT = object()


def remote(
    hierarchy: CAHierarchy,
    request: SigningRequest,
    *,
    subject: x509.Name | None = None,
    extensions: dict[type[x509.ExtensionType], tuple[x509.ExtensionType, bool] | None] | None = None,
    shift_before: timedelta = timedelta(0),
    shift_after: timedelta = timedelta(0),
    key: Any = None,
) -> x509.Certificate:
    """The leaf a well-behaved CA would build for ``request`` (the local profile), with the given differences:
    another ``subject``, extensions replaced (or dropped with None, or added), the validity shifted, another key."""
    model = leaf_builder(request.template, request.public_key, issuer=hierarchy.issuing.certificate).sign(
        hierarchy.issuing.key, hashes.SHA256()
    )
    changes = dict(extensions or {})
    builder = (
        x509.CertificateBuilder()
        .serial_number(model.serial_number)
        .subject_name(subject or model.subject)
        .issuer_name(model.issuer)
        .public_key(request.public_key)
        .not_valid_before(model.not_valid_before_utc + shift_before)
        .not_valid_after(model.not_valid_after_utc + shift_after)
    )
    for extension in model.extensions:
        kind = type(extension.value)
        if kind in changes:
            change = changes.pop(kind)
            if change is not None:
                builder = builder.add_extension(change[0], critical=change[1])
        else:
            builder = builder.add_extension(extension.value, critical=extension.critical)
    for change in changes.values():
        if change is not None:
            builder = builder.add_extension(change[0], critical=change[1])
    return builder.sign(key or hierarchy.issuing.key, hashes.SHA256())


def refused(certificate: x509.Certificate, request: SigningRequest, hierarchy: CAHierarchy) -> str:
    with pytest.raises(SignerResultRejected) as excinfo:
        check_issued(certificate, request, issuer=hierarchy.issuing.certificate)
    error = excinfo.value
    assert (error.code, error.status_hint) == ("ca_signer_result_rejected", 502)
    assert "serial" not in error.detail and URI not in error.detail  # the client learns nothing specific
    return error.reason


def test_the_leaf_asked_for_is_accepted(hierarchy: CAHierarchy, request_: SigningRequest) -> None:
    check_issued(remote(hierarchy, request_), request_, issuer=hierarchy.issuing.certificate)


def test_a_subject_in_another_order_and_server_auth_beside_client_auth_are_accepted(
    hierarchy: CAHierarchy, request_: SigningRequest
) -> None:
    reordered = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "build-7"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "onprem"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
        ]
    )
    both = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    crl_point = x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier("http://crl.example/ca.crl")], None, None, None)]
    )
    leaf = remote(
        hierarchy,
        request_,
        subject=reordered,
        extensions={x509.ExtendedKeyUsage: (both, False), x509.CRLDistributionPoints: (crl_point, False)},
    )
    check_issued(leaf, request_, issuer=hierarchy.issuing.certificate)


def test_validity_within_the_tolerance_is_accepted(hierarchy: CAHierarchy, request_: SigningRequest) -> None:
    leaf = remote(hierarchy, request_, shift_before=timedelta(seconds=90), shift_after=-timedelta(seconds=90))
    check_issued(leaf, request_, issuer=hierarchy.issuing.certificate)


def test_another_public_key_is_refused(hierarchy: CAHierarchy, request_: SigningRequest) -> None:
    other = replace(request_, public_key=ec.generate_private_key(ec.SECP256R1()).public_key())
    assert "public key is not the CSR's" in refused(remote(hierarchy, other), request_, hierarchy)


def test_a_certificate_not_signed_by_the_issuer_is_refused(hierarchy: CAHierarchy, request_: SigningRequest) -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())
    assert "not signed by the issuing CA" in refused(remote(hierarchy, request_, key=impostor), request_, hierarchy)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "machine")]), "subject"),  # the CSR's, as plain moto does
        (
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admins"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "build-7"),
                ]
            ),
            "subject",
        ),
    ],
)
def test_another_subject_is_refused(
    hierarchy: CAHierarchy, request_: SigningRequest, name: x509.Name, expected: str
) -> None:
    leaf = remote(hierarchy, request_, subject=name)
    assert expected in refused(leaf, request_, hierarchy)


@pytest.mark.parametrize(
    "names",
    [
        [x509.UniformResourceIdentifier(URI)],  # one missing
        [x509.UniformResourceIdentifier(URI), x509.DNSName("build-7.example.org"), x509.DNSName("bank.example")],
        [x509.UniformResourceIdentifier("spiffe://example.org/onprem/admin"), x509.DNSName("build-7.example.org")],
        [
            x509.UniformResourceIdentifier(URI),
            x509.DNSName("build-7.example.org"),
            x509.RFC822Name("root@example.org"),
        ],
    ],
)
def test_other_names_are_refused(
    hierarchy: CAHierarchy, request_: SigningRequest, names: list[x509.GeneralName]
) -> None:
    leaf = remote(
        hierarchy, request_, extensions={x509.SubjectAlternativeName: (x509.SubjectAlternativeName(names), False)}
    )
    assert "alternative name" in refused(leaf, request_, hierarchy)


def test_no_names_are_refused(hierarchy: CAHierarchy, request_: SigningRequest) -> None:
    leaf = remote(hierarchy, request_, extensions={x509.SubjectAlternativeName: None})
    assert "no subject alternative names" in refused(leaf, request_, hierarchy)


def _usage(**overrides: bool) -> x509.KeyUsage:
    fields = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    fields.update(overrides)
    return x509.KeyUsage(**fields)


EXTENSION_CHANGES: list[tuple[dict[type[x509.ExtensionType], Any], str]] = [
    ({x509.BasicConstraints: (x509.BasicConstraints(ca=True, path_length=0), True)}, "CA:TRUE"),
    ({x509.BasicConstraints: None}, "no basic constraints"),
    ({x509.KeyUsage: (_usage(digital_signature=True, key_cert_sign=True), True)}, "key usage"),
    ({x509.KeyUsage: (_usage(key_encipherment=True), True)}, "key usage"),
    ({x509.ExtendedKeyUsage: None}, "no extended key usage"),
    ({x509.ExtendedKeyUsage: (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)}, "lacks clientAuth"),
    (
        {
            x509.ExtendedKeyUsage: (
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]),
                False,
            )
        },
        "more than client",
    ),
    (
        {
            x509.UnrecognizedExtension: (
                x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
                True,
            )
        },
        "unexpected critical extension",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), EXTENSION_CHANGES)
def test_usages_policy_never_gives_are_refused(
    hierarchy: CAHierarchy, request_: SigningRequest, changes: dict[type[x509.ExtensionType], Any], expected: str
) -> None:
    assert expected in refused(remote(hierarchy, request_, extensions=changes), request_, hierarchy)


@pytest.mark.parametrize(
    ("shift_before", "shift_after", "expected"),
    [
        (timedelta(0), timedelta(seconds=1), "later than"),  # a second past what policy allows
        (timedelta(0), timedelta(days=365), "later than"),  # plain moto's year
        (timedelta(minutes=-10), timedelta(0), "NotBefore"),  # backdated far beyond what was asked
        (timedelta(0), -timedelta(minutes=10), "NotAfter"),  # cut short beyond the tolerance
    ],
)
def test_validity_other_than_asked_is_refused(
    hierarchy: CAHierarchy,
    request_: SigningRequest,
    shift_before: timedelta,
    shift_after: timedelta,
    expected: str,
) -> None:
    leaf = remote(hierarchy, request_, shift_before=shift_before, shift_after=shift_after)
    assert expected in refused(leaf, request_, hierarchy)
