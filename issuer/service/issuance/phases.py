"""The phases of one issuance as types, and the steps a method contributes to reach them.

    proof ──verify──▶ Verified ──identify──▶ Identified ──decide──▶ template
          ──check_upstream──▶ (transaction) ──claim_in_transaction──▶ Claimed ──sign, record, commit──▶ Issued

Each phase holds only what is established by then, so nothing is optional and nothing is
asserted: a :class:`Verified` proof may not yet say who the machine is (a join token is a
secret until the store is asked; a signed STS request names nobody until STS answers); an
:class:`Identified` one always names the identity, the role and the certificate it
renews. The decision (:func:`issuer.policy.decide`) runs once, on the :class:`Identified`
claim, in :class:`~issuer.service.issuance.pipeline.Pipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession

from ca.csr import CheckedCSR
from issuer.attest.identity import VerifiedIdentity
from issuer.policy import PriorCertificate, Role
from issuer.store.denials import InForce

__all__ = [
    "ClaimStep",
    "Claimed",
    "Identified",
    "IssuanceMethod",
    "OneStatementClaim",
    "Peeked",
    "Verified",
    "requested_role",
]

S = TypeVar("S")
P_contra = TypeVar("P_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class Verified(Generic[S]):
    """The proof checked without I/O. ``state`` is the method's own (the verified document, ...)."""

    state: S
    role: Role | None = None  # the role the request named, for methods whose request names it


def requested_role(role: Role | None) -> Role:
    """The role the request named; for methods with ``role_from_request`` the pipeline always picks one."""
    if role is None:
        raise RuntimeError("this method takes its role from the request, and the pipeline gave none")
    return role


@dataclass(frozen=True, slots=True)
class Identified(Generic[S]):
    """Who the machine is, the role it gets, and the certificate it renews (None on a first issuance)."""

    state: S
    identity: VerifiedIdentity
    role: Role
    prior: PriorCertificate | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """The method's step inside the issuance transaction is done."""

    nonce: str | None = None  # EC2: a nonce generated here, returned to the client once


class IssuanceMethod(Protocol[P_contra, S]):
    """One way to get a certificate: its steps, and nothing else of the pipeline.

    Refusals are raised as :class:`~issuer.errors.IssuerError` from any step.
    """

    @property
    def name(self) -> str:
        """The method's name in the catalogue and the audit trail."""
        ...

    @property
    def role_from_request(self) -> bool:
        """True when the request names the role (EC2, IAM, x509pop); False when the proof's record does."""
        ...

    def verify(self, proof: P_contra, *, csr: CheckedCSR, role: Role | None, now: datetime) -> Verified[S]:
        """Check the proof without I/O (the ``attest`` package)."""
        ...

    async def identify(
        self, verified: Verified[S], *, transaction: AsyncSession, request_id: str, now: datetime
    ) -> Identified[S]:
        """Learn who the machine is: burn a single-use proof, ask STS, read the store.

        ``transaction`` is the issuance's own: a step that uses it has begun it, and its writes
        commit with the certificate or roll back with any refusal (the join token is consumed
        here). A method that uses it must make no outbound call afterwards (it would hold the
        transaction open across the call).
        """
        ...

    async def check_upstream(self, identified: Identified[S], *, now: datetime) -> None:
        """Calls out after the decision allowed the request (DescribeInstances), before the transaction."""
        ...

    async def claim_in_transaction(
        self, transaction: AsyncSession, identified: Identified[S], *, request_id: str, now: datetime
    ) -> Claimed:
        """The method's write in the issuance transaction (bind the instance, supersede the renewed certificate)."""
        ...


@dataclass(frozen=True, slots=True)
class Peeked(Generic[S]):
    """Who is asking, read without writing anything, with the deny list read in the same round trip."""

    identified: Identified[S]
    denials: Sequence[InForce]


@dataclass(frozen=True, slots=True)
class ClaimStep:
    """A method's claim as the first step of the statement that records the certificate (Postgres).

    ``sql`` is a data-modifying CTE step returning one row when the claim holds (the token was
    still unused, the renewed certificate still active) and none when it does not; then nothing
    is written. Its parameters are ``params`` (named ``c_*``) and the record's own
    (``:created_at``, ``:request_id``, ``:serial``). See
    :func:`issuer.store.certificates.record_claimed`.
    """

    sql: str
    params: Mapping[str, Any]
    claimed: Claimed = Claimed()  # what the client is told of the claim (EC2: a new nonce)
    prelude: str = ""  # CTE steps before the claim, written whether or not it holds (a burnt replay guard)


@runtime_checkable
class OneStatementClaim(Protocol[S]):
    """A method whose write fits in the recording statement: on Postgres, the pipeline then reads
    (:meth:`peek`, one round trip with the deny list), decides, signs, and claims and records in one
    statement — two or three round trips and no transaction held across the signature, instead of
    BEGIN, the reads and writes, and COMMIT. A bad proof still costs no signature: the read refuses it.
    If the claim no longer holds when the statement runs (a concurrent request won), the signed
    certificate is discarded, nothing is written, and :meth:`claim_refused` says why.
    """

    async def peek(self, verified: Verified[S], *, session: AsyncSession, now: datetime) -> Peeked[S]:
        """:meth:`IssuanceMethod.identify` without writes: refuse what the store already refuses."""
        ...

    def asks_upstream(self, identified: Identified[S]) -> bool:
        """Whether :meth:`IssuanceMethod.check_upstream` calls out for this request (then no pooled
        database connection is held across the call)."""
        ...

    def claim_step(self, identified: Identified[S], *, now: datetime) -> ClaimStep:
        """The claim, as the recording statement's first step; asked before signing, so it may refuse."""
        ...

    async def claim_refused(self, identified: Identified[S], *, session: AsyncSession) -> Exception:
        """The refusal to raise when the claim step matched nothing."""
        ...
