"""The EC2 instance identity role method: a signed STS request → burnt → STS → the instance it names.

The proof is the ``aws-iam`` one (validated locally, server ID and CSR hash signed in, the
signature burnt before the one STS call, so it is single use whatever follows), signed with
the credentials IMDS serves every instance for the role ``aws:ec2-instance``. STS's answer
must be that role's session named for an instance (:mod:`issuer.attest.ec2_role`).

With ``check_instance`` the instance is looked up (``ec2:DescribeInstances``) across the
role's ``regions`` in ``identify``: the region it is found in is the identity's region,
and its image and type fill the identity, so ``aws-ec2`` and ``aws-ec2-role`` name one
instance alike. The role's account is checked before any lookup (no role is assumed into
an account the role does not allow); what AWS said is checked in ``check_upstream``,
after the decision. There is no document and so no trust on first use: a machine
re-attests with a fresh signature whenever it needs to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ca.csr import CheckedCSR
from issuer.attest.ec2_instance import InstanceInfo, LookupFactory
from issuer.attest.ec2_role import InstanceRoleCaller, instance_from_caller
from issuer.attest.identity import VerifiedIdentity
from issuer.attest.sts import StsRequest, ValidatedStsRequest, validate_sts_request
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.attest.sts_response import StsCaller
from issuer.attest.sts_wire import parse_sts_request
from issuer.errors import ClientError, Unauthorized
from issuer.policy import Role
from issuer.policy.bindings import require_one_of
from issuer.policy.ec2 import Ec2Options
from issuer.policy.ec2_role import AWS_EC2_ROLE, region_without_lookup
from issuer.service.issuance.entry import MethodEntry, Resources, Transport
from issuer.service.issuance.guards import ReplayGuards
from issuer.service.issuance.phases import Claimed, Identified, Verified, requested_role

__all__ = ["METHOD", "Ec2RoleMethod", "check_live_by_role", "find_instance", "identity_of"]


async def find_instance(
    lookups: LookupFactory, options: Ec2Options, *, account_id: str, instance_id: str
) -> tuple[str, InstanceInfo] | None:
    """The first of ``options.regions`` where ``DescribeInstances`` knows the instance, with what it said.

    Raises ``ec2_lookup_unavailable`` (503) when AWS cannot be asked.
    """
    for region in options.regions:
        info = await lookups(options.assume_role, region).describe(
            account_id=account_id, region=region, instance_id=instance_id
        )
        if info is not None:
            return region, info
    return None


async def check_live_by_role(lookups: LookupFactory, role: Role, identity: VerifiedIdentity) -> None:
    """Renewal with ``check_instance``: ask AWS again about the instance ``identity`` names.

    The region it was found in at attestation is asked first, then the role's other regions.
    Raises the refusals of :meth:`~issuer.policy.ec2.Ec2Options.check_described` (a terminated
    or stopped instance cannot renew, nor one that left the role's VPC or changed image) and
    ``ec2_lookup_unavailable`` (503).
    """
    options = AWS_EC2_ROLE.of(role)
    first = (identity.region,) if identity.region in options.regions else ()
    ordered = replace(options, regions=(*first, *(r for r in options.regions if r not in first)))
    found = await find_instance(lookups, ordered, account_id=identity.account_id or "", instance_id=identity.principal)
    options.check_described(found[1] if found else None, identity=identity, role=role.name)


def identity_of(instance: InstanceRoleCaller, *, region: str | None, info: InstanceInfo | None) -> VerifiedIdentity:
    """The ``aws-ec2-role`` identity: principal the instance ID, as ``aws-ec2`` names it."""
    attributes = {"instance_id": instance.instance_id, "arn": instance.arn}
    if info is not None:
        attributes["image_id"] = info.image_id
        if info.instance_type:
            attributes["instance_type"] = info.instance_type
    return VerifiedIdentity(
        method=AWS_EC2_ROLE.method,
        principal=instance.instance_id,
        account_id=instance.account_id,
        region=region,
        attributes=MappingProxyType(attributes),
    )


@dataclass(frozen=True, slots=True)
class _State:
    request: ValidatedStsRequest
    info: InstanceInfo | None = None  # what DescribeInstances said (check_instance)


class Ec2RoleMethod:
    """:class:`~issuer.service.issuance.phases.IssuanceMethod` for ``POST /v1/issue/aws-ec2-role``.

    Refusals: the codes of :func:`~issuer.attest.sts.validate_sts_request`, ``sts_replayed``,
    ``sts_rejected`` (401), ``ec2_role_arn_unrecognised`` (401), ``binding_mismatch`` (403),
    the liveness codes of :meth:`issuer.policy.ec2.Ec2Options.check_described`,
    ``sts_unavailable`` and ``ec2_lookup_unavailable`` (503).
    """

    name = AWS_EC2_ROLE.method
    role_from_request = True

    def __init__(
        self,
        *,
        hosts: StsHostAllowlist,
        caller: StsCaller,
        server_id: str,
        guards: ReplayGuards,
        lookups: LookupFactory,
    ) -> None:
        self._hosts = hosts
        self._caller = caller
        self._server_id = server_id
        self._guards = guards
        self._lookups = lookups

    def verify(self, proof: StsRequest, *, csr: CheckedCSR, role: Role | None, now: datetime) -> Verified[_State]:
        named = requested_role(role)
        validated = validate_sts_request(
            proof,
            server_id=self._server_id,
            csr_sha256_hex=csr.sha256_hex,
            require_csr_binding=True,
            hosts=self._hosts,
            now=now,
        )
        return Verified(state=_State(request=validated), role=named)

    async def identify(
        self, verified: Verified[_State], *, transaction: AsyncSession, request_id: str, now: datetime
    ) -> Identified[_State]:
        validated, role = verified.state.request, requested_role(verified.role)
        fresh = await self._guards.burn(
            kind="sts", digest=validated.signature_hash, expires_at=validated.expires_at, now=now
        )
        if not fresh:
            raise Unauthorized(
                "This signed request has been used already; sign a new one.",
                code="sts_replayed",
                reason=f"signature sha256 {validated.signature_hash} seen before",
            )
        instance = instance_from_caller(await self._caller.get_caller_identity(validated))
        options = AWS_EC2_ROLE.of(role)
        if not options.check_instance:
            identity = identity_of(instance, region=region_without_lookup(options), info=None)
            return Identified(state=verified.state, identity=identity, role=role)
        # Before asking AWS anything in that account (perhaps through a role assumed there).
        require_one_of(role.name, "account_ids", options.account_ids, instance.account_id)
        found = await find_instance(
            self._lookups, options, account_id=instance.account_id, instance_id=instance.instance_id
        )
        if found is None:
            identity = identity_of(instance, region=None, info=None)
            options.check_described(None, identity=identity, role=role.name)  # raises ec2_instance_not_found
            raise AssertionError("check_described accepted a missing instance")
        region, info = found
        identity = identity_of(instance, region=region, info=info)
        return Identified(state=_State(request=validated, info=info), identity=identity, role=role)

    async def check_upstream(self, identified: Identified[_State], *, now: datetime) -> None:
        options = AWS_EC2_ROLE.of(identified.role)
        if options.check_instance:
            options.check_described(identified.state.info, identity=identified.identity, role=identified.role.name)

    async def claim_in_transaction(
        self, transaction: AsyncSession, identified: Identified[_State], *, request_id: str, now: datetime
    ) -> Claimed:
        return Claimed()


def read_proof(body: Mapping[str, Any], transport: Transport) -> StsRequest:
    """``{"sts_request"}`` signed with the instance identity role's credentials (no Vault form)."""
    if "sts_request" not in body:
        raise ClientError(
            "Send sts_request: GetCallerIdentity signed with the instance identity role's credentials.",
            code="sts_request_malformed",
        )
    return parse_sts_request(body)


def _build(resources: Resources) -> Ec2RoleMethod:
    return Ec2RoleMethod(
        hosts=resources.sts_hosts,
        caller=resources.sts_caller,
        server_id=resources.settings.audience,
        guards=resources.guards,
        lookups=resources.instance_lookups,
    )


METHOD = MethodEntry(
    name=AWS_EC2_ROLE.method,
    route="/v1/issue/aws-ec2-role",
    fields=frozenset({"sts_request"}),
    read_proof=read_proof,
    build=_build,
    rules=AWS_EC2_ROLE,
)
