"""Real identity documents signed by AWS, verified with the shipped certificates."""

from __future__ import annotations

import base64
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from issuer.attest.ec2 import (
    BlobMalformed,
    ContentMismatch,
    Ec2Proof,
    SignatureInvalid,
    identity_from_document,
    verify_instance_identity,
)
from issuer.attest.ec2_certs import AwsCertStore
from issuer.errors import IssuerError

DATA = Path(__file__).resolve().parents[1] / "data" / "iid"

VECTORS = {
    "2018-us-west-2": ("692406183521", "i-0a30e04d85e6f8793", "us-west-2", "2018-05-09T12:30:58Z"),
    "2026-ap-southeast-2": ("189292791360", "i-0c5541936caf78c12", "ap-southeast-2", "2026-02-16T00:38:27Z"),
}
CASES = [
    ("2018-us-west-2", "rsa2048"),
    ("2018-us-west-2", "pkcs7"),
    ("2018-us-west-2", "signature"),
    ("2026-ap-southeast-2", "rsa2048"),
    ("2026-ap-southeast-2", "signature"),
]


@pytest.fixture(scope="module")
def certs() -> AwsCertStore:
    return AwsCertStore.builtin()


def _read(vector: str, name: str) -> str:
    return (DATA / vector / name).read_text()


def proof(document: str, form: str, blob: str) -> Ec2Proof:
    fields: dict[str, str | None] = {"rsa2048": None, "pkcs7": None, "signature": None, form: blob}
    return Ec2Proof.from_fields(document=document, **fields)  # type: ignore[arg-type]


def test_documents_are_byte_exact_copies() -> None:
    # AWS signed them without a final newline; an editor adding one breaks every signature.
    for vector in VECTORS:
        assert (DATA / vector / "document").read_bytes().endswith(b"}")


@pytest.mark.parametrize(("vector", "form"), CASES)
def test_real_document_verifies_in_every_form(vector: str, form: str, certs: AwsCertStore) -> None:
    doc = verify_instance_identity(proof(_read(vector, "document"), form, _read(vector, form)), certs=certs)

    account, instance, region, pending = VECTORS[vector]
    assert (doc.account_id, doc.instance_id, doc.region) == (account, instance, region)
    assert doc.pending_time == datetime.fromisoformat(pending)
    assert doc.pending_time.tzinfo is UTC


def test_real_document_fields_and_identity(certs: AwsCertStore) -> None:
    vector = "2018-us-west-2"
    doc = verify_instance_identity(proof(_read(vector, "document"), "rsa2048", _read(vector, "rsa2048")), certs=certs)
    identity = identity_from_document(doc)

    assert identity.method == "aws-ec2"
    assert identity.principal == "i-0a30e04d85e6f8793"
    assert (identity.account_id, identity.region) == ("692406183521", "us-west-2")
    assert isinstance(identity.attributes, MappingProxyType)
    assert dict(identity.attributes) == {
        "instance_id": "i-0a30e04d85e6f8793",
        "image_id": "ami-6b8cef13",
        "instance_type": "t2.nano",
        "availability_zone": "us-west-2a",
        "architecture": "x86_64",
        "pending_time": "2018-05-09T12:30:58Z",
        "private_ip": "172.31.46.215",
    }


@pytest.mark.parametrize(("vector", "form"), CASES)
def test_document_tampered_by_one_byte_is_refused(vector: str, form: str, certs: AwsCertStore) -> None:
    document = _read(vector, "document")
    account = VECTORS[vector][0]
    tampered = document.replace(account, account[:-1] + str((int(account[-1]) + 1) % 10))
    assert len(tampered) == len(document)
    assert sum(a != b for a, b in zip(tampered, document, strict=True)) == 1

    expected = SignatureInvalid if form == "signature" else ContentMismatch
    with pytest.raises(expected) as err:
        verify_instance_identity(proof(tampered, form, _read(vector, form)), certs=certs)
    assert err.value.status_hint == 401


def test_document_invalid_vector_is_refused(certs: AwsCertStore) -> None:
    vector = "2026-ap-southeast-2"
    invalid = _read(vector, "document-invalid")
    with pytest.raises(SignatureInvalid):
        verify_instance_identity(proof(invalid, "signature", _read(vector, "signature")), certs=certs)
    with pytest.raises(ContentMismatch):
        verify_instance_identity(proof(invalid, "rsa2048", _read(vector, "rsa2048")), certs=certs)


def test_signature_invalid_vector_is_refused(certs: AwsCertStore) -> None:
    vector = "2026-ap-southeast-2"
    with pytest.raises(SignatureInvalid) as err:
        verify_instance_identity(
            proof(_read(vector, "document"), "signature", _read(vector, "signature-invalid")), certs=certs
        )
    assert err.value.code == "ec2_signature_invalid"


def test_expired_aws_certificate_still_verifies_a_historical_document() -> None:
    legacy = x509.load_pem_x509_certificate((DATA / "rsa-legacy-ec2.amazonaws.com-expired-2024-06-05.pem").read_bytes())
    assert legacy.not_valid_after_utc < datetime(2024, 6, 6, tzinfo=UTC)
    only_legacy = AwsCertStore(
        pinned=MappingProxyType({"rsa2048": {}, "pkcs7": {}, "signature": {"us-west-2": (legacy,)}})
    )
    vector = "2018-us-west-2"

    doc = verify_instance_identity(
        proof(_read(vector, "document"), "signature", _read(vector, "signature")), certs=only_legacy
    )
    assert doc.instance_id == "i-0a30e04d85e6f8793"


def test_2018_signature_verifies_as_openssl_does(tmp_path: Path, certs: AwsCertStore) -> None:
    vector = "2018-us-west-2"
    (cert,) = certs.for_region("us-west-2", "signature")
    pub = tmp_path / "pub.pem"
    pub.write_bytes(cert.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    sig = tmp_path / "sig.bin"
    sig.write_bytes(base64.b64decode(_read(vector, "signature")))
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig), str(DATA / vector / "document")],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "reshape",
    [
        pytest.param(lambda b: b, id="as-imds-serves-it"),
        pytest.param(lambda b: b.replace("\n", ""), id="one-line"),
        pytest.param(lambda b: b.replace("\n", "\r\n") + "\r\n", id="crlf"),
        pytest.param(lambda b: f"-----BEGIN PKCS7-----\n{b}\n-----END PKCS7-----\n", id="pem-armour"),
    ],
)
def test_blob_layouts_clients_send_are_accepted(reshape: object, certs: AwsCertStore) -> None:
    vector = "2018-us-west-2"
    for form in ("rsa2048", "pkcs7"):
        blob = reshape(_read(vector, form))  # type: ignore[operator]
        assert verify_instance_identity(proof(_read(vector, "document"), form, blob), certs=certs)


@pytest.mark.parametrize(
    ("form", "mangle"),
    [
        pytest.param("rsa2048", lambda b: b[: len(b) // 2], id="rsa2048-truncated-at-half"),
        pytest.param("rsa2048", lambda b: b.replace("\n", "")[:-8], id="rsa2048-truncated-on-a-quad"),
        pytest.param("rsa2048", lambda b: b[:-3], id="rsa2048-truncated-mid-quad"),
        pytest.param("pkcs7", lambda b: b.replace("\n", "")[:-12], id="pkcs7-truncated"),
        pytest.param("signature", lambda b: b.replace("\n", "")[:-4], id="signature-truncated"),
        pytest.param("rsa2048", lambda b: b.replace("M", "*", 1), id="rsa2048-not-base64"),
        pytest.param("signature", lambda b: "not base64 at all!", id="signature-not-base64"),
        pytest.param("pkcs7", lambda b: f"-----BEGIN PKCS7-----\n{b}\n-----END CMS-----", id="bad-armour"),
        pytest.param("signature", lambda b: f"-----BEGIN PKCS7-----\n{b}\n-----END PKCS7-----", id="armoured-raw"),
        pytest.param("rsa2048", lambda b: "QUJD", id="base64-but-not-cms"),
    ],
)
def test_malformed_blobs_are_refused_as_such(form: str, mangle: object, certs: AwsCertStore) -> None:
    vector = "2018-us-west-2"
    blob = mangle(_read(vector, form))  # type: ignore[operator]
    with pytest.raises(BlobMalformed) as err:
        verify_instance_identity(proof(_read(vector, "document"), form, blob), certs=certs)
    assert (err.value.status_hint, err.value.code) == (400, "ec2_blob_malformed")


def test_every_refusal_is_an_issuer_error_with_a_public_detail(certs: AwsCertStore) -> None:
    vector = "2026-ap-southeast-2"
    with pytest.raises(IssuerError) as err:
        verify_instance_identity(
            proof(_read(vector, "document"), "signature", _read(vector, "signature-invalid")), certs=certs
        )
    # The public sentence says what failed, never which key or serial: that is for the audit log.
    assert "serial" not in err.value.detail
    assert "pinned" in err.value.reason
