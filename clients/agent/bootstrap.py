"""Bootstrap: new key → CSR → proof → issuer → checked answer → files on disk.

The three attestation methods differ only in their proof, so each is a small
:class:`Proof` and one :func:`bootstrap` sequences the steps. The issuer is
reached through the :class:`IssuerTransport` seam (the real one is
:class:`clients.agent.http.IssuerClient`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from clients.agent.files import WrittenFiles, read_nonce, store_nonce
from clients.agent.installed import install_issued
from clients.agent.issued import IssuedCertificate, parse_issue_response
from clients.agent.remembered import Remembered
from clients.agent.state import AgentState
from clients.imds import InstanceIdentity
from clients.keys import build_csr, csr_der, csr_pem, generate_private_key
from clients.wire import ISSUE_PATHS, Field, KeyType, Method, ResponseField

if TYPE_CHECKING:
    from clients.sts_proof import AwsCredentials

__all__ = [
    "BootstrapResult",
    "Ec2Proof",
    "IamProof",
    "InstanceIdentitySource",
    "IssuerTransport",
    "Progress",
    "Proof",
    "TokenProof",
    "bootstrap",
]

Progress = Callable[[str], None]


class IssuerTransport(Protocol):
    """POSTs JSON to the issuer; raises the :mod:`clients.errors` of :class:`clients.agent.http.IssuerClient`."""

    def post_json(
        self, path: str, body: Mapping[str, object], *, headers: Mapping[str, str] | None = None
    ) -> Mapping[str, object]: ...


class InstanceIdentitySource(Protocol):
    def instance_identity(self) -> InstanceIdentity: ...


class Proof(Protocol):
    """One attestation method's part of the issue request."""

    @property
    def method(self) -> Method: ...

    def fields(self, *, csr_der: bytes, progress: Progress) -> dict[str, object]:
        """The proof fields of the request body (called once, before the request)."""
        ...

    def accepted(self, issued: Mapping[str, object]) -> None:
        """Called with the raw 201 body as soon as it arrives, before any other check."""
        ...


@dataclass(frozen=True)
class TokenProof:
    """A one-time join token; ``on_accepted`` hears that it is spent (the daemon then never sends it again)."""

    token: str
    on_accepted: Callable[[str], None] | None = None
    method: Method = "token"

    def fields(self, *, csr_der: bytes, progress: Progress) -> dict[str, object]:
        return {Field.TOKEN: self.token}

    def accepted(self, issued: Mapping[str, object]) -> None:
        if self.on_accepted is not None:
            self.on_accepted(self.token)


def _random_nonce() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Ec2Proof:
    """The identity document and its rsa2048 signature, plus this instance's nonce.

    The nonce lives in ``out_dir/instance-nonce``. A new one is written *before* the
    request: if the issuer commits the binding and the agent dies before the answer
    arrives, the nonce that binds the instance is still on disk.
    """

    imds: InstanceIdentitySource
    out_dir: Path
    new_nonce: Callable[[], str] = _random_nonce
    method: Method = "aws-ec2"

    def fields(self, *, csr_der: bytes, progress: Progress) -> dict[str, object]:
        progress("reading the instance identity document (IMDSv2)")
        identity = self.imds.instance_identity()
        if identity.instance_id:
            progress(f"instance {identity.instance_id} in {identity.account_id}/{identity.region}")
        nonce = read_nonce(self.out_dir)
        if nonce is None:
            nonce = self.new_nonce()
            store_nonce(self.out_dir, nonce)
            progress(f"created a new instance nonce in {self.out_dir}")
        return {Field.DOCUMENT: identity.document, Field.RSA2048: identity.rsa2048, Field.NONCE: nonce}

    def accepted(self, issued: Mapping[str, object]) -> None:
        nonce = issued.get(ResponseField.NONCE)
        if isinstance(nonce, str) and nonce and nonce != read_nonce(self.out_dir):
            store_nonce(self.out_dir, nonce)


@dataclass(frozen=True)
class IamProof:
    """A GetCallerIdentity request signed for this issuer and this CSR."""

    credentials: AwsCredentials
    region: str
    server_id: str
    host: str | None = None
    method: Method = "aws-iam"

    def fields(self, *, csr_der: bytes, progress: Progress) -> dict[str, object]:
        # Imported here: botocore takes half a second to import and only this method needs it.
        from clients.sts_proof import sign_get_caller_identity

        signed = sign_get_caller_identity(
            credentials=self.credentials,
            region=self.region,
            server_id=self.server_id,
            csr_der=csr_der,
            host=self.host,
        )
        progress(f"signed an STS GetCallerIdentity request for {signed.url}")
        return {Field.STS_REQUEST: signed.to_wire()}

    def accepted(self, issued: Mapping[str, object]) -> None:
        return None


@dataclass(frozen=True)
class BootstrapResult:
    issued: IssuedCertificate
    files: WrittenFiles
    state: AgentState


def _ignore(_: str) -> None:
    return None


def bootstrap(
    proof: Proof,
    *,
    transport: IssuerTransport,
    out_dir: Path,
    role: str | None = None,
    key_type: KeyType = "ec-p256",
    common_name: str | None = None,
    server: str = "",
    server_id: str | None = None,
    settings: Remembered | None = None,
    progress: Progress = _ignore,
) -> BootstrapResult:
    """Get a certificate for a new local key and install both in ``out_dir``, with
    ``issuer.json`` naming ``server``, the issuer's server id (its own answer's,
    else ``server_id``) and the ``settings`` to remember.

    ``out_dir`` must exist (see :func:`clients.agent.files.prepare_out_dir`).
    Nothing but the EC2 nonce is written unless the issuer's answer is a
    certificate for the new key. Raises the :class:`clients.errors.AgentError`
    subclasses of the steps (ImdsError, CredentialsError, TransportError,
    ServerProblem, ResponseError, FilesystemError).
    """
    progress(f"generating a new {key_type} key")
    key = generate_private_key(key_type)
    csr = build_csr(key, common_name=common_name)
    body: dict[str, object] = {Field.CSR: csr_pem(csr)}
    if role:
        body[Field.ROLE] = role
    body.update(proof.fields(csr_der=csr_der(csr), progress=progress))

    path = ISSUE_PATHS[proof.method]
    progress(f"requesting a certificate ({proof.method}{f', role {role}' if role else ''})")
    answer = transport.post_json(path, body)
    proof.accepted(answer)
    issued = parse_issue_response(answer, key=key)
    state = AgentState(
        server=server,
        server_id=issued.server_id or server_id,
        method=proof.method,
        role=issued.role or role,
        serial=issued.serial,
        not_after=issued.not_after,
        renew_after=issued.renew_after,
        settings=settings or Remembered(),
    )
    files = install_issued(out_dir, key=key, issued=issued, state=state)
    return BootstrapResult(issued=issued, files=files, state=state)
