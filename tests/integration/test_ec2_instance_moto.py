"""The DescribeInstances liveness check against moto's server as the EC2/IAM/STS peer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from issuer.attest.ec2 import InstanceIdentityDocument, identity_from_document
from issuer.attest.ec2_instance import InstanceInfo
from issuer.aws.ec2 import Boto3InstanceLookup
from issuer.aws.sessions import AccountSessions, client_config
from issuer.errors import Forbidden, Unauthorized, UpstreamUnavailable
from issuer.policy.ec2 import Ec2Options
from tests.support.moto_server import MotoServer, fake_aws_credentials, free_port, moto_server

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as mp:
        fake_aws_credentials(mp, region=REGION)
        with moto_server() as server:
            yield server


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_credentials(monkeypatch, region=REGION)


@dataclass(frozen=True, slots=True)
class Fleet:
    ec2: Any
    image_id: str
    vpc_id: str
    subnet_id: str
    profile_arn: str
    role_arn: str


@pytest.fixture(scope="module")
def fleet(moto: MotoServer) -> Fleet:
    with pytest.MonkeyPatch.context() as mp:
        fake_aws_credentials(mp, region=REGION)
        ec2 = _client(moto, "ec2")
        iam = _client(moto, "iam")
        # One of moto's built-in AMIs; a filter keeps the reply small.
        images = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])
        image_id = images["Images"][0]["ImageId"]
        role_arn = iam.create_role(RoleName="web-fleet", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        iam.create_role(RoleName="issuer-reader", AssumeRolePolicyDocument="{}")
        profile = iam.create_instance_profile(InstanceProfileName="web-fleet", Path="/web/")["InstanceProfile"]
        iam.add_role_to_instance_profile(InstanceProfileName="web-fleet", RoleName="web-fleet")
        vpc_id = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
        subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
        return Fleet(ec2, image_id, vpc_id, subnet_id, profile["Arn"], role_arn)


@pytest.fixture(scope="module")
def lookup(moto: MotoServer) -> Boto3InstanceLookup:
    # One lookup for the module, as the service holds one: its boto3 clients are reused.
    return make_lookup(moto.url)


def make_lookup(
    endpoint_url: str,
    *,
    assume_role: str | None = None,
    resolve_roles: bool = True,
    read_timeout: float = 5.0,
    max_attempts: int = 2,
) -> Boto3InstanceLookup:
    config = client_config(read_timeout=read_timeout, max_attempts=max_attempts)
    sessions = AccountSessions(endpoint_url=endpoint_url, assume_role=assume_role, config=config)
    return Boto3InstanceLookup(sessions, resolve_roles=resolve_roles)


def check_instance(info: InstanceInfo | None, *, doc: InstanceIdentityDocument, **bindings: list[str]) -> None:
    options = Ec2Options(check_instance=True, **{k: tuple(v) for k, v in bindings.items()})  # type: ignore[arg-type]
    options.check_described(info, identity=identity_from_document(doc), role="r")


def _client(moto: MotoServer, service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=moto.url)


def _launch(fleet: Fleet, *, profile: bool = True) -> str:
    options: dict[str, Any] = {"IamInstanceProfile": {"Arn": fleet.profile_arn}} if profile else {}
    reply = fleet.ec2.run_instances(ImageId=fleet.image_id, MinCount=1, MaxCount=1, SubnetId=fleet.subnet_id, **options)
    return str(reply["Instances"][0]["InstanceId"])


def _doc(instance_id: str, image_id: str) -> InstanceIdentityDocument:
    return InstanceIdentityDocument(
        account_id=ACCOUNT,
        instance_id=instance_id,
        region=REGION,
        availability_zone=f"{REGION}a",
        image_id=image_id,
        instance_type="t2.micro",
        architecture="x86_64",
        private_ip=None,
        pending_time=datetime(2026, 2, 16, tzinfo=UTC),
    )


async def _describe(lookup: Boto3InstanceLookup, instance_id: str, account: str = ACCOUNT) -> InstanceInfo | None:
    return await lookup.describe(account_id=account, region=REGION, instance_id=instance_id)


async def test_running_instance_is_described_and_passes_its_bindings(lookup: Boto3InstanceLookup, fleet: Fleet) -> None:
    instance_id = _launch(fleet)
    info = await _describe(lookup, instance_id)

    assert info == InstanceInfo(
        instance_id=instance_id,
        state="running",
        image_id=fleet.image_id,
        vpc_id=fleet.vpc_id,
        subnet_id=fleet.subnet_id,
        instance_profile_arn=fleet.profile_arn,
        iam_role_arns=(fleet.role_arn,),
        instance_type="m1.small",  # moto's default type for run_instances
    )
    check_instance(
        info,
        doc=_doc(instance_id, fleet.image_id),
        vpc_ids=[fleet.vpc_id],
        subnet_ids=[fleet.subnet_id],
        instance_profile_arns=[f"arn:aws:iam::{ACCOUNT}:instance-profile/web/*"],
        iam_role_arns=[fleet.role_arn],
    )


async def test_roles_are_not_resolved_when_switched_off(moto: MotoServer, fleet: Fleet) -> None:
    instance_id = _launch(fleet)
    info = await _describe(make_lookup(moto.url, resolve_roles=False), instance_id)
    assert info is not None
    assert (info.instance_profile_arn, info.iam_role_arns) == (fleet.profile_arn, ())


async def test_stopped_instance_is_not_running(lookup: Boto3InstanceLookup, fleet: Fleet) -> None:
    instance_id = _launch(fleet)
    fleet.ec2.stop_instances(InstanceIds=[instance_id])
    info = await _describe(lookup, instance_id)

    with pytest.raises(Unauthorized) as err:
        check_instance(info, doc=_doc(instance_id, fleet.image_id))
    assert err.value.code == "ec2_instance_not_running"


async def test_terminated_instance_is_not_found(lookup: Boto3InstanceLookup, fleet: Fleet) -> None:
    instance_id = _launch(fleet)
    fleet.ec2.terminate_instances(InstanceIds=[instance_id])
    info = await _describe(lookup, instance_id)

    with pytest.raises(Unauthorized) as err:
        check_instance(info, doc=_doc(instance_id, fleet.image_id))
    assert err.value.code == "ec2_instance_not_found"


async def test_unknown_instance_is_not_found(lookup: Boto3InstanceLookup, fleet: Fleet) -> None:
    info = await _describe(lookup, "i-0123456789abcdef0")

    assert info is None
    with pytest.raises(Unauthorized) as err:
        check_instance(info, doc=_doc("i-0123456789abcdef0", fleet.image_id))
    assert err.value.code == "ec2_instance_not_found"


async def test_other_image_than_the_document_is_a_mismatch(lookup: Boto3InstanceLookup, fleet: Fleet) -> None:
    instance_id = _launch(fleet)
    info = await _describe(lookup, instance_id)
    with pytest.raises(Unauthorized) as err:
        check_instance(info, doc=_doc(instance_id, "ami-0fffffffffffffff0"))
    assert err.value.code == "ec2_instance_mismatch"


@pytest.mark.parametrize(
    ("binding", "named"),
    [
        ({"vpc_ids": ["vpc-0abc"]}, "vpc_id"),
        ({"subnet_ids": ["subnet-0abc"]}, "subnet_id"),
        ({"instance_profile_arns": [f"arn:aws:iam::{ACCOUNT}:instance-profile/db/*"]}, "instance profile"),
        ({"iam_role_arns": [f"arn:aws:iam::{ACCOUNT}:role/db-*"]}, "IAM roles"),
    ],
)
async def test_binding_mismatch_is_forbidden(
    lookup: Boto3InstanceLookup, fleet: Fleet, binding: dict[str, list[str]], named: str
) -> None:
    instance_id = _launch(fleet)
    info = await _describe(lookup, instance_id)
    with pytest.raises(Forbidden) as err:
        check_instance(info, doc=_doc(instance_id, fleet.image_id), **binding)
    assert err.value.code == "binding_mismatch"
    assert named in err.value.reason


async def test_instance_without_a_profile_fails_a_profile_binding(lookup: Boto3InstanceLookup, fleet: Fleet) -> None:
    instance_id = _launch(fleet, profile=False)
    info = await _describe(lookup, instance_id)
    with pytest.raises(Forbidden):
        check_instance(info, doc=_doc(instance_id, fleet.image_id), instance_profile_arns=["*"])


async def test_assume_role_looks_in_the_documents_account(moto: MotoServer, fleet: Fleet) -> None:
    instance_id = _launch(fleet)
    lookup = make_lookup(moto.url, assume_role="arn:aws:iam::{account_id}:role/issuer-reader")

    found = await _describe(lookup, instance_id)
    # moto keeps accounts apart: the assumed session for another account does not see it.
    elsewhere = await _describe(lookup, instance_id, account="210987654321")

    assert found is not None
    assert found.state == "running"
    assert elsewhere is None


async def test_unreachable_endpoint_is_upstream_unavailable() -> None:
    lookup = make_lookup(f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(UpstreamUnavailable) as err:
        await _describe(lookup, "i-0123456789abcdef0")
    assert (err.value.status_hint, err.value.code) == (503, "ec2_lookup_unavailable")
    assert err.value.retry_after is not None


async def test_silent_endpoint_times_out_without_blocking_the_event_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    # A listener that never answers: the connection succeeds, the read times out.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        lookup = make_lookup(f"http://127.0.0.1:{port}", read_timeout=0.5, max_attempts=1)
        task = asyncio.create_task(ticker())
        try:
            with pytest.raises(UpstreamUnavailable) as err:
                await _describe(lookup, "i-0123456789abcdef0")
        finally:
            task.cancel()
    assert "Timeout" in err.value.reason
    # Had boto3 run on the loop, the ticker could not have run while we waited.
    assert ticks > 1


async def test_access_denied_is_the_operators_problem_not_the_clients() -> None:
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as strict:
        # Generous read timeout: moto builds its EC2 backend on the first call.
        lookup = make_lookup(strict.url, max_attempts=1, read_timeout=60)
        with pytest.raises(UpstreamUnavailable) as err:
            await _describe(lookup, "i-0123456789abcdef0")
    assert err.value.code == "ec2_lookup_unavailable"
    assert "operator misconfiguration" in err.value.reason
