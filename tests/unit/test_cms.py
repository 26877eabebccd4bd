"""CMS SignedData verification: AWS's real blobs, our stand-in signer, and forgeries.

``openssl cms -verify`` is the independent checker: what we accept, it accepts with
only the pinned certificate (``-nointern``); the embedded-certificate forgery that
it accepts without ``-nointern`` (as in AWS's documented command) we refuse.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from issuer.attest import cms as cms_module
from issuer.attest.cms import (
    BlobMalformed,
    CmsError,
    ContentMismatch,
    DigestMismatch,
    SignatureInvalid,
    SignerCount,
    SignerUntrusted,
    verify_signed_data,
)
from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign_cms

DATA = Path(__file__).resolve().parents[1] / "data" / "iid"
CERTS = Path(__file__).resolve().parents[2] / "issuer" / "attest" / "aws_certs"

REAL = [
    ("2018-us-west-2", "rsa2048", "rsa2048/us-west-2.pem"),
    ("2018-us-west-2", "pkcs7", "dsa/us-west-2.pem"),
    ("2026-ap-southeast-2", "rsa2048", "rsa2048/ap-southeast-2.pem"),
]


def _real(vector: str, form: str) -> tuple[bytes, bytes]:
    return (DATA / vector / "document").read_bytes(), base64.b64decode((DATA / vector / form).read_text())


def _pem(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((CERTS / path).read_bytes())


def openssl_verify(der: bytes, cert: x509.Certificate, tmp_path: Path, *, nointern: bool = True) -> bytes | None:
    """The content if ``openssl cms -verify`` accepts ``der`` (signature only, no chain), else None."""
    blob, pem = tmp_path / "blob.der", tmp_path / "signer.pem"
    blob.write_bytes(der)
    pem.write_bytes(cert.public_bytes(Encoding.PEM))
    args = ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(blob), "-binary", "-noverify"]
    args += ["-certfile", str(pem)] + (["-nointern"] if nointern else [])
    result = subprocess.run(args, capture_output=True, check=False)
    return result.stdout if result.returncode == 0 else None


@pytest.fixture(scope="module")
def rsa_signer() -> FakeAwsSigner:
    return FakeAwsSigner.create(kind="rsa2048")


@pytest.fixture(scope="module")
def dsa_signer() -> FakeAwsSigner:
    return FakeAwsSigner.create(kind="dsa")


@pytest.fixture(scope="module")
def other_signer() -> FakeAwsSigner:
    return FakeAwsSigner.create(kind="rsa2048")


DOC = build_document()


@pytest.mark.parametrize(("vector", "form", "cert"), REAL)
def test_real_aws_blob_verifies_with_the_pinned_cert_as_openssl_does(
    vector: str, form: str, cert: str, tmp_path: Path
) -> None:
    document, der = _real(vector, form)
    pinned = _pem(cert)
    unrelated = _pem("rsa2048/eu-west-1.pem")

    assert verify_signed_data(der, content=document, trusted=[unrelated, pinned]) == pinned
    assert openssl_verify(der, pinned, tmp_path) == document


@pytest.mark.parametrize(("vector", "form", "cert"), REAL)
def test_real_aws_blob_refused_without_its_pinned_cert(vector: str, form: str, cert: str) -> None:
    document, der = _real(vector, form)
    with pytest.raises(SignerUntrusted):
        verify_signed_data(der, content=document, trusted=[_pem("rsa2048/eu-west-1.pem")])


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        pytest.param("rsa2048", {}, id="sha256WithRSAEncryption"),
        pytest.param("rsa2048", {"signature_algorithm": "rsassa_pkcs1v15"}, id="rsaEncryption"),
        pytest.param("rsa2048", {"algorithm_protection": False}, id="no-algorithm-protection"),
        pytest.param("rsa2048", {"by_key_id": True}, id="signer-by-ski"),
        pytest.param("dsa", {"digest": "sha1", "signature_algorithm": "sha1_dsa"}, id="dsa-sha1"),
        pytest.param("dsa", {"digest": "sha1", "signature_algorithm": "dsa"}, id="dsa-plain-oid"),
    ],
)
def test_signer_variants_verify_and_openssl_agrees(
    kind: str, options: dict[str, object], rsa_signer: FakeAwsSigner, dsa_signer: FakeAwsSigner, tmp_path: Path
) -> None:
    signer = dsa_signer if kind == "dsa" else rsa_signer
    der = sign_cms(DOC, signer, **options)  # type: ignore[arg-type]

    assert verify_signed_data(der, content=DOC, trusted=[signer.cert]) == signer.cert
    assert openssl_verify(der, signer.cert, tmp_path) == DOC


def test_embedding_the_pinned_cert_itself_is_harmless(rsa_signer: FakeAwsSigner) -> None:
    der = sign_cms(DOC, rsa_signer, embed=[rsa_signer.cert])
    assert verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert]) == rsa_signer.cert


def test_forgery_embedding_our_own_cert_is_refused(tmp_path: Path) -> None:
    aws = _pem("rsa2048/us-west-2.pem")
    forger = FakeAwsSigner.create(kind="rsa2048")
    der = sign_cms(DOC, forger, embed=[forger.cert])

    # The attack is real: openssl run as AWS's docs run it trusts the embedded certificate.
    assert openssl_verify(der, aws, tmp_path, nointern=False) == DOC
    assert openssl_verify(der, aws, tmp_path, nointern=True) is None
    with pytest.raises(SignerUntrusted) as err:
        verify_signed_data(der, content=DOC, trusted=[aws])
    assert err.value.code == "ec2_cms_signer_untrusted"


def test_forgery_embedding_our_cert_claiming_aws_issuer_and_serial_is_refused() -> None:
    aws = _pem("rsa2048/us-west-2.pem")
    forger = FakeAwsSigner.impersonating(aws)
    der = sign_cms(DOC, forger, embed=[forger.cert])

    with pytest.raises(SignerUntrusted) as err:
        verify_signed_data(der, content=DOC, trusted=[aws])
    assert err.value.code == "ec2_cms_signer_untrusted"
    assert "embeds a certificate" in err.value.reason


def test_forgery_naming_aws_issuer_and_serial_without_embedding_fails_the_signature() -> None:
    aws = _pem("rsa2048/us-west-2.pem")
    der = sign_cms(DOC, FakeAwsSigner.impersonating(aws))
    with pytest.raises(SignatureInvalid):
        verify_signed_data(der, content=DOC, trusted=[aws])


def test_signer_not_pinned_is_untrusted_even_if_it_embeds_its_cert(
    rsa_signer: FakeAwsSigner, other_signer: FakeAwsSigner
) -> None:
    der = sign_cms(DOC, other_signer, embed=[other_signer.cert])
    with pytest.raises(SignerUntrusted):
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])


def test_content_other_than_the_document_is_refused(rsa_signer: FakeAwsSigner) -> None:
    other = build_document(instance_id="i-0fedcba9876543210")
    der = sign_cms(other, rsa_signer)  # a genuine signature, over another document

    assert verify_signed_data(der, content=other, trusted=[rsa_signer.cert])
    with pytest.raises(ContentMismatch):
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])


def test_swapped_encapsulated_content_is_refused(rsa_signer: FakeAwsSigner) -> None:
    der = sign_cms(DOC, rsa_signer, content=DOC.replace(b"t3.micro", b"t3.large"))
    with pytest.raises(ContentMismatch):
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])
    # ... and claiming the swapped bytes as the document fails the digest instead.
    with pytest.raises(DigestMismatch):
        verify_signed_data(der, content=DOC.replace(b"t3.micro", b"t3.large"), trusted=[rsa_signer.cert])


def test_two_signers_are_refused_even_if_both_are_pinned(
    rsa_signer: FakeAwsSigner, other_signer: FakeAwsSigner
) -> None:
    der = sign_cms(DOC, rsa_signer, extra_signers=[other_signer])
    with pytest.raises(SignerCount):
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert, other_signer.cert])


def test_no_signer_is_refused(rsa_signer: FakeAwsSigner) -> None:
    info = cms.ContentInfo.load(sign_cms(DOC, rsa_signer))
    info["content"]["signer_infos"] = []
    with pytest.raises(SignerCount):
        verify_signed_data(info.dump(force=True), content=DOC, trusted=[rsa_signer.cert])


def test_wrong_message_digest_is_refused(rsa_signer: FakeAwsSigner) -> None:
    der = sign_cms(DOC, rsa_signer, message_digest=b"\x00" * 32)
    with pytest.raises(DigestMismatch) as err:
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])
    assert err.value.code == "ec2_cms_digest_mismatch"


def test_missing_signed_attributes_are_refused(rsa_signer: FakeAwsSigner) -> None:
    der = sign_cms(DOC, rsa_signer, signed_attrs=False)
    with pytest.raises(SignatureInvalid, match="did not verify") as err:
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])
    assert "no signed attributes" in err.value.reason


def test_signed_content_type_other_than_data_is_refused(rsa_signer: FakeAwsSigner) -> None:
    der = sign_cms(DOC, rsa_signer, content_type="signed_data")
    with pytest.raises(ContentMismatch):
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])


def test_algorithm_protection_disagreeing_with_the_signer_is_refused(rsa_signer: FakeAwsSigner) -> None:
    der = sign_cms(DOC, rsa_signer, protected_signature_algorithm="sha512_rsa")
    with pytest.raises(SignatureInvalid) as err:
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])
    assert "CMSAlgorithmProtection" in err.value.reason


def test_checks_of_a_signers_fixed_parts_are_remembered_per_encoding_only(
    rsa_signer: FakeAwsSigner, other_signer: FakeAwsSigner
) -> None:
    """The signer identifier, algorithms and algorithm protection are checked once per distinct DER: a blob
    that differs in any of them is checked afresh, before or after one that passed."""
    good = sign_cms(DOC, rsa_signer)
    disagreeing = sign_cms(DOC, rsa_signer, protected_signature_algorithm="sha512_rsa")
    for _ in range(2):
        assert verify_signed_data(good, content=DOC, trusted=[rsa_signer.cert]) == rsa_signer.cert
        with pytest.raises(SignatureInvalid, match="did not verify") as err:
            verify_signed_data(disagreeing, content=DOC, trusted=[rsa_signer.cert])
        assert "CMSAlgorithmProtection" in err.value.reason
        with pytest.raises(SignerUntrusted):  # the same blob, another pinned certificate
            verify_signed_data(good, content=DOC, trusted=[other_signer.cert])
        with pytest.raises(SignatureInvalid):  # another signature algorithm's hash than the digest's
            verify_signed_data(
                sign_cms(DOC, rsa_signer, signature_algorithm="sha512_rsa", algorithm_protection=False),
                content=DOC,
                trusted=[rsa_signer.cert],
            )


def test_signature_algorithm_hash_disagreeing_with_digest_algorithm_is_refused(
    rsa_signer: FakeAwsSigner,
) -> None:
    der = sign_cms(DOC, rsa_signer, signature_algorithm="sha512_rsa", algorithm_protection=False)
    with pytest.raises(SignatureInvalid):
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])


def test_flipped_signature_bit_is_refused(rsa_signer: FakeAwsSigner) -> None:
    info = cms.ContentInfo.load(sign_cms(DOC, rsa_signer))
    signer_info = info["content"]["signer_infos"][0]
    sig = bytearray(signer_info["signature"].native)
    sig[10] ^= 0x01
    signer_info["signature"] = bytes(sig)
    with pytest.raises(SignatureInvalid):
        verify_signed_data(info.dump(force=True), content=DOC, trusted=[rsa_signer.cert])


def test_dsa_algorithm_against_an_rsa_pinned_key_is_refused(rsa_signer: FakeAwsSigner) -> None:
    der = sign_cms(DOC, rsa_signer, signature_algorithm="sha256_dsa", algorithm_protection=False)
    with pytest.raises(SignatureInvalid) as err:
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])
    assert "RSAPublicKey" in err.value.reason


def _signed_attrs_of(der: bytes) -> tuple[cms.CMSAttributes, cms.SignerInfo]:
    signer = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    return signer["signed_attrs"], signer


def _sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


@pytest.mark.parametrize(
    ("variant", "fast"),
    [
        pytest.param({}, True, id="as-aws-signs"),
        pytest.param({"algorithm_protection": False}, True, id="no-algorithm-protection"),
        pytest.param({"by_key_id": True}, True, id="signer-by-key-id"),
        pytest.param({"message_digest": b"\x00" * 32}, False, id="wrong-digest"),
        pytest.param({"content_type": "signed_data"}, False, id="content-type-not-data"),
        pytest.param({"protected_signature_algorithm": "sha512_rsa"}, False, id="protection-disagrees"),
        pytest.param({"repeat_attribute": "message_digest"}, False, id="digest-twice"),
        pytest.param({"repeat_attribute": "signing_time"}, False, id="signing-time-twice"),
        pytest.param({"extra_attribute": "1.2.3.4"}, False, id="another-attribute"),
    ],
)
def test_the_byte_reading_of_signed_attributes_accepts_only_what_the_full_reading_accepts(
    variant: dict[str, Any], fast: bool, rsa_signer: FakeAwsSigner
) -> None:
    """The signed attributes are first compared as bytes with what AWS signs; anything else is read in full
    by asn1crypto, whose verdict stands. The byte comparison must never accept what the full reading refuses."""
    der = sign_cms(DOC, rsa_signer, **variant)
    attrs, signer = _signed_attrs_of(der)
    assert cms_module._attrs_as_expected(attrs, _sha256(DOC), signer) is fast
    if fast:
        assert verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert]) == rsa_signer.cert


@pytest.mark.parametrize(("vector", "form", "cert"), REAL)
def test_real_aws_signed_attributes_are_what_the_byte_reading_expects(vector: str, form: str, cert: str) -> None:
    document, der = _real(vector, form)
    attrs, signer = _signed_attrs_of(der)
    hash_cls = hashes.SHA1 if form == "pkcs7" else hashes.SHA256
    digest = hashes.Hash(hash_cls())
    digest.update(document)
    assert cms_module._attrs_as_expected(attrs, digest.finalize(), signer)


@pytest.mark.parametrize(
    "variant",
    [{"repeat_attribute": "signing_time"}, {"extra_attribute": "1.2.3.4"}],
    ids=["signing-time-twice", "other"],
)
def test_attributes_the_byte_reading_does_not_expect_are_read_in_full_and_accepted(
    variant: dict[str, Any], rsa_signer: FakeAwsSigner
) -> None:
    """Only contentType, messageDigest and the algorithm protection must be single (as before the byte
    reading): a second signingTime, or an attribute AWS does not sign, leaves the verdict to the full
    reading, which accepts them."""
    der = sign_cms(DOC, rsa_signer, **variant)
    assert verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert]) == rsa_signer.cert


def test_a_repeated_message_digest_is_refused(rsa_signer: FakeAwsSigner) -> None:
    der = sign_cms(DOC, rsa_signer, repeat_attribute="message_digest")
    with pytest.raises(SignatureInvalid) as err:
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])
    assert "message_digest is missing or repeated" in err.value.reason


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated-half"),
        pytest.param(lambda b: b[:-1], id="truncated-one-byte"),
        pytest.param(lambda b: b + b"\x00", id="trailing-byte"),
        pytest.param(lambda b: b"not a cms blob", id="garbage"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_malformed_blobs_are_client_errors(mangle: object, rsa_signer: FakeAwsSigner) -> None:
    der = mangle(sign_cms(DOC, rsa_signer))  # type: ignore[operator]
    with pytest.raises(BlobMalformed) as err:
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])
    assert (err.value.status_hint, err.value.code) == (400, "ec2_blob_malformed")


def test_real_blob_truncated_inside_its_indefinite_lengths_is_malformed() -> None:
    document, der = _real("2018-us-west-2", "rsa2048")
    with pytest.raises(BlobMalformed):
        verify_signed_data(der[:-7], content=document, trusted=[_pem("rsa2048/us-west-2.pem")])


def test_content_info_that_is_not_signed_data_is_malformed(rsa_signer: FakeAwsSigner) -> None:
    der = cms.ContentInfo({"content_type": "data", "content": DOC}).dump()
    with pytest.raises(BlobMalformed):
        verify_signed_data(der, content=DOC, trusted=[rsa_signer.cert])


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ContentMismatch, 401, "ec2_cms_content_mismatch"),
        (SignerCount, 401, "ec2_cms_signer_count"),
        (SignerUntrusted, 401, "ec2_cms_signer_untrusted"),
        (DigestMismatch, 401, "ec2_cms_digest_mismatch"),
        (SignatureInvalid, 401, "ec2_signature_invalid"),
        (BlobMalformed, 400, "ec2_blob_malformed"),
    ],
)
def test_error_codes_and_status_hints_are_stable(error: type[CmsError], status: int, code: str) -> None:
    exc = error("public detail", reason="private reason")
    assert (exc.status_hint, exc.code, exc.detail, exc.reason) == (status, code, "public detail", "private reason")
