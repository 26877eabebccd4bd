"""The operator's side of the CRLs, as real processes: ``issuer truststore publish --crls-key`` puts the
bundle in S3 beside the truststore, where the Lambda authorizer reads both; ``issuer ca root-crl``
signs an offline root's CRL where its key is brought, or imports one made elsewhere.

moto's S3 server is the bucket (as in test_publish_cli.py); the authorizer reads it with its own
SigV4 (``AWS_ENDPOINT_URL_S3``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete as sql_delete
from sqlalchemy import select

from ca.files import load_key_file
from clients.authorizer import RevocationCache, authorize
from issuer.store.engine import make_engine, make_session_factory
from issuer.store.models import CaRootCrl
from tests.integration.test_crls_bundle import load_crls
from tests.integration.test_publish import BUCKET, REGION
from tests.integration.test_publish_cli import CONFIG, TARGET, current, env, issuer, moto, one_line_error
from tests.integration.test_revocation import crl_number, issue
from tests.integration.test_revocation_crl import revoke_serial
from tests.support.harness import PASSPHRASE, running_issuer
from tests.support.moto_server import MotoServer
from tests.unit.test_authorizer import http_event

__all__ = ["env", "moto"]  # fixtures, used by name


def authorizer_env(moto: MotoServer) -> dict[str, str]:
    return {
        "ISSUER_CRLS_URL": f"s3://{BUCKET}/api/crls.pem",
        "ISSUER_TRUSTSTORE_URL": TARGET,
        "ISSUER_AUTHZ_POLICY": '{"rules": [], "default": "allow"}',
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_S3": moto.url,
    }


def decide(cert_pem: str, moto: MotoServer, cache: RevocationCache) -> dict[str, object]:
    leaf = x509.load_pem_x509_certificate(cert_pem.encode())
    return authorize(http_event(leaf), env=authorizer_env(moto), cache=cache, now=datetime.now(UTC), log=lambda _: None)


async def test_published_crls_are_what_the_authorizer_enforces(
    tmp_path: Path, env: dict[str, str], moto: MotoServer
) -> None:
    async with running_issuer(tmp_path, env["ISSUER_DATABASE_URL"], config=CONFIG) as h:
        good, bad = await issue(h, "good", role="onprem"), await issue(h, "bad", role="onprem")
        await revoke_serial(h, bad["serial"])
    done = issuer("truststore", "publish", TARGET, "--crls-key", "crls.pem", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["crls"]["uri"] == f"s3://{BUCKET}/api/crls.pem"
    assert "Built the CRL bundle: CN=test.example Issuing CA #" in done.stderr
    crls = load_crls(current("api/crls.pem")["body"])
    assert [c.issuer.rfc4514_string() for c in crls] == ["CN=test.example Issuing CA", "CN=test.example Root CA"]
    assert {format(e.serial_number, "x") for e in crls[0]} == {bad["serial"]}

    cache = RevocationCache()
    assert decide(good["certificate"], moto, cache)["isAuthorized"] is True
    denied = decide(bad["certificate"], moto, cache)
    assert denied["isAuthorized"] is False and denied["context"]["reason"] == "revoked"  # type: ignore[index]


async def stored_root_crls(db_url: str, *, delete: bool = False) -> list[tuple[int, str]]:
    engine = make_engine(db_url, pool_size=1)
    try:
        async with make_session_factory(engine)() as session, session.begin():
            rows = [(r.crl_number, r.source) for r in (await session.scalars(select(CaRootCrl))).all()]
            if delete:
                await session.execute(sql_delete(CaRootCrl))
    finally:
        await engine.dispose()
    return rows


async def test_an_offline_root_needs_its_crl_signed_where_its_key_is(tmp_path: Path, env: dict[str, str]) -> None:
    # `issuer ca init` signed the root's first CRL (its key was there); a deployment from before root
    # CRLs, whose root key is already offline, has none: that is the case here.
    assert await stored_root_crls(env["ISSUER_DATABASE_URL"], delete=True) == [(1, "signed")]
    vault = tmp_path / "vault"
    vault.mkdir()
    (tmp_path / "state" / "ca" / "root.key.pem").rename(vault / "root.key.pem")

    refused = one_line_error(issuer("truststore", "publish", TARGET, "--crls-key", "crls.pem", env=env))
    assert "no current CRL for CN=test.example Root CA" in refused and "issuer ca root-crl" in refused
    assert "not here (kept offline)" in one_line_error(issuer("ca", "root-crl", env=env))

    out = tmp_path / "root-crl.pem"
    signed = issuer("ca", "root-crl", "--key-file", str(vault / "root.key.pem"), "--out", str(out), env=env)
    assert signed.returncode == 0, signed.stderr
    assert (
        "Signed CRL 2 of the root CN=test.example Root CA" in signed.stdout
        and "sign the next one before" in signed.stdout
    )
    crl = x509.load_pem_x509_crl(out.read_bytes())
    root_key = load_key_file(vault / "root.key.pem", passphrase=PASSPHRASE.encode())
    assert crl.is_signature_valid(root_key.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None
    assert abs(crl.next_update_utc - datetime.now(UTC) - timedelta(days=180)) < timedelta(minutes=5)

    published = issuer("truststore", "publish", TARGET, "--crls-key", "crls.pem", env=env)
    assert published.returncode == 0, published.stderr
    assert crl_number(load_crls(current("api/crls.pem")["body"])[1]) == 2

    # An older copy cannot come back; a CRL made elsewhere with a higher number can be imported.
    again = one_line_error(issuer("ca", "root-crl", "--import", str(out), env=env))
    assert "CRL number 2" in again and "not above the last one used" in again
    elsewhere = tmp_path / "elsewhere.crl"
    elsewhere.write_bytes(_crl_signed_by(root_key, crl.issuer, number=7).public_bytes(serialization.Encoding.DER))
    imported = issuer("ca", "root-crl", "--import", str(elsewhere), "--json", env=env)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout) | {"this_update": "", "next_update": ""} == {
        "root_fingerprint_sha256": json.loads(imported.stdout)["root_fingerprint_sha256"],
        "subject": "CN=test.example Root CA",
        "crl_number": 7,
        "this_update": "",
        "next_update": "",
        "revoked": 0,
        "source": "imported",
        "out": None,
    }


def test_a_foreign_crl_is_not_imported(tmp_path: Path, env: dict[str, str]) -> None:
    stranger = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "test.example Root CA")])
    path = tmp_path / "foreign.crl"
    path.write_bytes(_crl_signed_by(stranger, name, number=99).public_bytes(serialization.Encoding.PEM))
    line = one_line_error(issuer("ca", "root-crl", "--import", str(path), env=env))
    assert "not signed by any active registered root" in line
    garbage = tmp_path / "garbage.crl"
    garbage.write_bytes(b"not a crl")
    assert "not a CRL" in one_line_error(issuer("ca", "root-crl", "--import", str(garbage), env=env))
    mixed = issuer("ca", "root-crl", "--import", str(path), "--root", "abcd", env=env)
    assert mixed.returncode == 2


def _crl_signed_by(key: object, name: x509.Name, *, number: int) -> x509.CertificateRevocationList:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(now - timedelta(minutes=1))
        .next_update(now + timedelta(days=90))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    return builder.sign(key, hashes.SHA384())  # type: ignore[arg-type]
