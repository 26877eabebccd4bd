"""The KMS signer against moto's KMS server, checked by openssl and cryptography's verifier.

moto signs RAW messages as KMS does; it hashes a DIGEST message again (a wrong
signature), which the signer must catch rather than hand out. moto does not refuse
a disabled key (real KMS raises DisabledException); that mapping is covered with
botocore's Stubber in tests/unit/test_ca_kms_errors.py.

Benchmark (prints certificates/s for sequential leaves per key spec):
    .venv/bin/python -m tests.integration.test_ca_kms_moto [COUNT]
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ca import (
    CAStateError,
    CertifiedKey,
    KMSKeyError,
    LeafTemplate,
    RevokedEntry,
    SignerDenied,
    SignerUnavailable,
    create_issuing_for_kms_key,
    create_kms_key,
    create_kms_root,
    generate_private_key,
    kms_botocore_config,
    load_kms_signer,
)
from ca.hierarchy import create_hierarchy, create_root
from ca.kms import KmsSigner
from tests.support.moto_server import MotoServer, fake_aws_credentials, free_port, moto_server
from tests.support.signing import sign
from tests.support.x509_check import openssl_verify, openssl_verify_crl, pem, rsa_key, verify_client_chain

REGION = "eu-west-1"
NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
SPECS = ["ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048", "RSA_3072", "RSA_4096"]
URI = "spiffe://example.org/aws/123456789012/eu-west-1/ec2/i-0abc"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as mp:
        fake_aws_credentials(mp, region=REGION)
        with moto_server() as server:
            yield server


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_credentials(monkeypatch, region=REGION)


def kms_client(url: str, **config: Any) -> Any:
    return boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=kms_botocore_config(**config),
    )


@pytest.fixture(scope="module")
def root() -> CertifiedKey:
    return create_root(now=NOW - timedelta(days=30), organization="Example Corp")


@dataclass(frozen=True, slots=True)
class KmsCA:
    client: Any
    alias: str
    key_arn: str
    issuing: x509.Certificate


def make_kms_ca(client: Any, root: CertifiedKey, spec: str) -> KmsCA:
    alias = f"alias/issuer-{spec.lower().replace('_', '-')}"
    key = create_kms_key(client, key_spec=spec, alias=alias)  # type: ignore[arg-type]
    issuing = create_issuing_for_kms_key(
        root,
        client,
        alias,
        now=NOW - timedelta(days=30),
        common_name=f"KMS Issuing {spec}",
        organization="Example Corp",
    )
    return KmsCA(client, alias, key.key_id, issuing)


@pytest.fixture(scope="module", params=SPECS)
def kms_ca(request: pytest.FixtureRequest, moto: MotoServer, root: CertifiedKey) -> KmsCA:
    with pytest.MonkeyPatch.context() as mp:
        fake_aws_credentials(mp, region=REGION)
        return make_kms_ca(kms_client(moto.url), root, str(request.param))


@pytest.fixture(scope="module")
def p256_ca(moto: MotoServer, root: CertifiedKey) -> KmsCA:
    with pytest.MonkeyPatch.context() as mp:
        fake_aws_credentials(mp, region=REGION)
        client = kms_client(moto.url)
        key = create_kms_key(client, key_spec="ECC_NIST_P256")
        issuing = create_issuing_for_kms_key(root, client, key.key_id, now=NOW - timedelta(days=30))
        return KmsCA(client, key.key_id, key.key_id, issuing)


def template(**overrides: Any) -> LeafTemplate:
    fields: dict[str, Any] = {
        "common_name": "i-0abc",
        "uri_sans": (URI,),
        "not_before": NOW - timedelta(seconds=60),
        "not_after": NOW + timedelta(hours=24),
    }
    fields.update(overrides)
    return LeafTemplate(**fields)


def leaf_public_key(key_type: str) -> Any:
    return (rsa_key(2048) if key_type == "rsa-2048" else generate_private_key(key_type)).public_key()


async def test_every_key_spec_issues_leaves_and_crls_both_checkers_accept(kms_ca: KmsCA, root: CertifiedKey) -> None:
    signer = await load_kms_signer(
        kms_ca.client, kms_ca.alias, issuer_certificate=kms_ca.issuing, roots=[root.certificate]
    )
    kms_ca.issuing.verify_directly_issued_by(root.certificate)
    expected_hash = hashes.SHA384 if kms_ca.alias.endswith("p384") else hashes.SHA256

    for key_type in ("ec-p256", "ec-p384", "rsa-2048"):
        leaf = await sign(signer, template(), leaf_public_key(key_type))
        openssl_verify(pem([leaf]), pem(signer.chain), pem(signer.roots), attime=NOW)
        built = verify_client_chain(leaf, signer.chain, signer.roots, NOW)
        assert built == [leaf, kms_ca.issuing, root.certificate]
        assert isinstance(leaf.signature_hash_algorithm, expected_hash)

    revoked = [RevokedEntry(serial=0x1234 + i, revoked_at=NOW - timedelta(hours=i)) for i in range(3)]
    crl = await signer.sign_crl(revoked, now=NOW, next_update=NOW + timedelta(hours=12), crl_number=3)
    assert crl.is_signature_valid(kms_ca.issuing.public_key())  # type: ignore[arg-type]
    assert not crl.is_signature_valid(root.certificate.public_key())  # type: ignore[arg-type]
    openssl_verify_crl(crl, pem([kms_ca.issuing, root.certificate]))
    await signer.check()


async def test_the_leaf_profile_is_the_local_backends(p256_ca: KmsCA, root: CertifiedKey) -> None:
    serial = 0xABCDEF0123456789  # both backends take the serial from their source: the same one here
    local = create_hierarchy(now=NOW - timedelta(days=30)).signer(serials=lambda: serial)
    signer = await load_kms_signer(
        p256_ca.client,
        p256_ca.alias,
        issuer_certificate=p256_ca.issuing,
        roots=[root.certificate],
        serials=lambda: serial,
    )
    public_key = generate_private_key("ec-p256").public_key()

    from_kms = await sign(signer, template(), public_key)
    from_file = await sign(local, template(), public_key)

    def profile(c: x509.Certificate) -> list[tuple[Any, bool, Any]]:
        # The AKI names the issuer, which differs; everything else must be identical.
        return [
            (e.oid, e.critical, e.value) for e in c.extensions if not isinstance(e.value, x509.AuthorityKeyIdentifier)
        ]

    assert profile(from_kms) == profile(from_file)
    assert (from_kms.not_valid_before_utc, from_kms.not_valid_after_utc, from_kms.serial_number) == (
        from_file.not_valid_before_utc,
        from_file.not_valid_after_utc,
        from_file.serial_number,
    )
    assert from_kms.signature_algorithm_oid == from_file.signature_algorithm_oid


async def test_a_large_crl_goes_as_a_digest_and_motos_wrong_signature_is_caught(
    p256_ca: KmsCA, root: CertifiedKey
) -> None:
    # 200 entries make the TBS larger than KMS's 4096-byte RAW limit, so the signer sends
    # the SHA-256 digest; moto hashes it again, so its signature is wrong. Real KMS signs
    # it correctly (see the Stubber test); here the point is that nothing wrong leaves the CA.
    signer = await load_kms_signer(
        p256_ca.client, p256_ca.alias, issuer_certificate=p256_ca.issuing, roots=[root.certificate]
    )
    revoked = [RevokedEntry(serial=0x10_0000 + i, revoked_at=NOW - timedelta(minutes=i)) for i in range(200)]
    with pytest.raises(KMSKeyError) as err:
        await signer.sign_crl(revoked, now=NOW, next_update=NOW + timedelta(hours=12), crl_number=4)
    assert err.value.code == "ca_kms_signature_invalid"


async def test_a_kms_root_certifies_a_kms_issuing_ca(moto: MotoServer) -> None:
    client = kms_client(moto.url)
    root_key = create_kms_key(client, key_spec="ECC_NIST_P384", alias="issuer-root")
    kms_root = create_kms_root(client, "alias/issuer-root", now=NOW - timedelta(days=30), organization="Example Corp")
    issuing_key = create_kms_key(client, key_spec="ECC_NIST_P256")
    issuing = create_issuing_for_kms_key(
        kms_root, client, issuing_key.key_id, now=NOW - timedelta(days=30), organization="Example Corp"
    )
    signer = await load_kms_signer(client, issuing_key.key_id, issuer_certificate=issuing, roots=[kms_root.certificate])
    leaf = await sign(signer, template(), generate_private_key("ec-p256").public_key())

    assert kms_root.key_id == root_key.key_id
    assert isinstance(kms_root.certificate.signature_hash_algorithm, hashes.SHA384)
    assert isinstance(issuing.signature_hash_algorithm, hashes.SHA384)  # signed by the P-384 root
    kms_root.certificate.verify_directly_issued_by(kms_root.certificate)
    issuing.verify_directly_issued_by(kms_root.certificate)
    openssl_verify(pem([leaf]), pem([issuing]), pem([kms_root.certificate]), attime=NOW)
    verify_client_chain(leaf, [issuing], [kms_root.certificate], NOW)
    # openssl does not check a trust anchor's own signature unless asked to.
    openssl_ok(["-check_ss_sig", "-CAfile", kms_root.certificate, kms_root.certificate])
    openssl_ok(["-CAfile", kms_root.certificate, issuing])


def openssl_ok(arguments: list[Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="kms-check-") as tmp:
        cmd = ["openssl", "verify", "-x509_strict", "-attime", str(int(NOW.timestamp()))]
        for i, argument in enumerate(arguments):
            if isinstance(argument, x509.Certificate):
                path = Path(tmp) / f"{i}.pem"
                path.write_bytes(pem([argument]))
                argument = str(path)
            cmd.append(argument)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stdout + result.stderr


# --- refusals -----------------------------------------------------------------------------------


async def test_a_key_that_is_not_the_certificates_is_refused(
    moto: MotoServer, p256_ca: KmsCA, root: CertifiedKey
) -> None:
    client = kms_client(moto.url)
    other = create_kms_key(client, key_spec="ECC_NIST_P256", alias="issuer-other")
    with pytest.raises(KMSKeyError) as err:
        await load_kms_signer(
            client, "alias/issuer-other", issuer_certificate=p256_ca.issuing, roots=[root.certificate]
        )
    assert err.value.code == "ca_kms_key_mismatch"
    assert "alias/issuer-other" in err.value.detail and other.key_id in err.value.detail


async def test_an_encryption_key_is_refused(moto: MotoServer, p256_ca: KmsCA, root: CertifiedKey) -> None:
    client = kms_client(moto.url)
    key_id = client.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    with pytest.raises(KMSKeyError) as err:
        await load_kms_signer(client, key_id, issuer_certificate=p256_ca.issuing, roots=[root.certificate])
    assert err.value.code == "ca_kms_key_unsupported"
    assert key_id in err.value.detail and "ENCRYPT_DECRYPT" in err.value.detail


async def test_a_missing_key_is_named(moto: MotoServer, p256_ca: KmsCA, root: CertifiedKey) -> None:
    with pytest.raises(SignerDenied) as err:
        await load_kms_signer(
            kms_client(moto.url), "alias/nobody", issuer_certificate=p256_ca.issuing, roots=[root.certificate]
        )
    assert (err.value.code, err.value.status_hint) == ("ca_kms_key_not_found", 503)
    assert "alias/nobody" in err.value.detail


@pytest.mark.xfail(strict=True, reason="moto 5.2 signs with a disabled key; real KMS raises DisabledException")
async def test_a_disabled_key_is_refused_with_its_name(moto: MotoServer, root: CertifiedKey) -> None:
    client = kms_client(moto.url)
    key = create_kms_key(client, key_spec="ECC_NIST_P256")
    issuing = create_issuing_for_kms_key(root, client, key.key_id, now=NOW - timedelta(days=30))
    signer = await load_kms_signer(client, key.key_id, issuer_certificate=issuing, roots=[root.certificate])
    client.disable_key(KeyId=key.key_id)
    with pytest.raises(SignerDenied) as err:
        await sign(signer, template(), generate_private_key("ec-p256").public_key())
    assert err.value.code == "ca_kms_key_disabled"
    assert key.key_id in err.value.reason


async def test_credentials_kms_refuses_are_the_operators_problem(p256_ca: KmsCA, root: CertifiedKey) -> None:
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as strict:
        client = kms_client(strict.url, max_attempts=1)
        with pytest.raises(SignerDenied) as err:
            await load_kms_signer(
                client, "alias/issuer-ca", issuer_certificate=p256_ca.issuing, roots=[root.certificate]
            )
    assert (err.value.code, err.value.status_hint, err.value.retry_after) == ("ca_signer_denied", 503, 30)
    assert "alias/issuer-ca" in err.value.detail and "IAM policy" in err.value.detail
    assert "operator must act" in err.value.reason


def test_an_alias_that_is_taken_leaves_the_new_key_named(moto: MotoServer) -> None:
    client = kms_client(moto.url)
    create_kms_key(client, alias="issuer-taken")
    with pytest.raises(CAStateError) as err:
        create_kms_key(client, alias="alias/issuer-taken")
    assert err.value.code == "ca_exists"
    assert "alias/issuer-taken" in err.value.detail and ":key/" in err.value.detail


@pytest.mark.parametrize("alias", ["alias/aws/ours", "with space", "alias/", "ünïcode"])
def test_create_kms_key_refuses_bad_aliases_and_specs_before_calling_kms(alias: str) -> None:
    with pytest.raises(ValueError):
        create_kms_key(object(), alias=alias)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        create_kms_key(object(), key_spec="ECC_NIST_P521")  # type: ignore[arg-type]


# --- unreachable and hanging KMS ----------------------------------------------------------------


async def test_a_closed_port_is_unavailable(p256_ca: KmsCA, root: CertifiedKey) -> None:
    client = kms_client(f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(SignerUnavailable) as load_err:
        await load_kms_signer(client, "alias/issuer-ca", issuer_certificate=p256_ca.issuing, roots=[root.certificate])
    signer = KmsSigner(
        client=client, key_id="alias/issuer-ca", issuer_certificate=p256_ca.issuing, roots=[root.certificate]
    )
    with pytest.raises(SignerUnavailable) as sign_err:
        await sign(signer, template(), generate_private_key("ec-p256").public_key())
    for err in (load_err.value, sign_err.value):
        assert (type(err), err.code, err.status_hint, err.retry_after) == (
            SignerUnavailable,
            "ca_signer_unavailable",
            503,
            5,
        )
        assert "EndpointConnectionError" in err.reason
    assert "alias/issuer-ca" in load_err.value.detail and "alias/issuer-ca" not in sign_err.value.detail


@pytest.mark.parametrize("bound_by", ["signer", "botocore"])
async def test_a_silent_server_is_unavailable_within_the_bound(
    p256_ca: KmsCA, root: CertifiedKey, bound_by: str
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    # A listener that never answers: the connection is made, the reply never comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        # Either the signer's call_timeout or botocore's read_timeout is the shorter bound.
        read_timeout, call_timeout = (60.0, 0.5) if bound_by == "signer" else (0.3, 60.0)
        client = kms_client(url, read_timeout=read_timeout, max_attempts=1)
        signer = KmsSigner(
            client=client,
            key_id="alias/issuer-ca",
            issuer_certificate=p256_ca.issuing,
            roots=[root.certificate],
            call_timeout=call_timeout,
        )
        task = asyncio.create_task(ticker())
        try:
            with pytest.raises(SignerUnavailable) as err:
                # wait_for only keeps the test from hanging if both bounds were broken.
                await asyncio.wait_for(sign(signer, template(), generate_private_key("ec-p256").public_key()), 30)
        finally:
            task.cancel()
    assert err.value.code == "ca_signer_unavailable"
    assert ("did not answer kms:Sign" if bound_by == "signer" else "ReadTimeoutError") in err.value.reason
    assert ticks > 1


# --- benchmark ----------------------------------------------------------------------------------


async def _benchmark(count: int) -> None:
    with moto_server() as server:
        client = kms_client(server.url)
        root = create_root(now=NOW - timedelta(days=30))
        public_key = generate_private_key("ec-p256").public_key()
        for spec in ("ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048"):
            ca = make_kms_ca(client, root, spec)
            signer = await load_kms_signer(client, ca.alias, issuer_certificate=ca.issuing, roots=[root.certificate])
            await sign(signer, template(), public_key)  # warm the connection
            started = time.perf_counter()
            for _ in range(count):
                await sign(signer, template(), public_key)
            elapsed = time.perf_counter() - started
            print(
                f"{spec:14} {count} sequential leaves in {elapsed:.2f} s: "
                f"{count / elapsed:.0f} certificates/s, {1000 * elapsed / count:.1f} ms each"
            )


if __name__ == "__main__":
    asyncio.run(_benchmark(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
