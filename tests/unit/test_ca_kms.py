"""The KMS signer against botocore's Stubber: what is sent to KMS, RAW vs DIGEST, what comes back.

The stubbed "KMS" holds a local issuing key and signs the way real KMS does (a DIGEST
message is signed as a prehashed digest, a RAW one is hashed first), so the signatures
are real and checked by cryptography and openssl. Because the TBS of a certificate or
CRL is deterministic for a given serial and time, the bytes KMS must receive are
computed independently, by the local backend signing the same thing.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest
from botocore.stub import Stubber
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ca import (
    CertifiedKey,
    CSRError,
    KMSKeyError,
    LeafTemplate,
    LocalFileSigner,
    RevokedEntry,
    Signer,
    generate_private_key,
)
from ca.hierarchy import create_root
from ca.keys import signature_hash_for
from ca.kms import KmsSigner
from ca.kms_x509 import RAW_MESSAGE_LIMIT, algorithm_for_key_spec, algorithm_for_public_key, sign_request
from ca.profile import issuing_builder
from tests.support.signing import sign
from tests.support.x509_check import openssl_verify, openssl_verify_crl, pem, rsa_key, verify_client_chain

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
KEY_ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SERIAL = 0x5D60_CE9D_0123_4567_89AB_CDEF
URI = "spiffe://example.org/aws/123456789012/iam/role/builder"
KMS_ALGORITHM = {"ec-p256": "ECDSA_SHA_256", "ec-p384": "ECDSA_SHA_384", "rsa-2048": "RSASSA_PKCS1_V1_5_SHA_256"}


@pytest.fixture(scope="module")
def root() -> CertifiedKey:
    return create_root(now=NOW - timedelta(days=30), organization="Example Corp")


def issuing_ca(root: CertifiedKey, key_type: str) -> CertifiedKey:
    """An issuing CA whose key the stub plays KMS with (the service would only have its certificate)."""
    key = rsa_key(2048) if key_type == "rsa-2048" else generate_private_key(key_type)
    certificate = issuing_builder(
        key.public_key(),
        issuer=root.certificate,
        common_name=f"KMS Issuing CA {key_type}",
        organization="Example Corp",
        not_before=NOW - timedelta(days=30),
        not_after=NOW + timedelta(days=300),
    ).sign(root.key, signature_hash_for(root.key))
    return CertifiedKey(certificate, key)


@pytest.fixture(scope="module", params=list(KMS_ALGORITHM))
def issuing(request: pytest.FixtureRequest, root: CertifiedKey) -> CertifiedKey:
    return issuing_ca(root, str(request.param))


# One session for the module: it caches the service model, so each new client is cheap.
SESSION = botocore.session.Session()


def kms_client() -> Any:
    return SESSION.create_client(
        "kms", region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def kms_signature(key: Any, message: bytes, message_type: str, hash_name: str) -> bytes:
    """What real KMS returns for Sign: RAW is hashed by KMS, DIGEST is signed as given."""
    algorithm: hashes.HashAlgorithm = hashes.SHA384() if hash_name == "sha384" else hashes.SHA256()
    chosen: Any = algorithm if message_type == "RAW" else Prehashed(algorithm)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(chosen))
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.sign(message, padding.PKCS1v15(), chosen)


def expect_sign(stubber: Stubber, issuing: CertifiedKey, tbs: bytes, *, signer_key: Any = None) -> str:
    """Queue one Sign call that must carry exactly the right message for ``tbs``; return its MessageType."""
    algorithm = algorithm_for_public_key(issuing.certificate.public_key())
    assert algorithm is not None
    message_type = "RAW" if len(tbs) <= RAW_MESSAGE_LIMIT else "DIGEST"
    message = tbs if message_type == "RAW" else hashlib.new(algorithm.hash.name, tbs).digest()
    signature = kms_signature(signer_key or issuing.key, message, message_type, algorithm.hash.name)
    stubber.add_response(
        "sign",
        {"KeyId": KEY_ARN, "Signature": signature, "SigningAlgorithm": algorithm.signing_algorithm},
        expected_params={
            "KeyId": KEY_ARN,
            "Message": message,
            "MessageType": message_type,
            "SigningAlgorithm": algorithm.signing_algorithm,
        },
    )
    return message_type


def template(dns_count: int = 0) -> LeafTemplate:
    return LeafTemplate(
        common_name="builder",
        uri_sans=(URI,),
        dns_sans=tuple(f"host-{i:04d}.build.example.internal" for i in range(dns_count)),
        not_before=NOW - timedelta(seconds=60),
        not_after=NOW + timedelta(hours=24),
    )


def signers(client: Any, root: CertifiedKey, issuing: CertifiedKey) -> tuple[KmsSigner, LocalFileSigner]:
    """A KMS and a local signer of one issuing CA whose leaves get the serial SERIAL (to compare them byte for byte)."""
    kms = KmsSigner(
        client=client,
        key_id=KEY_ARN,
        issuer_certificate=issuing.certificate,
        roots=[root.certificate],
        serials=lambda: SERIAL,
    )
    local = LocalFileSigner(
        issuer_certificate=issuing.certificate, issuer_key=issuing.key, roots=[root.certificate], serials=lambda: SERIAL
    )
    return kms, local


# --- the RAW/DIGEST choice, pure --------------------------------------------------------------


@pytest.mark.parametrize("spec", ["ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048", "RSA_3072", "RSA_4096"])
def test_raw_up_to_4096_bytes_then_the_digest_the_algorithm_names(spec: str) -> None:
    algorithm = algorithm_for_key_spec(spec)
    assert algorithm is not None
    at_limit, over = b"\x30" * 4096, b"\x30" * 4097

    raw, digest = sign_request(algorithm, at_limit), sign_request(algorithm, over)

    assert (raw.message_type, raw.message) == ("RAW", at_limit)
    hash_name = "sha384" if spec == "ECC_NIST_P384" else "sha256"
    assert (digest.message_type, digest.message) == ("DIGEST", hashlib.new(hash_name, over).digest())
    assert (
        raw.signing_algorithm
        == digest.signing_algorithm
        == {
            "ECC_NIST_P256": "ECDSA_SHA_256",
            "ECC_NIST_P384": "ECDSA_SHA_384",
        }.get(spec, "RSASSA_PKCS1_V1_5_SHA_256")
    )


@pytest.mark.parametrize("spec", ["ECC_NIST_P521", "ECC_SECG_P256K1", "SYMMETRIC_DEFAULT", "HMAC_256", "SM2", ""])
def test_other_key_specs_are_not_signed_with(spec: str) -> None:
    assert algorithm_for_key_spec(spec) is None


def test_only_keys_kms_can_hold_map_to_an_algorithm() -> None:
    assert algorithm_for_public_key(generate_private_key("ec-p256").public_key()).key_spec == "ECC_NIST_P256"  # type: ignore[union-attr]
    assert algorithm_for_public_key(generate_private_key("ec-p384").public_key()).key_spec == "ECC_NIST_P384"  # type: ignore[union-attr]
    assert algorithm_for_public_key(rsa_key(3072).public_key()).key_spec == "RSA_3072"  # type: ignore[union-attr]
    assert algorithm_for_public_key(ec.generate_private_key(ec.SECP521R1()).public_key()) is None
    assert algorithm_for_public_key(generate_private_key("ed25519").public_key()) is None
    assert algorithm_for_public_key(rsa.generate_private_key(65537, 1024).public_key()) is None


# --- what goes to KMS and what comes back -----------------------------------------------------


async def test_a_leaf_is_sent_raw_and_equals_the_local_backends(root: CertifiedKey, issuing: CertifiedKey) -> None:
    client = kms_client()
    kms, local = signers(client, root, issuing)
    leaf_key = generate_private_key("ec-p256")
    expected = await sign(local, template(), leaf_key.public_key())

    with Stubber(client) as stubber:
        assert expect_sign(stubber, issuing, expected.tbs_certificate_bytes) == "RAW"
        leaf = await sign(kms, template(), leaf_key.public_key())
        stubber.assert_no_pending_responses()

    # Same profile byte for byte: only the signature differs.
    assert leaf.tbs_certificate_bytes == expected.tbs_certificate_bytes
    assert leaf.signature_algorithm_oid == expected.signature_algorithm_oid
    leaf.verify_directly_issued_by(issuing.certificate)
    openssl_verify(pem([leaf]), pem([issuing.certificate]), pem([root.certificate]), attime=NOW)
    verify_client_chain(leaf, [issuing.certificate], [root.certificate], NOW)


async def test_a_leaf_over_4096_bytes_is_sent_as_its_digest(root: CertifiedKey, issuing: CertifiedKey) -> None:
    client = kms_client()
    kms, local = signers(client, root, issuing)
    leaf_key = rsa_key(2048)
    expected = await sign(local, template(dns_count=150), leaf_key.public_key())
    assert len(expected.tbs_certificate_bytes) > RAW_MESSAGE_LIMIT

    with Stubber(client) as stubber:
        assert expect_sign(stubber, issuing, expected.tbs_certificate_bytes) == "DIGEST"
        leaf = await sign(kms, template(dns_count=150), leaf_key.public_key())
        stubber.assert_no_pending_responses()

    assert leaf.tbs_certificate_bytes == expected.tbs_certificate_bytes
    openssl_verify(pem([leaf]), pem([issuing.certificate]), pem([root.certificate]), attime=NOW)
    verify_client_chain(leaf, [issuing.certificate], [root.certificate], NOW)


@pytest.mark.parametrize("entries", [3, 200])
async def test_crls_small_raw_large_digest(root: CertifiedKey, issuing: CertifiedKey, entries: int) -> None:
    revoked = [
        RevokedEntry(
            serial=0x10_0000_0000 + i, revoked_at=NOW - timedelta(minutes=i), reason=x509.ReasonFlags.superseded
        )
        for i in range(entries)
    ]
    client = kms_client()
    kms, local = signers(client, root, issuing)
    options: dict[str, Any] = {"now": NOW, "next_update": NOW + timedelta(hours=12), "crl_number": 7}
    expected = await local.sign_crl(revoked, **options)

    with Stubber(client) as stubber:
        message_type = expect_sign(stubber, issuing, expected.tbs_certlist_bytes)
        crl = await kms.sign_crl(revoked, **options)
        stubber.assert_no_pending_responses()

    assert message_type == ("RAW" if entries == 3 else "DIGEST")
    assert crl.tbs_certlist_bytes == expected.tbs_certlist_bytes
    assert crl.is_signature_valid(issuing.certificate.public_key())  # type: ignore[arg-type]
    openssl_verify_crl(crl, pem([issuing.certificate, root.certificate]))


async def test_a_signature_that_does_not_verify_never_leaves_the_ca(root: CertifiedKey) -> None:
    issuing = issuing_ca(root, "ec-p256")
    impostor = generate_private_key("ec-p256")  # e.g. the alias now points at another key
    client = kms_client()
    kms, local = signers(client, root, issuing)
    leaf_key = generate_private_key("ec-p256")
    expected = await sign(local, template(), leaf_key.public_key())
    expected_crl = await local.sign_crl([], now=NOW, next_update=NOW + timedelta(hours=1), crl_number=1)

    with Stubber(client) as stubber:
        expect_sign(stubber, issuing, expected.tbs_certificate_bytes, signer_key=impostor)
        expect_sign(stubber, issuing, expected_crl.tbs_certlist_bytes, signer_key=impostor)
        with pytest.raises(KMSKeyError) as leaf_err:
            await sign(kms, template(), leaf_key.public_key())
        with pytest.raises(KMSKeyError) as crl_err:
            await kms.sign_crl([], now=NOW, next_update=NOW + timedelta(hours=1), crl_number=1)
        stubber.assert_no_pending_responses()

    for err in (leaf_err.value, crl_err.value):
        assert (err.code, err.status_hint) == ("ca_kms_signature_invalid", 500)
        assert KEY_ARN not in err.detail  # the client sees no infrastructure names ...
        assert KEY_ARN in err.reason  # ... the log does


async def test_an_unsupported_client_key_is_refused_before_kms_is_asked(root: CertifiedKey) -> None:
    issuing = issuing_ca(root, "ec-p256")
    client = kms_client()
    kms, _ = signers(client, root, issuing)
    with Stubber(client) as stubber:  # no response queued: any call would fail the test
        with pytest.raises(CSRError) as err:
            await sign(kms, template(), rsa.generate_private_key(65537, 1024).public_key())
        stubber.assert_no_pending_responses()
    assert err.value.code == "key_type_unsupported"


def test_the_signer_satisfies_the_protocol_and_checks_its_arguments(root: CertifiedKey) -> None:
    issuing = issuing_ca(root, "ec-p384")
    signer: Signer = KmsSigner(  # mypy checks KmsSigner against the Protocol here
        client=kms_client(), key_id=KEY_ARN, issuer_certificate=issuing.certificate, roots=[root.certificate]
    )
    assert signer.chain == (issuing.certificate,)
    assert signer.roots == (root.certificate,)
    assert "KmsSigner" in repr(signer) and KEY_ARN in repr(signer)
    ed_root = generate_private_key("ed25519")
    ed_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([]))
        .public_key(ed_root.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(ed_root, None)
    )
    base: dict[str, Any] = {
        "client": kms_client(),
        "key_id": KEY_ARN,
        "issuer_certificate": issuing.certificate,
        "roots": [root.certificate],
    }
    bad_arguments: list[dict[str, Any]] = [
        {"issuer_certificate": ed_cert},
        {"roots": []},
        {"key_id": ""},
        {"call_timeout": 0},
        {"health_timeout": -1},
    ]
    for bad in bad_arguments:
        with pytest.raises(ValueError):
            KmsSigner(**{**base, **bad})
