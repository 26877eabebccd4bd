"""What a method declares about itself for the catalogue: route, wire schema, role rules, how to build its steps.

Each method module ends with one :class:`MethodEntry`; :mod:`issuer.service.issuance.catalogue`
lists them. :class:`Resources` is everything a method may be built from; the app makes
one at start-up and builds every method of the catalogue from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.attest.ec2_certs import AwsCertStore
from issuer.attest.ec2_instance import LookupFactory
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.attest.sts_response import StsCaller
from issuer.policy.rules import RoleRules
from issuer.service.ca.registry import IssuerRegistry
from issuer.service.issuance.guards import ReplayGuards
from issuer.service.issuance.phases import IssuanceMethod
from issuer.service.issuance.roles import RoleBook
from issuer.settings import Settings

__all__ = ["MethodEntry", "ProofReader", "Resources", "Transport"]

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Transport:
    """What the HTTP layer saw besides the JSON body (renewal's credentials)."""

    authorization: str | None = None  # the Authorization header
    peer_certificate: bytes | None = None  # DER of a TLS client certificate the handshake verified


# An untrusted JSON object (already bounded: size, depth, known keys) → the method's typed proof,
# or a ClientError / Unauthorized with a stable code.
ProofReader = Callable[[Mapping[str, Any], Transport], P]


@dataclass(frozen=True, slots=True)
class Resources:
    """What methods are built from: the app's shared resources and the outbound clients."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    registry: IssuerRegistry
    roles: RoleBook
    guards: ReplayGuards
    aws_certs: AwsCertStore
    instance_lookups: LookupFactory
    sts_caller: StsCaller
    sts_hosts: StsHostAllowlist


@dataclass(frozen=True, slots=True)
class MethodEntry(Generic[P]):
    """One row of the method table."""

    name: str  # as roles, the audit trail and the metrics name it
    route: str  # POST path
    fields: frozenset[str]  # the proof's body fields (besides csr, role and ttl)
    read_proof: ProofReader[P]
    build: Callable[[Resources], IssuanceMethod[P, Any]]
    rules: RoleRules[Any] | None  # what it adds to roles; None for renewal (not a role method)
