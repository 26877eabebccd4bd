"""What the AWS Private CA signer sends and how it reads Private CA's failures (botocore's Stubber: the requests
are validated against Private CA's API model; the answers are what Private CA documents).

The behaviour against a running peer is in tests/integration/test_pca_issuer.py (moto's server).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca import CSRError, SignerDenied, SignerUnavailable
from ca.hierarchy import CAHierarchy, create_hierarchy
from ca.pca import PcaSigner
from ca.pca_client import (
    CLIENT_AUTH_TEMPLATE,
    api_passthrough,
    colon_serial,
    pca_botocore_config,
    pca_fetch,
    pca_revoke,
    signing_algorithm_for,
)
from ca.profile import LeafTemplate, leaf_builder
from ca.signer import SignerCapabilities, SigningRequest
from tests.support.x509_check import make_csr, rsa_key

NOW = datetime.now(UTC).replace(microsecond=0)
ARN = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555"
CERT_ARN = f"{ARN}/certificate/0123456789abcdef0123456789abcdef"


def pca_client() -> Any:
    return boto3.client(
        "acm-pca",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=pca_botocore_config(max_attempts=1),
    )


@pytest.fixture(scope="module")
def hierarchy() -> CAHierarchy:
    return create_hierarchy(now=NOW - timedelta(days=1), organization="Example Corp")


def template() -> LeafTemplate:
    return LeafTemplate(
        common_name="build-7",
        organizational_unit="onprem",
        uri_sans=("spiffe://example.org/onprem/build-7",),
        not_before=NOW - timedelta(seconds=60),
        not_after=NOW + timedelta(hours=24),
    )


def signing_request() -> tuple[SigningRequest, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_pem_x509_csr(make_csr(key))
    request = SigningRequest(
        template=template(), public_key=key.public_key(), csr_der=csr.public_bytes(serialization.Encoding.DER)
    )
    return request, key


def signer(client: Any, hierarchy: CAHierarchy, **options: Any) -> PcaSigner:
    return PcaSigner(
        client=client,
        ca_arn=ARN,
        issuer_certificate=hierarchy.issuing.certificate,
        roots=[hierarchy.root.certificate],
        **options,
    )


def failure(code: str, status: int = 400) -> dict[str, Any]:
    return {"service_error_code": code, "service_message": f"{code} (test)", "http_status_code": status}


def test_the_issue_request_carries_the_csr_the_template_validity_and_passthrough(hierarchy: CAHierarchy) -> None:
    request, _ = signing_request()
    leaf = leaf_builder(request.template, request.public_key, issuer=hierarchy.issuing.certificate).sign(
        hierarchy.issuing.key, hashes.SHA256()
    )
    client = pca_client()
    with Stubber(client) as stub:
        stub.add_response(
            "issue_certificate",
            {"CertificateArn": CERT_ARN},
            {
                "CertificateAuthorityArn": ARN,
                "Csr": x509.load_der_x509_csr(request.csr_der or b"").public_bytes(serialization.Encoding.PEM),
                "SigningAlgorithm": "SHA256WITHECDSA",  # the issuing CA's P-256 key
                "TemplateArn": CLIENT_AUTH_TEMPLATE,
                "ApiPassthrough": {
                    "Subject": {
                        "CommonName": "build-7",
                        "Organization": "Example Corp",
                        "OrganizationalUnit": "onprem",
                    },
                    "Extensions": {
                        "SubjectAlternativeNames": [
                            {"UniformResourceIdentifier": "spiffe://example.org/onprem/build-7"}
                        ],
                        "ExtendedKeyUsage": [{"ExtendedKeyUsageType": "CLIENT_AUTH"}],
                    },
                },
                "Validity": {"Value": int(request.template.not_after.timestamp()), "Type": "ABSOLUTE"},
                "ValidityNotBefore": {"Value": int(request.template.not_before.timestamp()), "Type": "ABSOLUTE"},
                "IdempotencyToken": ANY,
            },
        )
        stub.add_client_error("get_certificate", **failure("RequestInProgressException"))
        stub.add_response(
            "get_certificate",
            {"Certificate": leaf.public_bytes(serialization.Encoding.PEM).decode()},
            {"CertificateAuthorityArn": ARN, "CertificateArn": CERT_ARN},
        )
        issued = asyncio.run(signer(client, hierarchy).issue(request))
        stub.assert_no_pending_responses()
    assert issued.certificate == leaf
    assert issued.chain == (hierarchy.issuing.certificate,)


def test_a_result_that_is_not_the_request_is_refused_never_returned(hierarchy: CAHierarchy) -> None:
    request, _ = signing_request()
    other = ec.generate_private_key(ec.SECP256R1()).public_key()  # Private CA signed another key
    leaf = leaf_builder(request.template, other, issuer=hierarchy.issuing.certificate).sign(
        hierarchy.issuing.key, hashes.SHA256()
    )
    client = pca_client()
    with Stubber(client) as stub:
        stub.add_response("issue_certificate", {"CertificateArn": CERT_ARN})
        stub.add_response("get_certificate", {"Certificate": leaf.public_bytes(serialization.Encoding.PEM).decode()})
        with pytest.raises(Exception) as excinfo:
            asyncio.run(signer(client, hierarchy).issue(request))
    assert getattr(excinfo.value, "code", None) == "ca_signer_result_rejected"
    assert getattr(excinfo.value, "status_hint", None) == 502


def test_the_backend_declares_what_it_does(hierarchy: CAHierarchy) -> None:
    pca = signer(pca_client(), hierarchy)
    assert pca.capabilities == SignerCapabilities(signs_crls=False, revokes_upstream=True)
    with pytest.raises(Exception) as excinfo:
        asyncio.run(pca.sign_crl([], now=NOW, next_update=NOW + timedelta(hours=1), crl_number=1))
    assert getattr(excinfo.value, "code", None) == "ca_signer_capability_missing"


@pytest.mark.parametrize(
    ("code", "status", "kind", "error_code", "retry_after"),
    [
        ("ThrottlingException", 400, SignerUnavailable, "ca_signer_unavailable", 2),
        ("RequestFailedException", 400, SignerUnavailable, "ca_signer_unavailable", 5),
        ("InternalFailure", 500, SignerUnavailable, "ca_signer_unavailable", 5),
        ("InvalidStateException", 400, SignerDenied, "ca_pca_not_active", 30),
        ("ResourceNotFoundException", 400, SignerDenied, "ca_pca_not_found", 30),
        ("AccessDeniedException", 400, SignerDenied, "ca_signer_denied", 30),
        ("LimitExceededException", 400, SignerDenied, "ca_signer_denied", 30),
        ("MalformedCSRException", 400, CSRError, "key_type_unsupported", None),
    ],
)
def test_private_ca_failures_become_stable_codes(
    hierarchy: CAHierarchy, code: str, status: int, kind: type[Exception], error_code: str, retry_after: int | None
) -> None:
    request, _ = signing_request()
    client = pca_client()
    with Stubber(client) as stub:
        stub.add_client_error("issue_certificate", **failure(code, status))
        with pytest.raises(kind) as excinfo:
            asyncio.run(signer(client, hierarchy).issue(request))
    error: Any = excinfo.value
    assert (error.code, error.retry_after) == (error_code, retry_after)
    assert ARN not in error.detail  # the client learns no infrastructure names ...
    assert code in error.reason  # ... the log does


def test_polling_stops_at_the_deadline() -> None:
    client = pca_client()
    clock = [0.0]
    with Stubber(client) as stub:
        for _ in range(5):
            stub.add_client_error("get_certificate", **failure("RequestInProgressException"))
        with pytest.raises(SignerUnavailable) as excinfo:
            pca_fetch(
                client,
                ARN,
                CERT_ARN,
                deadline=0.5,
                clock=lambda: clock[0],
                sleep=lambda s: clock.__setitem__(0, clock[0] + s),
            )
    assert "had not signed" in excinfo.value.reason
    assert clock[0] <= 0.5  # 0.1 + 0.2, then the next wait would pass the deadline


def test_a_revocation_already_made_counts_as_done_and_the_serial_is_colon_hex() -> None:
    client = pca_client()
    with Stubber(client) as stub:
        stub.add_client_error(
            "revoke_certificate",
            expected_params={
                "CertificateAuthorityArn": ARN,
                "CertificateSerial": "0a:bc:de",
                "RevocationReason": "KEY_COMPROMISE",
            },
            **failure("RequestAlreadyProcessedException"),
        )
        pca_revoke(client, ARN, 0xABCDE, reason=x509.ReasonFlags.key_compromise)
        stub.assert_no_pending_responses()
    assert colon_serial(0x1) == "01" and colon_serial(0x1234) == "12:34"


def test_the_signing_algorithm_follows_the_ca_key(hierarchy: CAHierarchy) -> None:
    assert signing_algorithm_for(hierarchy.issuing.certificate) == "SHA256WITHECDSA"
    assert signing_algorithm_for(hierarchy.root.certificate) == "SHA384WITHECDSA"
    rsa_ca = leaf_builder(template(), rsa_key(2048).public_key(), issuer=hierarchy.issuing.certificate).sign(
        hierarchy.issuing.key, hashes.SHA256()
    )
    assert signing_algorithm_for(rsa_ca) == "SHA256WITHRSA"


def test_the_passthrough_names_no_organization_when_the_ca_has_none() -> None:
    assert api_passthrough(template(), organization=None)["Subject"] == {
        "CommonName": "build-7",
        "OrganizationalUnit": "onprem",
    }


def test_a_request_without_its_csr_is_a_bug(hierarchy: CAHierarchy) -> None:
    request, _ = signing_request()
    with pytest.raises(ValueError, match="must carry"):
        asyncio.run(
            signer(pca_client(), hierarchy).issue(
                SigningRequest(template=request.template, public_key=request.public_key)
            )
        )


def test_health_is_cached_only_while_the_ca_is_active(hierarchy: CAHierarchy) -> None:
    client = pca_client()
    now = [100.0]
    pca = signer(client, hierarchy, health_ttl=30.0, clock=lambda: now[0])

    def describe(status: str) -> None:
        stub.add_response(
            "describe_certificate_authority",
            {"CertificateAuthority": {"Arn": ARN, "Status": status}},
            {"CertificateAuthorityArn": ARN},
        )

    async def checks() -> list[tuple[bool, str | None]]:
        results = []
        for advance in (0.0, 1.0, 1.0, 1.0, 40.0):
            now[0] += advance
            health = await pca.health()
            results.append((health.ok, health.code))
        return results

    with Stubber(client) as stub:
        describe("DISABLED")  # asked: not active, not cached
        describe("DISABLED")  # asked again a second later
        describe("ACTIVE")  # asked: healthy, cached for 30 s
        describe("ACTIVE")  # 40 s later: asked again
        results = asyncio.run(checks())
        stub.assert_no_pending_responses()
    assert results == [
        (False, "ca_pca_not_active"),
        (False, "ca_pca_not_active"),
        (True, None),
        (True, None),  # from the cache: no DescribeCertificateAuthority left to answer it
        (True, None),
    ]
