"""The service with its issuing key in AWS KMS: moto's KMS server as the peer, a migrated Postgres,
openssl checking every leaf (alone, against GET /v1/truststore, as API Gateway does) and the CRL.

The app loads the signer through its default loader (``KeySigners`` → ``issuer.aws.kms.KmsClients``),
which reaches moto because ``AWS_ENDPOINT_URL_KMS`` points there: nothing KMS-specific is injected.
No ``ISSUER_CA_PASSPHRASE`` is set and the root key is moved away before serving.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from sqlalchemy import update

from ca.kms import KmsSigner
from ca.kms_setup import create_kms_key
from issuer.attest.ec2_certs import AwsCertStore
from issuer.aws.kms import KmsClients, is_key_arn, parse_kms_arn
from issuer.errors import ConfigError, UpstreamUnavailable
from issuer.service.ca.kms import KmsCA, KmsKeyChoice, init_kms_ca
from issuer.service.ca.observed import ObservedSigner
from issuer.service.revocation.revoke import RevocationTarget, revoke
from issuer.store.engine import make_engine, make_session_factory
from issuer.store.models import CaIssuer
from tests.integration import test_ec2_issue as ec2
from tests.integration import test_iam_issue as iam
from tests.support.fake_aws_iid import FakeAwsSigner
from tests.support.harness import Harness, check_issued, check_leaf_against_truststore, new_csr, running_issuer
from tests.support.moto_iam import MotoIam, moto_iam
from tests.support.moto_server import MotoServer, fake_aws_credentials, free_port, moto_server
from tests.support.tcp_proxy import TcpProxy
from tests.support.x509_check import openssl_verify_crl

REGION = "eu-west-1"
ARN_START = f"arn:aws:kms:{REGION}:123456789012:key/"
PASSPHRASE = b"kms-test-root-passphrase-0123456789"
# An empty ISSUER_CA_PASSPHRASE is no passphrase at all (load_settings), and the state
# directory has no ca-passphrase file: any attempt to read one fails the test.
NO_PASSPHRASE = {"ISSUER_CA_PASSPHRASE": ""}


@pytest.fixture(scope="module")
def kms_moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as mp:
        fake_aws_credentials(mp, region=REGION)
        with moto_server() as server:
            yield server


@pytest.fixture
def kms_env(monkeypatch: pytest.MonkeyPatch, kms_moto: MotoServer) -> MotoServer:
    """boto3 in this process reaches moto's KMS through botocore's own endpoint setting."""
    fake_aws_credentials(monkeypatch, region=REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms_moto.url)
    return kms_moto


def alias(what: str) -> str:
    return f"alias/test-{what}-{secrets.token_hex(4)}"


def kms_client(url: str) -> Any:
    return boto3.client("kms", region_name=REGION, endpoint_url=url)


@asynccontextmanager
async def sessions_of(db_url: str) -> AsyncIterator[Any]:
    engine = make_engine(db_url, pool_size=2)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def make_kms_ca(tmp_path: Path, db_url: str, *, root_in_kms: bool = False) -> KmsCA:
    """``issuer ca init --create-kms-key`` (and ``--create-root-kms-key``) as a use case, into ``tmp_path/state``."""
    async with sessions_of(db_url) as sessions:
        return await init_kms_ca(
            sessions,
            ca_dir=tmp_path / "state" / "ca",
            kms=KmsClients(),
            issuing=KmsKeyChoice(create_alias=alias("issuing")),
            root=KmsKeyChoice(create_alias=alias("root"), key_spec="ECC_NIST_P384") if root_in_kms else None,
            passphrase=None if root_in_kms else (lambda: PASSPHRASE),
            now=datetime.now(UTC),
            root_validity=timedelta(days=3650),
            issuing_validity=timedelta(days=365),
            trust_domain="test.example",
        )


def take_root_key_offline(tmp_path: Path) -> None:
    root_key = tmp_path / "state" / "ca" / "root.key.pem"
    if root_key.exists():
        vault = tmp_path / "vault"
        vault.mkdir(exist_ok=True)
        root_key.rename(vault / "root.key.pem")


async def set_key_ref(db_url: str, issuer_id: int, key_ref: str) -> None:
    """An operator's mistake, made directly in the registry: the issuer names another key."""
    async with sessions_of(db_url) as sessions, sessions() as session, session.begin():
        await session.execute(update(CaIssuer).where(CaIssuer.id == issuer_id).values(key_ref=key_ref))


async def issue_token(h: Harness, name: str) -> dict[str, Any]:
    status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name=name)})
    assert status == 201, body
    return body


# -- set-up ----------------------------------------------------------------------------------------


async def test_init_registers_the_key_arn_and_writes_no_issuing_key(tmp_path: Path, pg_url: str, kms_env: Any) -> None:
    ca = await make_kms_ca(tmp_path, pg_url)
    ca_dir = tmp_path / "state" / "ca"
    arn = ca.issuing_key_ref.removeprefix("kms:")
    assert ca.issuing_key_ref.startswith("kms:" + ARN_START) and is_key_arn(arn)
    assert ca.created_keys == (arn,) and ca.root_key_ref == "file:root.key.pem"
    assert sorted(p.name for p in ca_dir.iterdir()) == ["issuing.pem", "registered.json", "root.key.pem", "root.pem"]
    assert x509.load_pem_x509_certificate((ca_dir / "issuing.pem").read_bytes()) == ca.issuing
    ca.issuing.verify_directly_issued_by(ca.root)
    assert ca.issuing.subject.rfc4514_string() == "CN=test.example Issuing CA"
    # The ARN KMS reports, even though moto's GetPublicKey answers with the bare key id.
    described = kms_client(kms_env.url).describe_key(KeyId=arn)["KeyMetadata"]
    assert (described["Arn"], described["KeyUsage"], described["KeySpec"]) == (arn, "SIGN_VERIFY", "ECC_NIST_P256")


# -- issuing for every method ------------------------------------------------------------------------


async def test_token_leaf_and_crl_from_a_kms_issuer_verify_with_openssl(
    tmp_path: Path, db_url: str, kms_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = await make_kms_ca(tmp_path, db_url)
    take_root_key_offline(tmp_path)
    # The key's region comes from its ARN: a replica configured for another region still finds it
    # (moto, like KMS, does not know an eu-west-1 key in us-east-1).
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    async with running_issuer(tmp_path, db_url, env=NO_PASSPHRASE) as h:
        signer = h.service.registry.snapshot.active.signer
        assert isinstance(signer, ObservedSigner) and signer.backend == "kms"  # timed and counted as "kms"
        assert isinstance(signer.inner, KmsSigner) and signer.issuer_certificate == ca.issuing
        key, csr = new_csr()
        status, body = await h.post("/v1/issue/token", {"csr": csr, "token": await h.token(name="kms-1")})
        assert status == 201, body
        leaf = check_issued(body, key=key)
        await check_leaf_against_truststore(h, body)
        assert leaf.issuer == ca.issuing.subject
        leaf.verify_directly_issued_by(ca.issuing)

        ready = await h.client.get("/readyz")
        assert ready.status == 200, await ready.text()

        await revoke(
            h.service.sessions,
            RevocationTarget("serial", body["serial"]),
            reason="keyCompromise",
            now=datetime.now(UTC),
        )
        resp = await h.client.get("/v1/crl")
        assert resp.status == 200, await resp.text()
        crl = x509.load_der_x509_crl(await resp.read())
        assert crl.issuer == ca.issuing.subject
        assert [format(r.serial_number, "x") for r in crl] == [body["serial"]]
        truststore = await (await h.client.get("/v1/truststore")).read()
        openssl_verify_crl(crl, truststore)


async def test_ec2_leaf_from_a_kms_issuer(tmp_path: Path, pg_url: str, kms_env: Any) -> None:
    aws = FakeAwsSigner.create(kind="rsa2048")
    certs = AwsCertStore.builtin(extra={ec2.REGION: [aws.cert]})
    await make_kms_ca(tmp_path, pg_url)
    take_root_key_offline(tmp_path)
    async with running_issuer(
        tmp_path, pg_url, config=ec2.config(ec2.OPEN_ROLE), env=NO_PASSPHRASE, aws_certs=certs
    ) as h:
        status, body = await h.post(ec2.PATH, ec2.body(ec2.proof(aws)))
        assert status == 201, body
        check_issued(body)
        await check_leaf_against_truststore(h, body)
        assert body["identity"]["method"] == "aws-ec2"


@pytest.fixture(scope="module")
def sts() -> Iterator[MotoIam]:
    with moto_iam() as m:  # its own moto, with request signatures checked
        yield m


async def test_iam_leaf_from_a_kms_issuer(tmp_path: Path, pg_url: str, kms_env: Any, sts: MotoIam) -> None:
    await make_kms_ca(tmp_path, pg_url)
    take_root_key_offline(tmp_path)
    async with running_issuer(tmp_path, pg_url, config=iam.config(iam.to_moto(sts)), env=NO_PASSPHRASE) as h:
        key, csr = new_csr()
        status, body = await h.post(iam.PATH, iam.issue_body(csr, "builders", iam.native(iam.sign(sts.user, csr))))
        assert status == 201, body
        check_issued(body, key=key)
        await check_leaf_against_truststore(h, body)
        assert body["identity"]["principal"] == sts.user_arn


# -- refusals at start-up -----------------------------------------------------------------------------


async def test_a_kms_key_that_is_not_the_certificates_is_refused_at_start_up(
    tmp_path: Path, pg_url: str, kms_env: Any
) -> None:
    ca = await make_kms_ca(tmp_path, pg_url)
    other = create_kms_key(kms_client(kms_env.url), key_spec="ECC_NIST_P256")
    other_arn = kms_client(kms_env.url).describe_key(KeyId=other.key_id)["KeyMetadata"]["Arn"]
    await set_key_ref(pg_url, ca.registered.issuer_id, f"kms:{other_arn}")
    with pytest.raises(ConfigError) as refused:
        async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE):
            pass
    detail = refused.value.detail
    assert refused.value.code == "ca_kms_key_mismatch" and "\n" not in detail
    assert other_arn in detail and "CN=test.example Issuing CA" in detail and "public keys differ" in detail

    # The registry never names a key by alias: the key behind an alias can change.
    await set_key_ref(pg_url, ca.registered.issuer_id, f"kms:{alias('moved')}")
    with pytest.raises(ConfigError) as by_alias:
        async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE):
            pass
    assert by_alias.value.code == "kms_key_ref_invalid"

    # The control: its own key starts.
    await set_key_ref(pg_url, ca.registered.issuer_id, ca.issuing_key_ref)
    async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE) as h:
        await issue_token(h, "control")


async def test_kms_unreachable_at_start_up_fails_naming_the_key(
    tmp_path: Path, pg_url: str, kms_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = await make_kms_ca(tmp_path, pg_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(UpstreamUnavailable) as refused:
        async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE):
            pass
    detail = refused.value.detail
    assert refused.value.code == "ca_signer_unavailable" and "\n" not in detail
    assert ca.issuing_key_ref.removeprefix("kms:") in detail and "could not be reached" in detail


# -- an outage while serving ------------------------------------------------------------------------


async def test_kms_outage_gives_503_with_retry_after_and_the_token_survives(
    tmp_path: Path, pg_url: str, kms_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_kms_ca(tmp_path, pg_url)
    proxy = TcpProxy("127.0.0.1", kms_env.port)
    await proxy.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", f"http://127.0.0.1:{proxy.port}")
    try:
        async with running_issuer(tmp_path, pg_url, env=NO_PASSPHRASE) as h:
            token = await h.token(name="through-an-outage")
            await proxy.cut()
            resp = await h.client.post("/v1/issue/token", json={"csr": new_csr()[1], "token": token})
            problem = await resp.json(content_type=None)
            assert (resp.status, problem["code"]) == (503, "ca_signer_unavailable"), problem
            assert resp.headers["Retry-After"] == "5"
            assert "arn:" not in problem["detail"]  # the key is named in the log, not to the client
            assert await h.certificates() == []
            (audit,) = await h.attestations()
            assert (audit.outcome, audit.code) == ("failure", "ca_signer_unavailable")

            ready = await h.client.get("/readyz")
            assert ready.status == 503, await ready.text()
            assert "signer: unavailable" in (await ready.json(content_type=None))["detail"]

            await proxy.restore()
            # The token was not used up by the failed attempt: the transaction rolled back.
            resp = await h.client.post("/v1/issue/token", json={"csr": new_csr()[1], "token": token})
            body = await resp.json()
            assert resp.status == 201, body
            check_issued(body)
            await check_leaf_against_truststore(h, body)
            assert (await h.client.get("/readyz")).status == 200
    finally:
        await proxy.cut()


# -- which region a key is asked in --------------------------------------------------------------------


class _Session:
    def __init__(self, region: str | None) -> None:
        self.region_name = region


def test_the_region_comes_from_the_arn_then_the_option_then_the_environment() -> None:
    arn = f"{ARN_START}1234abcd-12ab-34cd-56ef-1234567890ab"
    assert parse_kms_arn(arn) is not None and is_key_arn(arn)
    assert not is_key_arn(f"arn:aws:kms:{REGION}:123456789012:alias/issuer") and not is_key_arn("alias/issuer")
    configured = KmsClients(region="us-west-2", env={"AWS_REGION": "ap-south-1"}, session_factory=lambda: _Session("x"))
    assert configured.region_for(arn) == REGION
    assert configured.region_for("alias/issuer") == "us-west-2"
    from_env = KmsClients(env={"AWS_REGION": "ap-south-1"}, session_factory=lambda: _Session("sa-east-1"))
    assert from_env.region_for("1234abcd-12ab-34cd-56ef-1234567890ab") == "ap-south-1"
    assert KmsClients(env={}, session_factory=lambda: _Session("sa-east-1")).region_for("alias/a") == "sa-east-1"
    with pytest.raises(ConfigError) as unknown:
        KmsClients(env={}, session_factory=lambda: _Session(None)).region_for("alias/a")
    assert unknown.value.code == "kms_region_unknown" and "alias/a" in unknown.value.detail
