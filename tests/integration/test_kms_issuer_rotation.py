"""Rotating the issuing CA onto a key in AWS KMS (moto's server), with overlap, on Postgres.

From a file key to a KMS key (both leaves valid against GET /v1/truststore while both issuers are
in it), under a root whose key is itself in KMS (no passphrase is ever asked for), a KMS root whose
key is not the root certificate's (refused), and an alias moved after registration (the registry's
key ARN keeps signing with the CA's own key).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import update

from ca.kms import KmsSigner
from ca.kms_setup import create_kms_key
from issuer.aws.kms import KmsClients
from issuer.errors import ConfigError
from issuer.service.ca.kms import KmsKeyChoice
from issuer.service.ca.rotation import Rotation, activate, rotate_issuer
from issuer.service.ca.signers import KeySigners
from issuer.store.models import CaRoot
from tests.integration.test_kms_issuer import (
    NO_PASSPHRASE,
    alias,
    issue_token,
    kms_client,
    kms_env,
    kms_moto,
    make_kms_ca,
    sessions_of,
    take_root_key_offline,
)
from tests.support.harness import PASSPHRASE, Harness, check_issued, check_leaf_against_truststore, running_issuer

__all__ = ["kms_env", "kms_moto"]  # fixtures, imported for pytest

CONFIG_WITH_QUICK_REFRESH = """
[issuer]
trust_domain = "test.example"
registry_refresh = "1s"

[[roles]]
name = "onprem"
methods = ["token"]
ttl = "24h"
max_ttl = "72h"
"""


def never() -> bytes:
    raise AssertionError("the passphrase was asked for, though no file key is involved")


async def rotate_to_kms(db_url: str, ca_dir: Path, choice: KmsKeyChoice, passphrase: Any = never) -> Rotation:
    async with sessions_of(db_url) as sessions:
        return await rotate_issuer(
            sessions,
            ca_dir=ca_dir,
            passphrase=passphrase,
            now=datetime.now(UTC),
            validity=timedelta(days=90),
            min_validity=timedelta(days=3),
            trust_domain="test.example",
            kms_key=choice,
            kms=KmsClients(),
        )


async def activate_new(db_url: str, ca_dir: Path) -> None:
    async with sessions_of(db_url) as sessions:
        await activate(
            sessions,
            fingerprint=None,
            now=datetime.now(UTC),
            min_validity=timedelta(days=3),
            load_signer=KeySigners(ca_dir=ca_dir, passphrase=never),
        )


async def switch_to(h: Harness, certificate_pem: str) -> None:
    """This replica follows the registry now (replicas do it within registry_refresh)."""
    await h.service.registry.refresh()
    assert h.service.registry.snapshot.active.certificate == x509.load_pem_x509_certificate(certificate_pem.encode())


async def test_file_key_to_kms_key_with_both_leaves_valid_in_the_overlap(
    tmp_path: Path, pg_url: str, kms_env: Any
) -> None:
    ca_dir = tmp_path / "state" / "ca"
    async with running_issuer(tmp_path, pg_url, config=CONFIG_WITH_QUICK_REFRESH) as h:  # a file CA, as today
        old = await issue_token(h, "before")
        rotation = await rotate_to_kms(
            pg_url, ca_dir, KmsKeyChoice(create_alias=alias("rotated")), passphrase=lambda: PASSPHRASE.encode()
        )
        new = rotation.issuer
        assert rotation.key_path is None and new.key_ref == f"kms:{rotation.created_kms_key}"
        assert new.state == "prepared" and rotation.root.key_ref == "file:root.key.pem"
        assert rotation.certificate_path == ca_dir / f"issuing-{new.fingerprint_sha256[:16]}.pem"
        assert (
            x509.load_pem_x509_certificate(rotation.certificate_path.read_bytes()).fingerprint(hashes.SHA256()).hex()
            == new.fingerprint_sha256
        )
        assert list(ca_dir.glob("issuing-*.key.pem")) == []

        # Prepared: in the truststore before it signs anything; the old issuer still signs.
        await h.service.registry.refresh()
        truststore = await (await h.client.get("/v1/truststore")).read()
        assert new.certificate_pem.encode() in truststore
        await check_leaf_against_truststore(h, old)

        await activate_new(pg_url, ca_dir)
        await switch_to(h, new.certificate_pem)
        assert isinstance(h.service.registry.snapshot.active.signer.inner, KmsSigner)  # type: ignore[attr-defined]
        fresh = await issue_token(h, "after")
        leaf = check_issued(fresh)
        assert leaf.issuer.rfc4514_string() == new.subject
        # The overlap: both issuers' leaves verify alone against the one truststore.
        for body in (old, fresh):
            await check_leaf_against_truststore(h, body)
        assert x509.load_pem_x509_certificate(old["certificate"].encode()).issuer.rfc4514_string() != new.subject


async def test_a_kms_root_certifies_a_kms_issuer_without_any_passphrase(
    tmp_path: Path, pg_url: str, kms_env: Any
) -> None:
    ca = await make_kms_ca(tmp_path, pg_url, root_in_kms=True)
    ca_dir = tmp_path / "state" / "ca"
    assert ca.root_key_ref.startswith("kms:arn:aws:kms:") and sorted(p.name for p in ca_dir.iterdir()) == [
        "issuing.pem",
        "registered.json",
        "root.pem",
    ]
    assert not (tmp_path / "state" / "ca-passphrase").exists()
    async with running_issuer(tmp_path, pg_url, config=CONFIG_WITH_QUICK_REFRESH, env=NO_PASSPHRASE) as h:
        old = await issue_token(h, "under-the-first")
        rotation = await rotate_to_kms(pg_url, ca_dir, KmsKeyChoice(create_alias=alias("second")))
        assert rotation.root.key_ref == ca.root_key_ref
        await activate_new(pg_url, ca_dir)
        await switch_to(h, rotation.issuer.certificate_pem)
        fresh = await issue_token(h, "under-the-second")
        x509.load_pem_x509_certificate(rotation.issuer.certificate_pem.encode()).verify_directly_issued_by(ca.root)
        for body in (old, fresh):
            check_issued(body)
            await check_leaf_against_truststore(h, body)


async def test_a_kms_root_whose_key_is_not_the_roots_is_refused(tmp_path: Path, pg_url: str, kms_env: Any) -> None:
    ca = await make_kms_ca(tmp_path, pg_url, root_in_kms=True)
    ca_dir = tmp_path / "state" / "ca"
    other = create_kms_key(kms_client(kms_env.url), key_spec="ECC_NIST_P384")
    other_arn = kms_client(kms_env.url).describe_key(KeyId=other.key_id)["KeyMetadata"]["Arn"]
    async with sessions_of(pg_url) as sessions, sessions() as session, session.begin():
        await session.execute(update(CaRoot).values(key_ref=f"kms:{other_arn}"))
    with pytest.raises(ConfigError) as refused:
        await rotate_to_kms(pg_url, ca_dir, KmsKeyChoice(create_alias=alias("never-made")))
    assert refused.value.code == "root_key_mismatch" and other_arn in refused.value.detail
    # Refused before a key was created: no second issuing certificate was written either.
    assert sorted(p.name for p in ca_dir.iterdir()) == ["issuing.pem", "registered.json", "root.pem"]

    # A file issuing key under a KMS root is refused in so many words (the control key ref is back).
    async with sessions_of(pg_url) as sessions, sessions() as session, session.begin():
        await session.execute(update(CaRoot).values(key_ref=ca.root_key_ref))
    async with sessions_of(pg_url) as sessions:
        with pytest.raises(ConfigError) as file_key:
            await rotate_issuer(
                sessions,
                ca_dir=ca_dir,
                passphrase=never,
                now=datetime.now(UTC),
                validity=timedelta(days=90),
                min_validity=timedelta(days=3),
                trust_domain="test.example",
                kms=KmsClients(),
            )
    assert file_key.value.code == "issuer_key_kind" and "--kms-key" in file_key.value.detail
    # The control: the root's own key certifies.
    assert (await rotate_to_kms(pg_url, ca_dir, KmsKeyChoice(create_alias=alias("made")))).issuer.state == "prepared"


async def test_moving_the_alias_does_not_move_the_issuers_key(tmp_path: Path, pg_url: str, kms_env: Any) -> None:
    ca_dir = tmp_path / "state" / "ca"
    client = kms_client(kms_env.url)
    name = alias("by-alias")
    create_kms_key(client, key_spec="ECC_NIST_P256", alias=name)
    async with running_issuer(tmp_path, pg_url, config=CONFIG_WITH_QUICK_REFRESH) as h:
        rotation = await rotate_to_kms(
            pg_url, ca_dir, KmsKeyChoice(key_id=name), passphrase=lambda: PASSPHRASE.encode()
        )
        target = client.describe_key(KeyId=name)["KeyMetadata"]["Arn"]
        assert rotation.issuer.key_ref == f"kms:{target}" and rotation.created_kms_key is None
        await activate_new(pg_url, ca_dir)
        await switch_to(h, rotation.issuer.certificate_pem)
        # Someone points the alias at another key: the registry names the key, not the alias.
        elsewhere = create_kms_key(client, key_spec="ECC_NIST_P256")
        client.update_alias(AliasName=name, TargetKeyId=elsewhere.key_id)
        assert client.describe_key(KeyId=name)["KeyMetadata"]["Arn"] != target
    take_root_key_offline(tmp_path)
    async with running_issuer(tmp_path, pg_url, config=CONFIG_WITH_QUICK_REFRESH, env=NO_PASSPHRASE) as h:
        body = await issue_token(h, "after-the-alias-moved")
        check_issued(body)
        await check_leaf_against_truststore(h, body)
        assert check_issued(body).issuer.rfc4514_string() == rotation.issuer.subject
