"""Revoking an EC2 instance: its certificates go, and its trust-on-first-use binding is kept or forgotten.

Real AWS-shaped identity documents signed by a stand-in AWS key pinned for one region; the
binding's fate is checked by attesting again (with and without the instance's nonce).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from issuer.attest.ec2_certs import AwsCertStore
from issuer.errors import ClientError, NotFound
from issuer.service.revocation.revoke import RevocationTarget, revoke
from issuer.store.models import InstanceBinding
from tests.integration.test_revocation import EC2_CONFIG, audit_rows, crl_serials, get_crl, issue
from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign
from tests.support.harness import Harness, new_csr, running_issuer

INSTANCE = "i-0123456789abcdef0"


def ec2_request(
    aws: FakeAwsSigner, *, nonce: str | None = None, pending: str = "2026-02-16T00:38:27Z"
) -> dict[str, str]:
    raw = build_document(instance_id=INSTANCE, pending_time=pending)
    body = {"csr": new_csr()[1], "document": raw.decode(), "rsa2048": sign(raw, aws, "rsa2048")}
    if nonce is not None:
        body["nonce"] = nonce
    return body


async def binding_rows(h: Harness) -> list[InstanceBinding]:
    async with h.service.sessions() as session:
        return list((await session.scalars(select(InstanceBinding))).all())


@pytest.mark.parametrize("reset_binding", [False, True])
async def test_revoke_an_instance_and_say_what_happens_to_its_binding(
    tmp_path: Path, pg_url: str, reset_binding: bool
) -> None:
    aws = FakeAwsSigner.create(kind="rsa2048")
    certs = AwsCertStore.builtin(extra={"eu-west-1": [aws.cert]})
    async with running_issuer(tmp_path, pg_url, config=EC2_CONFIG, aws_certs=certs) as h:
        status, first = await h.post("/v1/issue/aws-ec2", ec2_request(aws))
        assert status == 201, first
        nonce = first["nonce"]
        status, second = await h.post("/v1/issue/aws-ec2", ec2_request(aws, nonce=nonce))
        assert status == 201, second
        token_cert = await issue(h, "bystander")

        done = await revoke(
            h.service.sessions,
            RevocationTarget("instance", INSTANCE),
            reason="keyCompromise",
            now=datetime.now(UTC),
            reset_binding=reset_binding,
        )
        assert sorted(c.serial for c in done.revoked) == sorted([first["serial"], second["serial"]])
        assert {c.method for c in done.revoked} == {"aws-ec2"}
        assert done.binding == ("forgotten" if reset_binding else "kept")
        statuses = {c.serial: c.status for c in await h.certificates()}
        assert statuses[token_cert["serial"]] == "active"
        assert set(crl_serials(await get_crl(h))) == {first["serial"], second["serial"]}
        resets = await audit_rows(h, code="binding_reset")

        if reset_binding:
            # The nonce the instance (or a thief) holds is worthless; a new attestation binds it anew.
            assert await binding_rows(h) == []
            assert [(a.principal, a.request_id) for a in resets] == [(INSTANCE, done.request_id)]
            status, rebound = await h.post("/v1/issue/aws-ec2", ec2_request(aws))
            assert status == 201, rebound
            assert rebound["nonce"] != nonce
        else:
            assert len(await binding_rows(h)) == 1 and resets == []
            # Without the nonce the instance is refused; with it, it gets a new certificate.
            status, problem = await h.post("/v1/issue/aws-ec2", ec2_request(aws))
            assert (status, problem["code"]) == (401, "ec2_nonce_required")
            status, again = await h.post("/v1/issue/aws-ec2", ec2_request(aws, nonce=nonce))
            assert status == 201, again


async def test_revoke_instance_refusals(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        now = datetime.now(UTC)
        with pytest.raises(ClientError) as invalid:
            await revoke(h.service.sessions, RevocationTarget("instance", "web-1"), reason="unspecified", now=now)
        assert invalid.value.code == "instance_invalid"
        with pytest.raises(NotFound) as unknown:
            await revoke(h.service.sessions, RevocationTarget("instance", INSTANCE), reason="unspecified", now=now)
        assert unknown.value.code == "instance_not_found"
