"""EC2 proofs signed by a stand-in AWS certificate configured as an operator extra.

The stand-in is pinned for eu-west-1 only, so every test also shows the region rule:
the same valid signature is refused for a document from any other region.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asn1crypto import cms

from issuer.attest.ec2 import (
    BlobMalformed,
    ContentMismatch,
    DocumentMalformed,
    Ec2Proof,
    ProofFormError,
    RegionUnknown,
    SignatureInvalid,
    SignerCount,
    SignerUntrusted,
    identity_from_document,
    verify_instance_identity,
)
from issuer.attest.ec2_certs import AwsCertStore
from tests.support.fake_aws_iid import (
    FakeAwsSigner,
    build_document,
    imds_base64,
    sign,
    sign_cms,
)

REGION = "eu-west-1"
FORMS = ("rsa2048", "pkcs7", "signature")


@pytest.fixture(scope="module")
def signers() -> dict[str, FakeAwsSigner]:
    return {
        "rsa2048": FakeAwsSigner.create(kind="rsa2048"),
        "pkcs7": FakeAwsSigner.create(kind="dsa"),
        "signature": FakeAwsSigner.create(kind="rsa1024"),
    }


@pytest.fixture(scope="module")
def certs(signers: dict[str, FakeAwsSigner]) -> AwsCertStore:
    return AwsCertStore.builtin(extra={REGION: [s.cert for s in signers.values()]})


def proof(document: bytes, form: str, blob: str) -> Ec2Proof:
    fields: dict[str, str | None] = {"rsa2048": None, "pkcs7": None, "signature": None, form: blob}
    return Ec2Proof.from_fields(document=document.decode(), **fields)  # type: ignore[arg-type]


def signed(document: bytes, form: str, signers: dict[str, FakeAwsSigner]) -> Ec2Proof:
    return proof(document, form, sign(document, signers[form], form))  # type: ignore[arg-type]


@pytest.mark.parametrize("form", FORMS)
def test_extra_certificate_verifies_documents_of_its_region(
    form: str, signers: dict[str, FakeAwsSigner], certs: AwsCertStore
) -> None:
    doc = verify_instance_identity(signed(build_document(region=REGION), form, signers), certs=certs)
    assert (doc.region, doc.account_id, doc.instance_id) == (REGION, "123456789012", "i-0123456789abcdef0")


@pytest.mark.parametrize(
    ("form", "error"),
    [("rsa2048", SignerUntrusted), ("pkcs7", SignerUntrusted), ("signature", SignatureInvalid)],
)
def test_valid_signature_by_a_cert_pinned_for_another_region_is_refused(
    form: str, error: type[Exception], signers: dict[str, FakeAwsSigner], certs: AwsCertStore
) -> None:
    with pytest.raises(error) as err:
        verify_instance_identity(signed(build_document(region="us-east-1"), form, signers), certs=certs)
    assert err.value.status_hint == 401  # type: ignore[attr-defined]


@pytest.mark.parametrize("form", FORMS)
def test_region_without_a_pinned_cert_is_unknown(
    form: str, signers: dict[str, FakeAwsSigner], certs: AwsCertStore
) -> None:
    with pytest.raises(RegionUnknown) as err:
        verify_instance_identity(signed(build_document(region="xx-nowhere-1"), form, signers), certs=certs)
    assert (err.value.status_hint, err.value.code) == (401, "ec2_region_unknown")
    assert "xx-nowhere-1" in err.value.reason


def test_pkcs7_from_a_region_aws_publishes_no_dsa_cert_for_is_unknown(
    signers: dict[str, FakeAwsSigner],
) -> None:
    with pytest.raises(RegionUnknown):
        verify_instance_identity(
            signed(build_document(region="ap-east-2"), "pkcs7", signers), certs=AwsCertStore.builtin()
        )


def test_cms_signed_by_our_key_embedding_our_cert_as_aws_is_refused(certs: AwsCertStore) -> None:
    document = build_document(region="us-west-2")
    (aws,) = certs.for_region("us-west-2", "rsa2048")
    forger = FakeAwsSigner.impersonating(aws)
    blob = imds_base64(sign_cms(document, forger, embed=[forger.cert]))

    with pytest.raises(SignerUntrusted) as err:
        verify_instance_identity(proof(document, "rsa2048", blob), certs=certs)
    assert err.value.code == "ec2_cms_signer_untrusted"


def test_cms_whose_content_differs_from_the_document_is_refused(
    signers: dict[str, FakeAwsSigner], certs: AwsCertStore
) -> None:
    document = build_document(region=REGION)
    other = build_document(region=REGION, instance_id="i-0fedcba9876543210")
    with pytest.raises(ContentMismatch) as err:
        verify_instance_identity(proof(document, "rsa2048", sign(other, signers["rsa2048"], "rsa2048")), certs=certs)
    assert err.value.code == "ec2_cms_content_mismatch"


def test_cms_with_two_signers_is_refused(signers: dict[str, FakeAwsSigner], certs: AwsCertStore) -> None:
    document = build_document(region=REGION)
    blob = imds_base64(sign_cms(document, signers["rsa2048"], extra_signers=[signers["rsa2048"]]))
    with pytest.raises(SignerCount) as err:
        verify_instance_identity(proof(document, "rsa2048", blob), certs=certs)
    assert err.value.code == "ec2_cms_signer_count"


@pytest.mark.parametrize("form", FORMS)
def test_document_tampered_after_signing_is_refused(
    form: str, signers: dict[str, FakeAwsSigner], certs: AwsCertStore
) -> None:
    document = build_document(region=REGION)
    blob = sign(document, signers[form], form)  # type: ignore[arg-type]
    tampered = document.replace(b"t3.micro", b"t3.macro")
    with pytest.raises(SignatureInvalid if form == "signature" else ContentMismatch):
        verify_instance_identity(proof(tampered, form, blob), certs=certs)


def test_signature_of_the_wrong_length_is_malformed(certs: AwsCertStore) -> None:
    document = build_document(region=REGION)
    with pytest.raises(BlobMalformed):
        verify_instance_identity(proof(document, "signature", imds_base64(b"\x01" * 100)), certs=certs)


def test_cms_blob_that_is_a_different_cms_type_is_malformed(certs: AwsCertStore) -> None:
    document = build_document(region=REGION)
    blob = imds_base64(cms.ContentInfo({"content_type": "data", "content": document}).dump())
    with pytest.raises(BlobMalformed):
        verify_instance_identity(proof(document, "rsa2048", blob), certs=certs)


@pytest.mark.parametrize("field", ["accountId", "instanceId", "pendingTime", "imageId"])
def test_signed_document_missing_a_required_field_is_malformed(
    field: str, signers: dict[str, FakeAwsSigner], certs: AwsCertStore
) -> None:
    document = build_document(region=REGION, omit=[field])
    with pytest.raises(DocumentMalformed) as err:
        verify_instance_identity(signed(document, "rsa2048", signers), certs=certs)
    assert (err.value.status_hint, err.value.code) == (400, "ec2_document_malformed")
    assert field in err.value.detail


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"accountId": 123456789012}, id="account-number"),
        pytest.param({"accountId": "12345"}, id="account-short"),
        pytest.param({"instanceId": "i-../../etc"}, id="instance-path"),
        pytest.param({"imageId": None}, id="image-null"),
        pytest.param({"pendingTime": "yesterday"}, id="pending-words"),
        pytest.param({"pendingTime": "2026-02-16T00:38:27"}, id="pending-naive"),
        pytest.param({"pendingTime": 1771202307}, id="pending-number"),
        pytest.param({"privateIp": "10.0.0.999"}, id="ip-invalid"),
        pytest.param({"privateIp": 167772161}, id="ip-number"),
        pytest.param({"instanceType": "t3.micro/../x"}, id="type-path"),
    ],
)
def test_signed_document_with_an_invalid_field_is_malformed(
    extra: dict[str, object], signers: dict[str, FakeAwsSigner], certs: AwsCertStore
) -> None:
    document = build_document(region=REGION, extra=extra)
    with pytest.raises(DocumentMalformed):
        verify_instance_identity(signed(document, "rsa2048", signers), certs=certs)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b'{"region": "eu-west-1", "region": "us-east-1"}', id="duplicate-key"),
        pytest.param(build_document(region=REGION, omit=["region"]), id="no-region"),
        pytest.param(build_document(region="EU WEST 1"), id="bad-region"),
    ],
)
def test_document_unreadable_before_verification_is_malformed(
    document: bytes, signers: dict[str, FakeAwsSigner], certs: AwsCertStore
) -> None:
    with pytest.raises(DocumentMalformed):
        verify_instance_identity(signed(document, "rsa2048", signers), certs=certs)


def test_pending_time_with_an_offset_is_normalised_to_utc(
    signers: dict[str, FakeAwsSigner], certs: AwsCertStore
) -> None:
    document = build_document(region=REGION, pending_time="2026-02-16T02:38:27+02:00")
    doc = verify_instance_identity(signed(document, "rsa2048", signers), certs=certs)
    assert doc.pending_time == datetime(2026, 2, 16, 0, 38, 27, tzinfo=UTC)
    assert identity_from_document(doc).attributes["pending_time"] == "2026-02-16T00:38:27Z"


def test_optional_fields_absent_are_none_and_left_out_of_the_identity(
    signers: dict[str, FakeAwsSigner], certs: AwsCertStore
) -> None:
    document = build_document(region=REGION, private_ip=None, omit=["architecture", "instanceType"])
    doc = verify_instance_identity(signed(document, "rsa2048", signers), certs=certs)
    assert (doc.private_ip, doc.architecture, doc.instance_type) == (None, None, None)
    assert set(identity_from_document(doc).attributes) == {
        "instance_id",
        "image_id",
        "availability_zone",
        "pending_time",
    }


def test_document_bytes_are_kept_exactly_as_given() -> None:
    text = '{\n  "region" : "eu-west-1",\n  "note" : "caf\u00e9"\n}'
    p = Ec2Proof.from_fields(document=text, rsa2048=None, pkcs7="AAAA", signature=None)
    assert (p.document, p.form, p.blob) == (text.encode("utf-8"), "pkcs7", "AAAA")


@pytest.mark.parametrize(
    "forms",
    [
        pytest.param({}, id="none"),
        pytest.param({"rsa2048": "AAAA", "signature": "AAAA"}, id="two"),
        pytest.param({"rsa2048": "AAAA", "pkcs7": "AAAA", "signature": "AAAA"}, id="three"),
        pytest.param({"rsa2048": "  ", "pkcs7": ""}, id="only-blank"),
    ],
)
def test_proof_needs_exactly_one_form(forms: dict[str, str]) -> None:
    fields: dict[str, str | None] = {"rsa2048": None, "pkcs7": None, "signature": None, **forms}
    with pytest.raises(ProofFormError) as err:
        Ec2Proof.from_fields(document="{}", **fields)  # type: ignore[arg-type]
    assert (err.value.status_hint, err.value.code) == (400, "ec2_proof_form")


@pytest.mark.parametrize(
    "forms",
    [
        {"rsa2048": "", "signature": "QUJD"},  # a blank second field still makes the proof ambiguous
        {"pkcs7": "   ", "rsa2048": "QUJD"},
        {"rsa2048": "   "},  # the one form given is blank
        {},
    ],
)
def test_exactly_one_non_blank_form(forms: dict[str, str]) -> None:
    fields = {"rsa2048": None, "pkcs7": None, "signature": None, **forms}
    with pytest.raises(ProofFormError) as err:
        Ec2Proof.from_fields(document="{}", **fields)
    assert err.value.code == "ec2_proof_form"


def test_one_form_is_taken_as_given() -> None:
    p = Ec2Proof.from_fields(document="{}", rsa2048=None, pkcs7=None, signature="QUJD")
    assert (p.form, p.blob) == ("signature", "QUJD")


def test_oversized_document_and_blob_are_refused(certs: AwsCertStore) -> None:
    with pytest.raises(DocumentMalformed):
        Ec2Proof.from_fields(document="{" + " " * 20000 + "}", rsa2048="AAAA", pkcs7=None, signature=None)
    document = build_document(region=REGION)
    with pytest.raises(BlobMalformed):
        verify_instance_identity(proof(document, "rsa2048", "A" * 20000), certs=certs)


def test_lone_surrogate_document_is_malformed() -> None:
    with pytest.raises(DocumentMalformed):
        Ec2Proof.from_fields(document='{"x": "\ud800"}', rsa2048="AAAA", pkcs7=None, signature=None)
