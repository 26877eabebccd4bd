"""Renewal: the current certificate vouches for a NEW key (``POST /v1/renew``).

A new key is made every time (a renewal that kept the key would keep whatever
exposure it had; the issuer refuses it with ``renew_same_key``). The current
certificate is the credential, shown either as a proof-of-possession JWS signed by
the current key (``auth="token"``, :mod:`clients.agent.pop`) or as the TLS client
certificate (``auth="mtls"``: the transport was built to present it, and no
Authorization header is sent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from clients.agent.bootstrap import IssuerTransport, Progress
from clients.agent.files import WrittenFiles
from clients.agent.installed import CurrentCredentials, install_issued
from clients.agent.issued import IssuedCertificate, parse_issue_response
from clients.agent.pop import renewal_token
from clients.agent.remembered import Remembered
from clients.agent.state import AgentState
from clients.errors import UsageError
from clients.keys import build_csr, csr_der, csr_pem, generate_private_key, key_type_of
from clients.wire import DEFAULT_KEY_TYPE, RENEW_PATH, AuthMode, Field, KeyType, Method, method_named

__all__ = ["RenewalResult", "renew", "renewal_key_type"]


@dataclass(frozen=True)
class RenewalResult:
    issued: IssuedCertificate
    files: WrittenFiles
    state: AgentState
    renewed_from: str


def renewal_key_type(current: CurrentCredentials, requested: KeyType | None) -> KeyType:
    """``requested``, else the current key's type, else the default."""
    return requested or key_type_of(current.key) or DEFAULT_KEY_TYPE


def _ignore(_: str) -> None:
    return None


def renew(
    current: CurrentCredentials,
    *,
    transport: IssuerTransport,
    out_dir: Path,
    auth: AuthMode,
    server: str,
    server_id: str | None,
    now: Callable[[], datetime],
    key_type: KeyType | None = None,
    common_name: str | None = None,
    settings: Remembered | None = None,
    progress: Progress = _ignore,
) -> RenewalResult:
    """Renew ``current`` for a new key and install the answer in ``out_dir``.

    ``server_id`` (the issuer's name, the token's ``aud``) is needed for
    ``auth="token"``; ``now`` is read just before signing the token. Nothing is
    written unless the answer is a certificate for the new key. ``settings`` are remembered in
    ``issuer.json`` (default: what it remembered before). Raises
    :class:`UsageError` (``server_id_missing``), :class:`clients.errors.ConfigError`
    (a key that cannot sign a token), and the transport's, parsing's and installing's
    :class:`clients.errors.AgentError` subclasses.
    """
    if auth == "token" and not server_id:
        raise UsageError(
            "renewing with a proof-of-possession token needs the issuer's server id: pass --server-id "
            "(or set ISSUER_SERVER_ID), or use --auth mtls",
            code="server_id_missing",
        )
    new_type = renewal_key_type(current, key_type)
    progress(f"generating a new {new_type} key")
    key = generate_private_key(new_type)
    csr = build_csr(key, common_name=common_name)
    headers: dict[str, str] = {}
    if auth == "token":
        assert server_id is not None
        token = renewal_token(
            key=current.key, certificate=current.certificate, audience=server_id, csr_der=csr_der(csr), now=now()
        )
        headers["Authorization"] = f"Bearer {token}"
    progress(f"renewing certificate {current.serial} ({'mTLS' if auth == 'mtls' else 'proof-of-possession token'})")
    answer = transport.post_json(RENEW_PATH, {Field.CSR: csr_pem(csr)}, headers=headers)
    issued = parse_issue_response(answer, key=key)
    previous = current.state
    state = AgentState(
        server=server,
        server_id=issued.server_id or server_id or (previous.server_id if previous else None),
        method=_method(previous, issued),
        role=issued.role or (previous.role if previous else None),
        serial=issued.serial,
        not_after=issued.not_after,
        renew_after=issued.renew_after,
        settings=settings if settings is not None else (previous.settings if previous else Remembered()),
    )
    files = install_issued(out_dir, key=key, issued=issued, state=state)
    return RenewalResult(issued=issued, files=files, state=state, renewed_from=issued.renewed_from or current.serial)


def _method(previous: AgentState | None, issued: IssuedCertificate) -> Method | None:
    # How the machine first proved who it is (re-attestation uses it); the issuer's identity says it too.
    if previous is not None and previous.method is not None:
        return previous.method
    return method_named(issued.identity.method)
