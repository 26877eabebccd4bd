"""POST /v1/issue/aws-ec2-role end to end: the real app on a migrated Postgres, moto's server as STS
and EC2 with every signature checked, openssl checking the leaf.

The instance identity role is moto's role ``aws:ec2-instance`` assumed with the instance ID
as the session name (``tests/support/moto_ec2_role.py``); requests are signed by botocore.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from issuer.store.models import Identity
from tests.support.harness import Harness, check_issued, check_leaf_against_truststore, new_csr, running_issuer
from tests.support.moto_ec2_role import ACCOUNT_ID, DECOY_ROLE, REGION, MotoEc2Role, moto_ec2_role
from tests.support.moto_iam import AwsKey
from tests.support.renewal_token import renewal_token
from tests.support.sts_signing import sign_get_caller_identity
from tests.support.x509_check import csr_sha256, make_csr

PATH = "/v1/issue/aws-ec2-role"
SERVER_ID = "issuer.test.example"
TRUST = "test.example"
OTHER_ACCOUNT = "210987654321"


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoEc2Role]:
    with moto_ec2_role() as m:
        yield m


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, aws: MotoEc2Role) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)


def config(aws: MotoEc2Role) -> str:
    return f"""
[issuer]
trust_domain = "{TRUST}"
server_id = "{SERVER_ID}"

[aws.sts]
endpoint_overrides = {{ "sts.amazonaws.com" = "{aws.url}" }}

[aws.ec2]
endpoint_overrides = {{ "*" = "{aws.url}" }}

[[roles]]
name = "fleet"
methods = ["aws-ec2", "aws-ec2-role"]
account_ids = ["{ACCOUNT_ID}"]
check_instance = true
regions = ["us-east-1", "{REGION}"]
vpc_ids = ["{aws.vpc_id}"]
ttl = "1h"

[[roles]]
name = "pinned"
methods = ["aws-ec2-role"]
account_ids = ["{ACCOUNT_ID}"]
regions = ["{REGION}"]

[[roles]]
name = "elsewhere"
methods = ["aws-ec2-role"]
account_ids = ["{OTHER_ACCOUNT}"]
check_instance = true
regions = ["{REGION}"]
"""


def body(key: AwsKey, csr: str, role: str, *, bound_csr: str | None = None, **options: Any) -> dict[str, Any]:
    signed = sign_get_caller_identity(
        access_key_id=key.access_key_id,
        secret_access_key=key.secret_access_key,
        session_token=key.session_token,
        now=datetime.now(UTC),
        server_id=options.pop("server_id", SERVER_ID),
        csr_sha256_hex=csr_sha256(bound_csr or csr),
        **options,
    )
    return {"csr": csr, "role": role, "sts_request": signed.sts_request()}


async def refused(h: Harness, request: Mapping[str, Any], *, status: int, code: str) -> dict[str, Any]:
    """POST; assert a problem+json refusal, no certificate and one failure audit row with a reason."""
    before = len(await h.certificates())
    resp = await h.client.post(PATH, data=json.dumps(request), headers={"Content-Type": "application/json"})
    problem: dict[str, Any] = await resp.json(content_type=None)
    assert (resp.status, problem.get("code")) == (status, code), problem
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert len(await h.certificates()) == before
    audit = [a for a in await h.attestations() if a.request_id == problem["request_id"]]
    assert [(a.outcome, a.method, a.code) for a in audit] == [("failure", "aws-ec2-role", code)]
    assert audit[0].reason
    return problem


async def identity_row(h: Harness, principal: str) -> Identity:
    async with h.service.sessions() as session:
        row = await session.scalar(
            select(Identity).where(Identity.method == "aws-ec2-role", Identity.principal == principal)
        )
    assert row is not None
    return row


async def test_an_instance_gets_a_certificate_and_renews_while_it_runs(
    tmp_path: Path, pg_url: str, aws: MotoEc2Role
) -> None:
    instance = aws.launch()
    async with running_issuer(tmp_path, pg_url, config=config(aws)) as h:
        key, csr = new_csr(common_name="root", uris=["spiffe://evil/x"])
        status, issued = await h.post(PATH, body(aws.credentials(instance), csr, "fleet"))
        assert status == 201, issued
        leaf = check_issued(issued, key=key)
        await check_leaf_against_truststore(h, issued)
        # Found in the second of the role's regions: the region is where EC2 knows the instance.
        uri = f"spiffe://{TRUST}/aws/{ACCOUNT_ID}/{REGION}/ec2/{instance}"
        assert issued["identity"] == {"method": "aws-ec2-role", "principal": instance, "uri_san": uri}
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
        row = await identity_row(h, instance)
        assert (row.account_id, row.region, row.attributes["image_id"]) == (ACCOUNT_ID, REGION, aws.image_id)
        (audit,) = await h.attestations()
        assert (audit.outcome, audit.method, audit.principal, audit.role) == (
            "success",
            "aws-ec2-role",
            instance,
            "fleet",
        )

        # Renewal asks EC2 again: fine while it runs ...
        new_key = ec.generate_private_key(ec.SECP256R1())
        new_csr_pem = make_csr(new_key).decode()
        token = renewal_token(key, leaf, csr_pem=new_csr_pem, audience=SERVER_ID)
        resp = await h.client.post("/v1/renew", json={"csr": new_csr_pem}, headers={"Authorization": f"Bearer {token}"})
        renewed = await resp.json(content_type=None)
        assert resp.status == 201, renewed
        assert renewed["identity"]["uri_san"] == uri
        await check_leaf_against_truststore(h, renewed)

        # ... refused once it is stopped.
        aws.client("ec2").stop_instances(InstanceIds=[instance])
        renewed_leaf = check_issued(renewed, key=new_key)
        third_key = ec.generate_private_key(ec.SECP256R1())
        third_csr = make_csr(third_key).decode()
        token = renewal_token(new_key, renewed_leaf, csr_pem=third_csr, audience=SERVER_ID)
        resp = await h.client.post("/v1/renew", json={"csr": third_csr}, headers={"Authorization": f"Bearer {token}"})
        problem = await resp.json(content_type=None)
        assert (resp.status, problem["code"]) == (401, "ec2_instance_not_running"), problem


async def test_without_check_instance_the_roles_one_region_names_the_instance(
    tmp_path: Path, pg_url: str, aws: MotoEc2Role
) -> None:
    instance = aws.launch()
    async with running_issuer(tmp_path, pg_url, config=config(aws)) as h:
        _, csr = new_csr()
        status, issued = await h.post(PATH, body(aws.credentials(instance), csr, "pinned"))
        assert status == 201, issued
        assert issued["identity"]["uri_san"] == f"spiffe://{TRUST}/aws/{ACCOUNT_ID}/{REGION}/ec2/{instance}"
        await check_leaf_against_truststore(h, issued)


async def test_callers_that_are_not_an_instance_identity_role_are_refused(
    tmp_path: Path, pg_url: str, aws: MotoEc2Role
) -> None:
    instance = aws.launch()
    async with running_issuer(tmp_path, pg_url, config=config(aws)) as h:
        _, csr = new_csr()
        # A role IAM allows, whose name merely looks like the instance identity role.
        decoy = aws.credentials(instance, role=DECOY_ROLE)
        await refused(h, body(decoy, csr, "pinned"), status=401, code="ec2_role_arn_unrecognised")
        # The right role with a session that is not an instance ID.
        await refused(h, body(aws.credentials("web-1"), csr, "pinned"), status=401, code="ec2_role_arn_unrecognised")
        await refused(
            h, body(aws.credentials(instance.upper()), csr, "pinned"), status=401, code="ec2_role_arn_unrecognised"
        )
        # An IAM user.
        await refused(h, body(aws.user, csr, "pinned"), status=401, code="ec2_role_arn_unrecognised")
        # A key STS does not know.
        stranger = AwsKey("AKIAIOSFODNN7EXAMPLE", "not-a-secret")
        await refused(h, body(stranger, csr, "pinned"), status=401, code="sts_rejected")


async def test_accounts_instances_and_bindings_outside_the_role_are_refused(
    tmp_path: Path, pg_url: str, aws: MotoEc2Role
) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(aws)) as h:
        _, csr = new_csr()
        running = aws.launch()
        await refused(h, body(aws.credentials(running), csr, "elsewhere"), status=403, code="binding_mismatch")

        stopped = aws.launch()
        aws.client("ec2").stop_instances(InstanceIds=[stopped])
        await refused(h, body(aws.credentials(stopped), csr, "fleet"), status=401, code="ec2_instance_not_running")

        terminated = aws.launch()
        aws.client("ec2").terminate_instances(InstanceIds=[terminated])
        await refused(h, body(aws.credentials(terminated), csr, "fleet"), status=401, code="ec2_instance_not_found")

        unknown = "i-0123456789abcdef0"
        await refused(h, body(aws.credentials(unknown), csr, "fleet"), status=401, code="ec2_instance_not_found")

        outside_vpc = aws.launch(subnet=False)
        problem = await refused(
            h, body(aws.credentials(outside_vpc), csr, "fleet"), status=403, code="binding_mismatch"
        )
        assert aws.vpc_id not in json.dumps(problem)


async def test_a_proof_is_single_use_bound_to_this_server_and_this_csr(
    tmp_path: Path, pg_url: str, aws: MotoEc2Role
) -> None:
    instance = aws.launch()
    creds = aws.credentials(instance)
    async with running_issuer(tmp_path, pg_url, config=config(aws)) as h:
        _, csr = new_csr()
        request = body(creds, csr, "pinned")
        status, issued = await h.post(PATH, request)
        assert status == 201, issued
        await refused(h, request, status=401, code="sts_replayed")

        other = body(creds, csr, "pinned", server_id="another-issuer.example")
        await refused(h, other, status=401, code="sts_server_id_mismatch")

        _, bound = new_csr()
        await refused(h, body(creds, csr, "pinned", bound_csr=bound), status=401, code="sts_csr_binding_mismatch")

        signed = sign_get_caller_identity(
            access_key_id=creds.access_key_id,
            secret_access_key=creds.secret_access_key,
            session_token=creds.session_token,
            now=datetime.now(UTC),
            server_id=SERVER_ID,
        )
        unbound = {"csr": csr, "role": "pinned", "sts_request": signed.sts_request()}
        await refused(h, unbound, status=401, code="sts_csr_binding_missing")
        assert len(await h.certificates()) == 1
