"""POST /v1/issue/aws-ec2 end to end: the real app on a migrated Postgres, real AWS-signed
identity documents, a stand-in AWS signer for the documents a test must shape, moto's
server as EC2 for the liveness check, and openssl checking every certificate handed out.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from sqlalchemy import select

from issuer.attest.ec2_certs import AwsCertStore
from issuer.hashing import hash_secret
from issuer.service.admin import operations as admin
from issuer.store.models import InstanceBinding
from tests.support.fake_aws_iid import FakeAwsSigner, Form, build_document, sign
from tests.support.harness import Harness, check_issued, check_leaf_against_truststore, new_csr, running_issuer
from tests.support.moto_server import MotoServer, fake_aws_credentials, free_port, moto_server
from tests.support.scripted_signer import ScriptedSigner

PATH = "/v1/issue/aws-ec2"
DATA = Path(__file__).resolve().parents[1] / "data" / "iid"
REGION = "eu-west-1"  # where the stand-in AWS certificate is pinned
ACCOUNT = "123456789012"  # the stand-in documents' account, and moto's
AMI = "ami-0abcdef1234567890"  # build_document's default image

# vector -> (account, region, instance, the signature forms it has)
REAL: dict[str, tuple[str, str, str, tuple[Form, ...]]] = {
    "2018-us-west-2": ("692406183521", "us-west-2", "i-0a30e04d85e6f8793", ("rsa2048", "pkcs7", "signature")),
    "2026-ap-southeast-2": ("189292791360", "ap-southeast-2", "i-0c5541936caf78c12", ("rsa2048", "signature")),
}
REAL_CASES = [(vector, form) for vector, (*_, forms) in REAL.items() for form in forms]

# The real AWS vectors are years old: only a role that accepts unbounded documents takes them.
OPEN_ROLE: dict[str, object] = {"name": "fleet", "methods": ["aws-ec2"], "allow_unbounded_documents": True}


# -- helpers ---------------------------------------------------------------------------


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def config(*roles: Mapping[str, object], ec2: Mapping[str, object] | None = None) -> str:
    """An issuer.toml with ``roles`` (and an ``[aws.ec2]`` table)."""
    lines = ["[issuer]", 'trust_domain = "test.example"', ""]
    if ec2:
        lines += ["[aws.ec2]", *(f"{k} = {_toml(v)}" for k, v in ec2.items()), ""]
    for role in roles:
        lines += ["[[roles]]", *(f"{k} = {_toml(v)}" for k, v in role.items()), ""]
    return "\n".join(lines)


def _read(vector: str, name: str) -> str:
    return (DATA / vector / name).read_text()


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def proof(signer: FakeAwsSigner, form: Form = "rsa2048", **document: Any) -> dict[str, str]:
    """The request fields of a stand-in AWS signed document built with ``document``'s fields."""
    raw = build_document(**document)
    return {"document": raw.decode(), form: sign(raw, signer, form)}


def body(proof_fields: Mapping[str, str], *, nonce: str | None = None, role: str | None = None) -> dict[str, str]:
    out = {"csr": new_csr()[1], **proof_fields}
    if nonce is not None:
        out["nonce"] = nonce
    if role is not None:
        out["role"] = role
    return out


async def bindings(h: Harness) -> list[InstanceBinding]:
    async with h.service.sessions() as session:
        return list((await session.scalars(select(InstanceBinding).order_by(InstanceBinding.id))).all())


async def refused(h: Harness, request: Mapping[str, Any], *, status: int, code: str) -> dict[str, Any]:
    """POST ``request``, assert a problem+json refusal with ``status``/``code`` that issued
    nothing and left exactly one failure audit row; return the problem document."""
    certs_before = len(await h.certificates())
    resp = await h.client.post(PATH, data=json.dumps(request), headers={"Content-Type": "application/json"})
    problem: dict[str, Any] = await resp.json(content_type=None)
    assert (resp.status, problem.get("code")) == (status, code), problem
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert problem["type"].endswith(code)
    assert problem["request_id"] == resp.headers["X-Request-ID"]
    assert len(await h.certificates()) == certs_before
    audit = [a for a in await h.attestations() if a.request_id == problem["request_id"]]
    assert [(a.outcome, a.method, a.code) for a in audit] == [("failure", "aws-ec2", code)]
    assert audit[0].reason
    return problem


@pytest.fixture(scope="module")
def aws() -> FakeAwsSigner:
    return FakeAwsSigner.create(kind="rsa2048")


@pytest.fixture(scope="module")
def aws_certs(aws: FakeAwsSigner) -> AwsCertStore:
    # The stand-in is pinned for one region only, next to every shipped AWS certificate.
    return AwsCertStore.builtin(extra={REGION: [aws.cert]})


# -- real AWS documents ----------------------------------------------------------------


@pytest.mark.parametrize(("vector", "form"), REAL_CASES)
async def test_real_aws_document_issues_a_certificate(tmp_path: Path, pg_url: str, vector: str, form: Form) -> None:
    account, region, instance, _ = REAL[vector]
    async with running_issuer(tmp_path, pg_url, config=config(OPEN_ROLE)) as h:
        key, csr = new_csr(common_name="admin", dns_names=["evil.example"])
        status, issued = await h.post(
            PATH, {"csr": csr, "document": _read(vector, "document"), form: _read(vector, form)}
        )
        assert status == 201, issued
        leaf = check_issued(issued, key=key)
        await check_leaf_against_truststore(h, issued)

        uri = f"spiffe://test.example/aws/{account}/{region}/ec2/{instance}"
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
        assert san.get_values_for_type(x509.DNSName) == []
        assert issued["identity"] == {"method": "aws-ec2", "principal": instance, "uri_san": uri}

        # No nonce was sent, so the issuer made one, returned it once and kept only its hash.
        nonce = issued["nonce"]
        (binding,) = await bindings(h)
        assert (binding.account_id, binding.instance_id, binding.region, binding.role) == (
            account,
            instance,
            region,
            "fleet",
        )
        assert binding.nonce_hash == hash_secret(nonce) != nonce
        (row,) = await h.certificates()
        assert (row.serial, row.method, row.role) == (issued["serial"], "aws-ec2", "fleet")
        (audit,) = await h.attestations()
        assert (audit.outcome, audit.principal, audit.certificate_serial) == ("success", instance, issued["serial"])


async def test_real_invalid_vectors_are_refused(tmp_path: Path, pg_url: str) -> None:
    vector = "2026-ap-southeast-2"
    document, invalid = _read(vector, "document"), _read(vector, "document-invalid")
    async with running_issuer(tmp_path, pg_url, config=config(OPEN_ROLE)) as h:
        await refused(
            h,
            body({"document": invalid, "signature": _read(vector, "signature")}),
            status=401,
            code="ec2_signature_invalid",
        )
        await refused(
            h,
            body({"document": invalid, "rsa2048": _read(vector, "rsa2048")}),
            status=401,
            code="ec2_cms_content_mismatch",
        )
        await refused(
            h,
            body({"document": document, "signature": _read(vector, "signature-invalid")}),
            status=401,
            code="ec2_signature_invalid",
        )
        assert await bindings(h) == []


# -- refusals --------------------------------------------------------------------------


def _one_byte_off(fields: Mapping[str, str]) -> dict[str, str]:
    tampered = fields["document"].replace(ACCOUNT, ACCOUNT[:-1] + "3")
    assert sum(a != b for a, b in zip(tampered, fields["document"], strict=True)) == 1
    return {**fields, "document": tampered}


def _refusal_cases(aws: FakeAwsSigner) -> list[tuple[str, dict[str, str], int, str]]:
    good = proof(aws)
    signed_raw = proof(aws, "signature")
    elsewhere = proof(aws, region="us-east-1")  # signed by the stand-in, which is pinned for eu-west-1 only
    return [
        ("tampered document, rsa2048", _one_byte_off(good), 401, "ec2_cms_content_mismatch"),
        ("tampered document, signature", _one_byte_off(signed_raw), 401, "ec2_signature_invalid"),
        ("two signature forms", {**good, "signature": signed_raw["signature"]}, 400, "ec2_proof_form"),
        ("no signature form", {"document": good["document"]}, 400, "ec2_proof_form"),
        ("non-base64 blob", {**good, "rsa2048": good["rsa2048"].replace("M", "*", 1)}, 400, "ec2_blob_malformed"),
        ("region B, cert pinned for A, rsa2048", elsewhere, 401, "ec2_cms_signer_untrusted"),
        (
            "region B, cert pinned for A, pkcs7",
            proof(aws, "pkcs7", region="us-east-1"),
            401,
            "ec2_cms_signer_untrusted",
        ),
        ("region with no AWS certificate", proof(aws, region="zz-nowhere-9"), 401, "ec2_region_unknown"),
        *(
            (f"document without {name}", proof(aws, omit=[name]), 400, "ec2_document_malformed")
            for name in ("accountId", "instanceId", "imageId", "pendingTime", "region")
        ),
        ("nonce of the wrong shape", {**good, "nonce": "short"}, 400, "field_invalid"),
    ]


async def test_bad_proofs_are_refused_with_their_own_code(
    tmp_path: Path, pg_url: str, aws: FakeAwsSigner, aws_certs: AwsCertStore, subtests: pytest.Subtests
) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(OPEN_ROLE), aws_certs=aws_certs) as h:
        for name, fields, status, code in _refusal_cases(aws):
            with subtests.test(name):
                await refused(h, body(fields), status=status, code=code)
        # The control: the untampered proof is accepted, so each refusal above is about its one defect.
        status, issued = await h.post(PATH, body(proof(aws)))
        assert status == 201, issued
        check_issued(issued)


async def test_nonce_with_a_trailing_newline_is_refused(
    tmp_path: Path, pg_url: str, aws: FakeAwsSigner, aws_certs: AwsCertStore
) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(OPEN_ROLE), aws_certs=aws_certs) as h:
        nonce = secrets.token_urlsafe(24) + "\n"
        await refused(h, body(proof(aws), nonce=nonce), status=400, code="field_invalid")


async def test_binding_mismatches_are_forbidden_without_saying_which(
    tmp_path: Path, pg_url: str, aws: FakeAwsSigner, aws_certs: AwsCertStore
) -> None:
    bound = {"methods": ["aws-ec2"], "allow_unbounded_documents": True}
    roles = [
        {"name": "by-account", **bound, "account_ids": ["111122223333"]},
        {"name": "by-region", **bound, "regions": ["us-east-1"]},
        {"name": "by-ami", **bound, "ami_ids": ["ami-0fedcba9876543210"]},
        {"name": "by-type", **bound, "instance_types": ["m5.large"]},
        {
            "name": "all-match",
            **bound,
            "account_ids": [ACCOUNT],
            "regions": [REGION],
            "ami_ids": [AMI],
            "instance_types": ["t3.micro"],
        },
    ]
    fields = proof(aws, instance_type="t3.micro")
    async with running_issuer(tmp_path, pg_url, config=config(*roles), aws_certs=aws_certs) as h:
        details = set()
        for role, field in [
            ("by-account", "account_ids"),
            ("by-region", "regions"),
            ("by-ami", "ami_ids"),
            ("by-type", "instance_types"),
        ]:
            problem = await refused(h, body(fields, role=role), status=403, code="binding_mismatch")
            details.add(problem["detail"])
            # Which binding failed is in the audit row for the operator, not in the answer.
            (audit,) = [a for a in await h.attestations() if a.request_id == problem["request_id"]]
            assert field in (audit.reason or "") and audit.role == role
            for leak in (field, ACCOUNT, REGION, AMI, "t3.micro", "111122223333", "us-east-1", "m5.large"):
                assert leak not in json.dumps(problem)
        assert len(details) == 1
        assert await bindings(h) == []  # a refused instance is not bound

        status, issued = await h.post(PATH, body(fields, role="all-match"))
        assert status == 201, issued


async def test_max_instance_age_is_judged_by_the_service_clock(
    tmp_path: Path, pg_url: str, aws: FakeAwsSigner, aws_certs: AwsCertStore
) -> None:
    launched = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=9)
    clock = [launched + timedelta(minutes=9)]
    role = {"name": "young", "methods": ["aws-ec2"], "max_instance_age": "10m"}
    async with running_issuer(tmp_path, pg_url, config=config(role), aws_certs=aws_certs, clock=lambda: clock[0]) as h:
        status, issued = await h.post(
            PATH, body(proof(aws, instance_id="i-0aaaaaaaaaaaaaaa1", pending_time=stamp(launched)))
        )
        assert status == 201, issued
        check_issued(issued)

        clock[0] += timedelta(minutes=2)  # the same launch time is now 11 minutes ago
        old = proof(aws, instance_id="i-0aaaaaaaaaaaaaaa2", pending_time=stamp(launched))
        await refused(h, body(old), status=403, code="instance_too_old")
        assert [b.instance_id for b in await bindings(h)] == ["i-0aaaaaaaaaaaaaaa1"]


# -- replay protection: trust on first use ---------------------------------------------

T1, T2, T3 = "2026-02-16T00:38:27Z", "2026-03-01T10:00:00Z", "2026-04-01T10:00:00Z"
REPLAY_ROLES = (
    {"name": "fixed", "methods": ["aws-ec2"], "allow_unbounded_documents": True},
    {"name": "movable", "methods": ["aws-ec2"], "allow_migration": True, "allow_unbounded_documents": True},
)


@pytest.fixture
async def replay(tmp_path: Path, pg_url: str, aws_certs: AwsCertStore) -> AsyncIterator[Harness]:
    async with running_issuer(tmp_path, pg_url, config=config(*REPLAY_ROLES), aws_certs=aws_certs) as h:
        yield h


async def test_first_attestation_binds_the_instance_to_a_returned_nonce(replay: Harness, aws: FakeAwsSigner) -> None:
    h, fields = replay, proof(aws, instance_id="i-0b0000000000000a1", pending_time=T1)
    status, first = await h.post(PATH, body(fields, role="fixed"))
    assert status == 201, first
    nonce = first["nonce"]
    assert isinstance(nonce, str) and len(nonce) >= 32

    await refused(h, body(fields, role="fixed"), status=401, code="ec2_nonce_required")
    await refused(h, body(fields, role="fixed", nonce=secrets.token_urlsafe(32)), status=401, code="ec2_nonce_mismatch")
    status, again = await h.post(PATH, body(fields, role="fixed", nonce=nonce))
    assert status == 201, again
    assert "nonce" not in again  # returned once, when it was made
    check_issued(again)
    assert len(await bindings(h)) == 1 and len(await h.certificates()) == 2


async def test_client_nonce_on_first_use_is_not_echoed_and_binds(replay: Harness, aws: FakeAwsSigner) -> None:
    h, fields = replay, proof(aws, instance_id="i-0b0000000000000a2", pending_time=T1)
    mine = secrets.token_urlsafe(24)
    status, first = await h.post(PATH, body(fields, role="fixed", nonce=mine))
    assert status == 201, first
    assert "nonce" not in first
    (binding,) = await bindings(h)
    assert binding.nonce_hash == hash_secret(mine)

    await refused(h, body(fields, role="fixed"), status=401, code="ec2_nonce_required")
    status, again = await h.post(PATH, body(fields, role="fixed", nonce=mine))
    assert status == 201, again


async def test_older_pending_time_is_refused_even_with_the_nonce(replay: Harness, aws: FakeAwsSigner) -> None:
    h, instance = replay, "i-0b0000000000000a3"
    mine = secrets.token_urlsafe(24)
    status, _ = await h.post(PATH, body(proof(aws, instance_id=instance, pending_time=T2), role="movable", nonce=mine))
    assert status == 201
    older = proof(aws, instance_id=instance, pending_time=T1)
    for role in ("fixed", "movable"):
        await refused(h, body(older, role=role, nonce=mine), status=401, code="ec2_pending_time_older")
    (binding,) = await bindings(h)
    assert stamp(binding.pending_time) == T2


async def test_newer_pending_time_rebinds_only_where_migration_is_allowed(replay: Harness, aws: FakeAwsSigner) -> None:
    h, instance = replay, "i-0b0000000000000a4"
    status, first = await h.post(PATH, body(proof(aws, instance_id=instance, pending_time=T1), role="fixed"))
    assert status == 201
    old_nonce = first["nonce"]

    restarted = proof(aws, instance_id=instance, pending_time=T2)  # stopped and started: a new pendingTime
    await refused(h, body(restarted, role="fixed"), status=401, code="ec2_nonce_required")
    status, moved = await h.post(PATH, body(restarted, role="movable"))
    assert status == 201, moved
    new_nonce = moved["nonce"]
    assert new_nonce != old_nonce
    check_issued(moved)

    # The binding moved: the old nonce is dead, the new one works, the old document is refused.
    await refused(h, body(restarted, role="movable", nonce=old_nonce), status=401, code="ec2_nonce_mismatch")
    status, _ = await h.post(PATH, body(restarted, role="fixed", nonce=new_nonce))
    assert status == 201
    await refused(
        h,
        body(proof(aws, instance_id=instance, pending_time=T1), role="movable", nonce=new_nonce),
        status=401,
        code="ec2_pending_time_older",
    )
    # A migration with a client nonce keeps that nonce and does not echo it.
    mine = secrets.token_urlsafe(24)
    status, again = await h.post(
        PATH, body(proof(aws, instance_id=instance, pending_time=T3), role="movable", nonce=mine)
    )
    assert status == 201 and "nonce" not in again
    (binding,) = await bindings(h)
    assert (binding.nonce_hash, stamp(binding.pending_time)) == (hash_secret(mine), T3)


async def test_operator_reset_makes_the_next_attestation_a_first_one(replay: Harness, aws: FakeAwsSigner) -> None:
    h, instance = replay, "i-0b0000000000000a5"
    fields = proof(aws, instance_id=instance, pending_time=T1)
    status, first = await h.post(PATH, body(fields, role="fixed"))
    assert status == 201
    await refused(h, body(fields, role="fixed"), status=401, code="ec2_nonce_required")

    assert await admin.reset_instance(h.service.sessions, instance_id=instance) == 1
    assert await bindings(h) == []
    status, fresh = await h.post(PATH, body(fields, role="fixed"))
    assert status == 201, fresh
    assert fresh["nonce"] != first["nonce"]
    await refused(h, body(fields, role="fixed", nonce=first["nonce"]), status=401, code="ec2_nonce_mismatch")


async def test_concurrent_first_attestations_bind_exactly_once(
    tmp_path: Path, pg_url: str, aws: FakeAwsSigner, aws_certs: AwsCertStore
) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(OPEN_ROLE), aws_certs=aws_certs) as h:
        for round_ in range(3):
            fields = proof(aws, instance_id=f"i-0c00000000000000{round_}", pending_time=T1)
            requests = [body(fields, nonce=secrets.token_urlsafe(24)) for _ in range(8)]
            results = await asyncio.gather(*(h.post(PATH, r) for r in requests))
            outcomes = sorted((s, b.get("code")) for s, b in results)
            assert outcomes[0] == (201, None), results
            assert all(o in {(409, "ec2_binding_race"), (401, "ec2_nonce_mismatch")} for o in outcomes[1:]), outcomes
            # The winner's nonce is the one bound.
            (winner,) = [r for r, (s, _) in zip(requests, results, strict=True) if s == 201]
            binding = [b for b in await bindings(h) if b.instance_id == fields_instance(fields)]
            assert [b.nonce_hash for b in binding] == [hash_secret(winner["nonce"])]
        assert len(await bindings(h)) == 3 and len(await h.certificates()) == 3


async def test_a_binding_changed_while_the_certificate_is_signed_gets_no_certificate(
    tmp_path: Path, pg_url: str, aws: FakeAwsSigner, aws_certs: AwsCertStore
) -> None:
    """On Postgres the binding is read before signing and written, only if still as read, by the
    statement that records the certificate: reset by an operator in between, nothing is written."""
    signer = ScriptedSigner.for_state(tmp_path)
    config_text = config(*REPLAY_ROLES)
    async with running_issuer(tmp_path, pg_url, config=config_text, aws_certs=aws_certs, signer=signer) as h:
        instance = "i-0d0000000000000a1"
        fields = proof(aws, instance_id=instance, pending_time=T1)
        status, first = await h.post(PATH, body(fields, role="fixed"))
        assert status == 201, first

        async def reset_meanwhile(n: int) -> None:
            if n == 2:
                assert await admin.reset_instance(h.service.sessions, instance_id=instance) == 1

        signer.before_issue = reset_meanwhile
        status, raced = await h.post(PATH, body(fields, role="fixed", nonce=first["nonce"]))
        assert (status, raced["code"]) == (409, "ec2_binding_race"), raced
        assert signer.arrived == 2  # signed, then discarded
        assert len(await h.certificates()) == 1 and await bindings(h) == []
        signer.before_issue = None
        status, again = await h.post(PATH, body(fields, role="fixed"))  # now a first attestation again
        assert status == 201 and again["nonce"] != first["nonce"], again


def fields_instance(fields: Mapping[str, str]) -> str:
    return str(json.loads(fields["document"])["instanceId"])


# -- liveness: DescribeInstances against moto's server ---------------------------------


@dataclass(frozen=True, slots=True)
class Fleet:
    moto: MotoServer
    ec2: Any
    image_id: str
    vpc_id: str
    subnet_id: str

    def launch(self) -> str:
        reply = self.ec2.run_instances(ImageId=self.image_id, MinCount=1, MaxCount=1, SubnetId=self.subnet_id)
        return str(reply["Instances"][0]["InstanceId"])


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with pytest.MonkeyPatch.context() as mp:
        fake_aws_credentials(mp, region=REGION)
        with moto_server() as moto:
            ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto.url)
            images = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])
            vpc_id = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
            subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
            yield Fleet(moto, ec2, images["Images"][0]["ImageId"], vpc_id, subnet_id)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_credentials(monkeypatch, region=REGION)


LIVE = {"methods": ["aws-ec2"], "check_instance": True}


@pytest.mark.usefixtures("aws_env")
async def test_liveness_check_asks_ec2(
    tmp_path: Path, pg_url: str, aws: FakeAwsSigner, aws_certs: AwsCertStore, fleet: Fleet
) -> None:
    roles = [
        {"name": "live", **LIVE},
        {"name": "live-in-vpc", **LIVE, "vpc_ids": [fleet.vpc_id]},
        {"name": "live-elsewhere", **LIVE, "vpc_ids": ["vpc-0ffffffffffffffff"]},
    ]
    settings = config(*roles, ec2={"endpoint_overrides": {"*": fleet.moto.url}})

    def document_for(instance_id: str, image_id: str = fleet.image_id) -> dict[str, str]:
        return proof(aws, instance_id=instance_id, image_id=image_id, account_id=ACCOUNT, region=REGION)

    async with running_issuer(tmp_path, pg_url, config=settings, aws_certs=aws_certs) as h:
        running = fleet.launch()
        status, issued = await h.post(PATH, body(document_for(running), role="live"))
        assert status == 201, issued
        check_issued(issued)

        stopped = fleet.launch()
        fleet.ec2.stop_instances(InstanceIds=[stopped])
        await refused(h, body(document_for(stopped), role="live"), status=401, code="ec2_instance_not_running")

        await refused(
            h, body(document_for("i-0123456789abcdef0"), role="live"), status=401, code="ec2_instance_not_found"
        )

        other_image = fleet.launch()
        await refused(
            h,
            body(document_for(other_image, image_id="ami-0fedcba9876543210"), role="live"),
            status=401,
            code="ec2_instance_mismatch",
        )

        in_vpc = fleet.launch()
        problem = await refused(
            h, body(document_for(in_vpc), role="live-elsewhere"), status=403, code="binding_mismatch"
        )
        assert fleet.vpc_id not in json.dumps(problem)
        status, issued = await h.post(PATH, body(document_for(in_vpc), role="live-in-vpc"))
        assert status == 201, issued

        assert sorted(b.instance_id for b in await bindings(h)) == sorted([running, in_vpc])


@pytest.mark.usefixtures("aws_env")
async def test_unreachable_ec2_is_503_with_retry_after(
    tmp_path: Path, pg_url: str, aws: FakeAwsSigner, aws_certs: AwsCertStore
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = config({"name": "live", **LIVE}, ec2={"endpoint_overrides": {"*": nowhere}})
    async with running_issuer(tmp_path, pg_url, config=settings, aws_certs=aws_certs) as h:
        request = body(proof(aws, instance_id="i-0d0000000000000a1"))
        resp = await h.client.post(PATH, data=json.dumps(request), headers={"Content-Type": "application/json"})
        problem = await resp.json(content_type=None)
        assert (resp.status, problem["code"]) == (503, "ec2_lookup_unavailable"), problem
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert int(resp.headers["Retry-After"]) > 0
        assert "127.0.0.1" not in problem["detail"]  # where the issuer looked is the operator's business
        assert await h.certificates() == [] and await bindings(h) == []
        (audit,) = await h.attestations()
        assert (audit.outcome, audit.code, audit.request_id) == (
            "failure",
            "ec2_lookup_unavailable",
            problem["request_id"],
        )
