"""Checkpoints signed in AWS KMS (moto's server): by an issuing CA whose key is in KMS, and by a dedicated
``[audit] checkpoint_kms_key`` — the one choice when the issuing CA is AWS Private CA, which signs nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from issuer.audit.checkpoints import CheckpointKeys
from issuer.errors import ConfigError
from issuer.http.keys import AUDIT
from issuer.store.records import IssuerRecord
from tests.integration.test_kms_issuer import (
    NO_PASSPHRASE,
    REGION,
    kms_env,
    kms_moto,
    make_kms_ca,
    take_root_key_offline,
)
from tests.support.audit_trail import Trail, issue, refuse, verify
from tests.support.harness import BASE_CONFIG, running_issuer

__all__ = ["kms_env", "kms_moto"]  # the fixtures, re-used


def signing_key(url: str) -> str:
    kms = boto3.client("kms", region_name=REGION, endpoint_url=url)
    return str(kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P384")["KeyMetadata"]["Arn"])


async def test_an_issuing_key_in_kms_signs_checkpoints(tmp_path: Path, pg_url: str, kms_env: Any) -> None:
    await make_kms_ca(tmp_path, pg_url)
    take_root_key_offline(tmp_path)
    async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE, seal_every=None) as h:
        await issue(h, "a")
        sealer = h.client.app[AUDIT].sealer
        await sealer.seal_once()
        checkpoint = await sealer.checkpoint_once(force=True)
    assert checkpoint is not None and checkpoint.key_ref.startswith("x509:") and checkpoint.algorithm == "ECDSA_SHA_256"
    report = await verify(Trail(url=pg_url, state=tmp_path / "state", ids=()))
    assert report.ok and report.checkpoints == 1, report.findings


async def test_a_dedicated_kms_key_signs_checkpoints(tmp_path: Path, db_url: str, kms_env: Any) -> None:
    arn = signing_key(kms_env.url)
    config = BASE_CONFIG + f'\n[audit]\ncheckpoint_kms_key = "{arn}"\n'
    async with running_issuer(tmp_path, db_url, config=config, seal_every=None) as h:
        await issue(h, "a")
        await refuse(h)
        sealer = h.client.app[AUDIT].sealer
        await sealer.seal_once()
        checkpoint = await sealer.checkpoint_once(force=True)
    assert checkpoint is not None and checkpoint.key_ref == f"kms:{arn}" and checkpoint.algorithm == "ECDSA_SHA_384"
    trail = Trail(url=db_url, state=tmp_path / "state", ids=())
    from issuer.audit.verifier import KeyTrust, verify_chain
    from tests.support.audit_trail import sessions_of

    async def check(named: frozenset[str]):  # type: ignore[no-untyped-def]
        async with sessions_of(trail.url) as sessions:
            return await verify_chain(
                sessions, now=datetime.now(UTC), trust=KeyTrust(roots=trail.roots, kms_keys=named)
            )

    assert (await check(frozenset({arn}))).ok
    other = signing_key(kms_env.url)
    refused = await check(frozenset({other}))
    assert [f.kind for f in refused.findings] == ["checkpoint"] and "which you did not name" in refused.findings[
        0
    ].detail


def private_ca_issuer() -> IssuerRecord:
    now = datetime.now(UTC)
    return IssuerRecord(
        id=1,
        fingerprint_sha256="ab" * 32,
        subject="CN=Private CA",
        serial="1",
        certificate_pem="",
        chain_pem="",
        key_ref="pca:arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/0b1c",
        state="active",
        not_before=now,
        not_after=now,
        created_at=now,
        updated_at=now,
        activated_at=now,
        retired_at=None,
    )


async def test_aws_private_ca_needs_a_checkpoint_kms_key(tmp_path: Path, kms_env: Any) -> None:
    def no_passphrase() -> bytes:
        raise AssertionError("no key file is read")

    keys = CheckpointKeys(ca_dir=tmp_path, passphrase=no_passphrase)
    with pytest.raises(ConfigError, match="checkpoint_kms_key") as refused:
        await keys.signer_for(private_ca_issuer())
    assert refused.value.code == "audit_checkpoint_key_missing"
    arn = signing_key(kms_env.url)
    signer = await CheckpointKeys(ca_dir=tmp_path, passphrase=no_passphrase, kms_key=arn).signer_for(
        private_ca_issuer()
    )
    assert signer.key_ref == f"kms:{arn}" and len(await signer.sign(b"checkpoint")) > 64
