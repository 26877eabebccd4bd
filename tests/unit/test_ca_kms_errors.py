"""The KMS signer's failures, its loader's checks and its readiness check, against botocore's Stubber.

Every KMS error code the signer may meet is mapped to an error of the CA library
with a stable code, a status hint and Retry-After; serving errors name no key in
``detail`` (the remote client reads it) but do in ``reason`` (the log); start-up and
set-up errors name the key in ``detail`` (the operator reads it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca import (
    CAError,
    CertifiedKey,
    KMSKeyError,
    LeafTemplate,
    LocalFileSigner,
    SignerDenied,
    SignerUnavailable,
    generate_private_key,
    load_kms_signer,
)
from ca.hierarchy import create_hierarchy
from ca.kms import KmsSigner
from tests.support.signing import sign

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
ALIAS = "alias/issuer-ca"
KEY_ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture(scope="module")
def issuing() -> CertifiedKey:
    return create_hierarchy(now=NOW - timedelta(days=30)).issuing


@pytest.fixture(scope="module")
def root_cert() -> Any:
    return create_hierarchy(now=NOW - timedelta(days=30)).root.certificate


# One session for the module: it caches the service model, so each new client is cheap.
SESSION = botocore.session.Session()


def kms_client() -> Any:
    return SESSION.create_client(
        "kms", region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def public_key_reply(public_key: Any, **overrides: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "KeyId": KEY_ARN,
        "PublicKey": public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "KeySpec": "ECC_NIST_P256",
        "KeyUsage": "SIGN_VERIFY",
        "SigningAlgorithms": ["ECDSA_SHA_256"],
    }
    reply.update(overrides)
    return {k: v for k, v in reply.items() if v is not None}


def template() -> LeafTemplate:
    return LeafTemplate(
        common_name="builder",
        uri_sans=("spiffe://example.org/builder",),
        not_before=NOW - timedelta(seconds=60),
        not_after=NOW + timedelta(hours=1),
    )


# (AWS error code, HTTP status) -> (class, code, retry_after)
FAILURES = [
    ("ThrottlingException", 400, SignerUnavailable, "ca_signer_unavailable", 2),
    ("KMSInternalException", 500, SignerUnavailable, "ca_signer_unavailable", 5),
    ("DependencyTimeoutException", 503, SignerUnavailable, "ca_signer_unavailable", 5),
    ("SomethingNew", 502, SignerUnavailable, "ca_signer_unavailable", 5),
    ("AccessDeniedException", 400, SignerDenied, "ca_signer_denied", 30),
    ("UnrecognizedClientException", 400, SignerDenied, "ca_signer_denied", 30),
    ("ValidationException", 400, SignerDenied, "ca_signer_denied", 30),
    ("DisabledException", 400, SignerDenied, "ca_kms_key_disabled", 30),
    ("KMSInvalidStateException", 400, SignerDenied, "ca_kms_key_disabled", 30),
    ("KeyUnavailableException", 500, SignerDenied, "ca_kms_key_disabled", 30),
    ("NotFoundException", 400, SignerDenied, "ca_kms_key_not_found", 30),
    ("InvalidKeyUsageException", 400, KMSKeyError, "ca_kms_key_unsupported", None),
]


@pytest.mark.parametrize(("aws_code", "status", "kind", "code", "retry_after"), FAILURES)
async def test_sign_failures_while_serving(
    issuing: CertifiedKey, root_cert: Any, aws_code: str, status: int, kind: type[CAError], code: str, retry_after: int
) -> None:
    client = kms_client()
    signer = KmsSigner(client=client, key_id=KEY_ARN, issuer_certificate=issuing.certificate, roots=[root_cert])
    with Stubber(client) as stubber:
        stubber.add_client_error("sign", service_error_code=aws_code, service_message="no", http_status_code=status)
        with pytest.raises(CAError) as err:
            await sign(signer, template(), generate_private_key("ec-p256").public_key())
    assert type(err.value) is kind
    assert err.value.code == code
    assert err.value.retry_after == retry_after
    assert err.value.status_hint == (500 if kind is KMSKeyError else 503)
    assert KEY_ARN not in err.value.detail and "arn:" not in err.value.detail
    assert KEY_ARN in err.value.reason and aws_code in err.value.reason
    if kind is SignerDenied:
        assert "operator must act" in err.value.reason
        assert isinstance(err.value, SignerUnavailable)  # one except clause covers "cannot sign now"


@pytest.mark.parametrize(("aws_code", "status", "kind", "code", "retry_after"), FAILURES)
async def test_get_public_key_failures_at_start_up_name_the_key(
    issuing: CertifiedKey, root_cert: Any, aws_code: str, status: int, kind: type[CAError], code: str, retry_after: int
) -> None:
    client = kms_client()
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "get_public_key", service_error_code=aws_code, service_message="no", http_status_code=status
        )
        with pytest.raises(CAError) as err:
            await load_kms_signer(client, ALIAS, issuer_certificate=issuing.certificate, roots=[root_cert])
    assert (type(err.value), err.value.code) == (kind, code)
    assert ALIAS in err.value.detail


def test_disabled_key_says_what_to_do(issuing: CertifiedKey, root_cert: Any) -> None:
    client = kms_client()
    with Stubber(client) as stubber:
        stubber.add_client_error("get_public_key", service_error_code="DisabledException", http_status_code=400)
        with pytest.raises(SignerDenied) as err:
            asyncio.run(load_kms_signer(client, ALIAS, issuer_certificate=issuing.certificate, roots=[root_cert]))
    assert "enable" in err.value.detail and ALIAS in err.value.detail


# --- the loader ---------------------------------------------------------------------------------


async def test_loader_signs_with_the_key_arn_it_was_given_an_alias_for(issuing: CertifiedKey, root_cert: Any) -> None:
    client = kms_client()
    with Stubber(client) as stubber:
        stubber.add_response(
            "get_public_key", public_key_reply(issuing.key.public_key()), expected_params={"KeyId": ALIAS}
        )
        signer = await load_kms_signer(client, ALIAS, issuer_certificate=issuing.certificate, roots=[root_cert])
        stubber.assert_no_pending_responses()
    assert signer.key_id == KEY_ARN
    assert signer.algorithm.signing_algorithm == "ECDSA_SHA_256"


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"KeyUsage": "ENCRYPT_DECRYPT"}, "ENCRYPT_DECRYPT"),
        ({"KeyUsage": None}, "unknown"),
        ({"KeySpec": "ECC_SECG_P256K1"}, "ECC_SECG_P256K1"),
        ({"KeySpec": "ECC_NIST_P384", "SigningAlgorithms": ["ECDSA_SHA_384"]}, "not a ECC_NIST_P384 key"),
        ({"SigningAlgorithms": ["ECDSA_SHA_512"]}, "does not offer ECDSA_SHA_256"),
        ({"PublicKey": b"not DER"}, "no readable public key"),
    ],
)
async def test_loader_refuses_keys_that_cannot_sign_here(
    issuing: CertifiedKey, root_cert: Any, overrides: Mapping[str, Any], why: str
) -> None:
    client = kms_client()
    with Stubber(client) as stubber:
        stubber.add_response("get_public_key", public_key_reply(issuing.key.public_key(), **overrides))
        with pytest.raises(KMSKeyError) as err:
            await load_kms_signer(client, ALIAS, issuer_certificate=issuing.certificate, roots=[root_cert])
    assert err.value.code == "ca_kms_key_unsupported"
    assert ALIAS in err.value.detail and why in err.value.detail


async def test_loader_accepts_the_deprecated_spec_field(issuing: CertifiedKey, root_cert: Any) -> None:
    client = kms_client()
    reply = public_key_reply(issuing.key.public_key(), KeySpec=None, CustomerMasterKeySpec="ECC_NIST_P256")
    with Stubber(client) as stubber:
        stubber.add_response("get_public_key", reply)
        signer = await load_kms_signer(client, ALIAS, issuer_certificate=issuing.certificate, roots=[root_cert])
    assert signer.algorithm.key_spec == "ECC_NIST_P256"


async def test_loader_refuses_a_key_that_is_not_the_certificates(issuing: CertifiedKey, root_cert: Any) -> None:
    client = kms_client()
    with Stubber(client) as stubber:
        stubber.add_response("get_public_key", public_key_reply(generate_private_key("ec-p256").public_key()))
        with pytest.raises(KMSKeyError) as err:
            await load_kms_signer(client, ALIAS, issuer_certificate=issuing.certificate, roots=[root_cert])
    assert (err.value.code, err.value.status_hint) == ("ca_kms_key_mismatch", 500)
    assert ALIAS in err.value.detail and KEY_ARN in err.value.detail
    assert issuing.certificate.subject.rfc4514_string() in err.value.detail


# --- readiness ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_check_is_cached_for_its_ttl_and_failures_are_not(issuing: CertifiedKey, root_cert: Any) -> None:
    client, clock = kms_client(), Clock()
    signer = KmsSigner(
        client=client,
        key_id=KEY_ARN,
        issuer_certificate=issuing.certificate,
        roots=[root_cert],
        health_ttl=30,
        clock=clock,
    )
    good = public_key_reply(issuing.key.public_key())
    with Stubber(client) as stubber:
        stubber.add_response("get_public_key", good, expected_params={"KeyId": KEY_ARN})
        await signer.check()
        clock.now += 29
        await signer.check()  # cached: a call here would find no stubbed response and fail
        stubber.assert_no_pending_responses()

        clock.now += 2
        stubber.add_client_error("get_public_key", service_error_code="ThrottlingException", http_status_code=400)
        with pytest.raises(SignerUnavailable):
            await signer.check()
        stubber.add_client_error("get_public_key", service_error_code="DisabledException", http_status_code=400)
        with pytest.raises(SignerDenied) as denied:
            await signer.check()  # the failure above was not cached
        assert denied.value.code == "ca_kms_key_disabled"
        stubber.add_response("get_public_key", good)
        await signer.check()
        stubber.assert_no_pending_responses()


async def test_a_signature_counts_as_a_check_and_a_failed_one_clears_it(issuing: CertifiedKey, root_cert: Any) -> None:
    client, clock = kms_client(), Clock()
    signer = KmsSigner(
        client=client,
        key_id=KEY_ARN,
        issuer_certificate=issuing.certificate,
        roots=[root_cert],
        health_ttl=30,
        clock=clock,
    )
    local = LocalFileSigner(issuer_certificate=issuing.certificate, issuer_key=issuing.key, roots=[root_cert])
    options: dict[str, Any] = {"now": NOW, "next_update": NOW + timedelta(hours=1), "crl_number": 1}
    tbs = (await local.sign_crl([], **options)).tbs_certlist_bytes  # the same TBS the KMS signer sends
    assert isinstance(issuing.key, ec.EllipticCurvePrivateKey)
    signature = issuing.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    with Stubber(client) as stubber:
        stubber.add_response("sign", {"KeyId": KEY_ARN, "Signature": signature, "SigningAlgorithm": "ECDSA_SHA_256"})
        await signer.sign_crl([], **options)
        clock.now += 29
        await signer.check()  # the signature counted: a GetPublicKey here would find no stubbed response
        stubber.assert_no_pending_responses()

        stubber.add_client_error("sign", service_error_code="ThrottlingException", http_status_code=400)
        with pytest.raises(SignerUnavailable):
            await sign(signer, template(), generate_private_key("ec-p256").public_key())
        stubber.add_response(
            "get_public_key", public_key_reply(issuing.key.public_key()), expected_params={"KeyId": KEY_ARN}
        )
        await signer.check()  # still within the TTL of the signature, yet KMS is asked after the failure
        stubber.assert_no_pending_responses()


async def test_check_notices_the_key_id_now_names_another_key(issuing: CertifiedKey, root_cert: Any) -> None:
    client = kms_client()
    signer = KmsSigner(client=client, key_id=ALIAS, issuer_certificate=issuing.certificate, roots=[root_cert])
    with Stubber(client) as stubber:
        stubber.add_response("get_public_key", public_key_reply(generate_private_key("ec-p256").public_key()))
        with pytest.raises(KMSKeyError) as err:
            await signer.check()
    assert err.value.code == "ca_kms_key_mismatch"
    assert ALIAS in err.value.reason and ALIAS not in err.value.detail


async def test_concurrent_checks_share_one_call(issuing: CertifiedKey, root_cert: Any) -> None:
    client = kms_client()
    signer = KmsSigner(client=client, key_id=KEY_ARN, issuer_certificate=issuing.certificate, roots=[root_cert])
    with Stubber(client) as stubber:
        stubber.add_response("get_public_key", public_key_reply(issuing.key.public_key()))
        await asyncio.gather(*(signer.check() for _ in range(5)))
        stubber.assert_no_pending_responses()


# --- bounded time -------------------------------------------------------------------------------


class HangingKms:
    """A KMS client whose calls block until released (as over a connection that never answers)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def sign(self, *, KeyId: str, Message: bytes, MessageType: str, SigningAlgorithm: str) -> Mapping[str, Any]:
        self.calls += 1
        self.release.wait(60)
        return {}

    def get_public_key(self, *, KeyId: str) -> Mapping[str, Any]:
        self.calls += 1
        self.release.wait(60)
        return {}


async def test_a_hanging_kms_gives_the_unavailable_error_and_the_loop_runs_on(
    issuing: CertifiedKey, root_cert: Any
) -> None:
    kms = HangingKms()
    signer = KmsSigner(
        client=kms,
        key_id=KEY_ARN,
        issuer_certificate=issuing.certificate,
        roots=[root_cert],
        call_timeout=0.3,
        health_timeout=0.2,
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        # wait_for only guards the test against hanging if the signer's own bound were broken.
        with pytest.raises(SignerUnavailable) as sign_err:
            await asyncio.wait_for(sign(signer, template(), generate_private_key("ec-p256").public_key()), 30)
        with pytest.raises(SignerUnavailable) as check_err:
            await asyncio.wait_for(signer.check(), 30)
        with pytest.raises(SignerUnavailable) as load_err:
            await asyncio.wait_for(
                load_kms_signer(
                    kms, ALIAS, issuer_certificate=issuing.certificate, roots=[root_cert], call_timeout=0.2
                ),
                30,
            )
    finally:
        task.cancel()
        kms.release.set()
    assert kms.calls == 3
    assert "did not answer kms:Sign" in sign_err.value.reason and "0.3 s" in sign_err.value.reason
    assert "did not answer kms:GetPublicKey" in check_err.value.reason
    assert ALIAS in load_err.value.detail
    for err in (sign_err.value, check_err.value, load_err.value):
        assert (err.code, err.status_hint, err.retry_after) == ("ca_signer_unavailable", 503, 5)
    assert ticks > 1  # the event loop kept running while KMS hung
