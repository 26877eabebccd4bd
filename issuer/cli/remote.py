"""``issuer --server URL …``: the same commands, through the admin API, signed in with the caller's IAM identity.

Credentials come from botocore's chain (``AWS_PROFILE`` / ``--profile``, SSO after ``aws sso
login``, environment keys, a CI or instance role). For every request a fresh STS
``GetCallerIdentity`` is signed (SigV4, botocore's signer) with three headers the server checks
(:mod:`issuer.attest.admin_proof`): the server's ID, ``X-Issuer-Purpose: admin`` and the digest
of exactly this request. It is sent base64-encoded in ``X-Issuer-Admin-Proof``; the server
forwards it to STS once, never twice. Nothing secret leaves this machine but that signature.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from issuer.attest.admin_proof import ADMIN_PROOF_HEADER, ADMIN_PURPOSE, request_digest
from issuer.attest.sts import ADMIN_NONCE_HEADER, ADMIN_REQUEST_HEADER, PURPOSE_HEADER, SERVER_ID_HEADER
from issuer.cli.errors import CliError, fail

__all__ = ["RemoteServer", "call_action", "sign_admin_proof"]

STS_BODY = b"Action=GetCallerIdentity&Version=2011-06-15"
STS_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class RemoteServer:
    """Where the admin API is and how to reach it (from ``--server``, ``--server-id``, ``--profile``, …)."""

    url: str
    server_id: str | None = None
    profile: str | None = None
    ca_bundle: str | None = None
    sts_region: str | None = None

    @classmethod
    def from_args(cls, args: Any) -> RemoteServer:
        url = str(args.server).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise fail(f"--server {url!r} is not an http(s):// base URL", exit_status=2)
        if parts.scheme == "http" and not _loopback(parts.hostname) and not args.insecure_http:
            raise fail(
                f"--server {url}: plain HTTP would let anyone on the path read tokens and results; "
                "use https:// (with --ca-bundle for a private CA), or --insecure-http",
                exit_status=2,
            )
        return cls(
            url=url,
            server_id=args.server_id or os.environ.get("ISSUER_SERVER_ID") or None,
            profile=args.profile,
            ca_bundle=args.ca_bundle,
            sts_region=args.sts_region,
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sign_admin_proof(credentials: Any, *, server_id: str, method: str, target: str, body: bytes, region: str) -> str:
    """The ``X-Issuer-Admin-Proof`` value for one request: a SigV4-signed GetCallerIdentity, base64 JSON."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    host = "sts.amazonaws.com" if region == "aws-global" else f"sts.{region}.amazonaws.com"
    if region.startswith("cn-"):
        host += ".cn"
    sts = AWSRequest(
        method="POST",
        url=f"https://{host}/",
        data=STS_BODY,
        headers={
            "Host": host,
            "Content-Type": STS_CONTENT_TYPE,
            SERVER_ID_HEADER: server_id,
            PURPOSE_HEADER: ADMIN_PURPOSE,
            ADMIN_REQUEST_HEADER: request_digest(method, target, body),
            ADMIN_NONCE_HEADER: secrets.token_hex(16),
        },
    )
    SigV4Auth(credentials, "sts", "us-east-1" if region == "aws-global" else region).add_auth(sts)
    proof = {
        "method": "POST",
        "url": f"https://{host}/",
        "headers": {str(name): str(value) for name, value in sts.headers.items()},
        "body": base64.b64encode(STS_BODY).decode("ascii"),
    }
    return base64.b64encode(json.dumps(proof, separators=(",", ":")).encode()).decode("ascii")


def call_action(server: RemoteServer, *, method: str, path: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Run one action through the admin API; its JSON result.

    ``path`` may hold ``{name}`` parts, filled (percent-encoded) from ``arguments``. Raises
    :class:`CliError` with one line: the server's problem detail and code, or why it was not reached.
    """
    rest = {k: v for k, v in arguments.items() if v is not None and v is not False}
    for name in [n for n in rest if "{" + n + "}" in path]:
        path = path.replace("{" + name + "}", quote(str(rest.pop(name)), safe=""))
    body = b""
    if method == "GET":
        query = urlencode({k: _query_value(v) for k, v in rest.items()})
        target = f"{path}?{query}" if query else path
    else:
        target = path
        body = json.dumps(rest).encode()
    credentials, region = _credentials(server)
    server_id = server.server_id or _discover_server_id(server)
    headers = {
        ADMIN_PROOF_HEADER: sign_admin_proof(
            credentials, server_id=server_id, method=method, target=target, body=body, region=region
        ),
        "Accept": "application/json",
    }
    if method == "POST":
        headers["Content-Type"] = "application/json"
    return _exchange(server, method, target, body if method == "POST" else None, headers)


def _query_value(value: Any) -> str:
    return "true" if value is True else str(value)


def _credentials(server: RemoteServer) -> tuple[Any, str]:
    import botocore.exceptions
    import botocore.session

    try:
        session = botocore.session.Session(profile=server.profile)
        credentials = session.get_credentials()
        region = server.sts_region or session.get_config_variable("region") or os.environ.get("AWS_REGION")
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except botocore.exceptions.ProfileNotFound as exc:
        raise fail(f"AWS profile not found: {exc}", code="aws_profile_not_found") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise fail(f"could not load AWS credentials: {exc}", code="aws_credentials_failed") from None
    if frozen is None:
        raise fail(
            "no AWS credentials to sign in with: set AWS_PROFILE (or --profile; `aws sso login` for SSO), "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where a role's credentials are available",
            code="aws_credentials_missing",
        )
    return frozen, str(region or "us-east-1")


def _discover_server_id(server: RemoteServer) -> str:
    described = _exchange(server, "GET", "/v1/admin", None, {"Accept": "application/json"})
    server_id = described.get("server_id")
    if not isinstance(server_id, str) or not server_id:
        raise fail(f"{server.url} did not say its server ID; pass --server-id", code="server_id_unknown")
    return server_id


def _exchange(
    server: RemoteServer, method: str, target: str, body: bytes | None, headers: Mapping[str, str]
) -> dict[str, Any]:
    # The URL is the checked http(s) --server base and a path of ours.
    request = urllib.request.Request(server.url + target, data=body, method=method, headers=dict(headers))  # noqa: S310
    context = ssl.create_default_context(cafile=server.ca_bundle) if server.url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT, context=context) as response:  # noqa: S310
            payload = response.read()
    except urllib.error.HTTPError as exc:
        raise _problem(server, exc) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise fail(f"cannot reach {server.url}: {reason}", code="server_unreachable") from None
    try:
        decoded = json.loads(payload)
    except ValueError:
        raise fail(f"{server.url} answered something that is not JSON", code="server_answer_invalid") from None
    if not isinstance(decoded, dict):
        raise fail(f"{server.url} answered something that is not a JSON object", code="server_answer_invalid")
    return decoded


def _problem(server: RemoteServer, exc: urllib.error.HTTPError) -> CliError:
    try:
        problem = json.loads(exc.read(64 * 1024))
    except (ValueError, OSError):
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    code = str(problem.get("code") or f"http_{exc.code}")
    detail = str(problem.get("detail") or exc.reason)
    if exc.code == 404 and code == "not_found":
        detail = f"{server.url} has no admin API here (is [[admins]] configured, and is this the issuer?)"
    request_id = problem.get("request_id")
    suffix = f" ({exc.code} {code}" + (f", request {request_id})" if request_id else ")")
    return fail(" ".join(detail.split()) + suffix, code=code)
