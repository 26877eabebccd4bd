"""IAM attestation, the pure part: validate a client's signed STS request.

A machine proves its IAM identity by signing (SigV4) an ``sts:GetCallerIdentity``
request that it does not send itself; the service forwards it to STS once. Because the
service makes that call on the client's behalf, every part of the request is checked
here first, with no I/O, so the service can never be used as a proxy to anything but
STS's ``GetCallerIdentity`` (the holes Vault's ``iam`` auth and aws-iam-authenticator
had: header smuggling, host confusion, other actions, unsigned headers).

The wire forms (native and Vault) are read by :mod:`issuer.attest.sts_wire`; a request
that parses but cannot be accepted is ``Unauthorized`` (401) here, each refusal with
its own stable ``code`` (see ``validate_sts_request``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.errors import Unauthorized

__all__ = [
    "ADMIN_NONCE_HEADER",
    "ADMIN_REQUEST_HEADER",
    "CSR_BINDING_HEADER",
    "PURPOSE_HEADER",
    "SERVER_ID_HEADER",
    "VAULT_SERVER_ID_HEADER",
    "StsRequest",
    "ValidatedStsRequest",
    "check_signed_request",
    "validate_sts_request",
]

SERVER_ID_HEADER = "X-Issuer-Server-ID"
VAULT_SERVER_ID_HEADER = "X-Vault-AWS-IAM-Server-ID"
CSR_BINDING_HEADER = "X-Issuer-CSR-SHA256"
# Operator proofs (the admin API, :mod:`issuer.attest.admin_proof`) sign these two; a machine's never does.
PURPOSE_HEADER = "X-Issuer-Purpose"
ADMIN_REQUEST_HEADER = "X-Issuer-Admin-Request"
# A random value an operator's client signs too, so the same request sent twice within one second
# (SigV4 dates have one-second resolution) is two proofs, not a replay of one.
ADMIN_NONCE_HEADER = "X-Issuer-Admin-Nonce"

_BODY_PAIRS = frozenset({"Action=GetCallerIdentity", "Version=2011-06-15"})
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})
_AMZ_ALLOWED = frozenset({"x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "x-amz-user-agent"})
# Headers that change how a message is framed or routed: never accepted, signed or not.
_FRAMING = frozenset({"transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade", "expect"})
# Everything else that may be forwarded (besides the X-Amz-* allowlist). An unsigned
# header outside this set is dropped; a signed one is refused, because STS would need it.
_FORWARDED = frozenset(
    {
        "host",
        "authorization",
        "content-type",
        "content-length",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
        SERVER_ID_HEADER.lower(),
        CSR_BINDING_HEADER.lower(),
        PURPOSE_HEADER.lower(),
        ADMIN_REQUEST_HEADER.lower(),
        ADMIN_NONCE_HEADER.lower(),
    }
)
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Z0-9]{16,128})/(?P<date>[0-9]{8})/"
    r"(?P<region>[a-z0-9-]{1,40})/(?P<service>[a-z0-9-]{1,40})/aws4_request,"
    r" ?SignedHeaders=(?P<signed>[a-z0-9-]+(?:;[a-z0-9-]+)*),"
    r" ?Signature=(?P<signature>[0-9a-f]{64})"
)
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")


@dataclass(frozen=True, slots=True)
class StsRequest:
    """A client's signed STS request as sent: nothing in it is trusted yet.

    ``headers`` keeps the client's names, values and order; no name occurs twice.
    ``vault_style`` is true when it came in Vault's ``iam_*`` login fields.
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    vault_style: bool


@dataclass(frozen=True, slots=True)
class ValidatedStsRequest:
    """A signed request that passed every local check and may be sent to STS once.

    ``forward_headers`` is exactly what goes upstream (names and values as the client
    sent them, in order, ``Host`` added when the client left it to the URL).
    ``signature_hash`` (hex SHA-256 of the SigV4 signature) is the replay-guard key and
    ``expires_at`` how long it must be kept: STS accepts the signature until then.
    """

    request: StsRequest
    host: str
    region: str
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature_hash: str
    signed_at: datetime
    expires_at: datetime
    csr_bound: bool
    forward_headers: tuple[tuple[str, str], ...]


def validate_sts_request(
    req: StsRequest,
    *,
    server_id: str,
    csr_sha256_hex: str,
    require_csr_binding: bool,
    hosts: StsHostAllowlist,
    now: datetime,
    max_skew: timedelta = timedelta(minutes=15),
) -> ValidatedStsRequest:
    """Check a machine's ``req`` against DESIGN §4 and return what may be forwarded.

    Raises ``Unauthorized`` with the codes of :func:`check_signed_request`, ``sts_purpose_not_allowed``
    (the request carries ``X-Issuer-Purpose``: it was made for the admin API, not to attest a machine)
    and ``sts_csr_binding_missing`` / ``_unsigned`` / ``_mismatch``.
    """
    checked = check_signed_request(req, server_id=server_id, hosts=hosts, now=now, max_skew=max_skew)
    headers = {name.lower(): value for name, value in req.headers}
    if PURPOSE_HEADER.lower() in headers:
        _deny(
            "sts_purpose_not_allowed",
            "this signed request was made for the admin API, not to attest a machine",
            f"{PURPOSE_HEADER} {headers[PURPOSE_HEADER.lower()][:40]!r}",
        )
    csr_bound = _check_csr_binding(
        headers, checked.signed_headers, csr_sha256_hex=csr_sha256_hex, required=require_csr_binding
    )
    return replace(checked, csr_bound=csr_bound)


def check_signed_request(
    req: StsRequest,
    *,
    server_id: str,
    hosts: StsHostAllowlist,
    now: datetime,
    max_skew: timedelta = timedelta(minutes=15),
) -> ValidatedStsRequest:
    """The checks every signed STS request passes, whatever it proves (``csr_bound`` is False).

    Raises ``Unauthorized`` with one of these codes: ``sts_method_not_allowed``,
    ``sts_url_invalid``, ``sts_header_duplicate``, ``sts_host_not_allowed``, ``sts_host_mismatch``,
    ``sts_body_invalid`` (also a non-form ``Content-Type`` or a wrong ``Content-Length``),
    ``sts_auth_invalid``, ``sts_scope_invalid``, ``sts_date_skew``,
    ``sts_header_not_allowed``, ``sts_header_unsigned`` (``host``, ``x-amz-date`` or
    ``x-amz-security-token`` not signed), ``sts_signed_header_missing``,
    ``sts_server_id_missing`` / ``_unsigned`` / ``_mismatch``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if req.method != "POST":
        _deny("sts_method_not_allowed", "the STS request must be a POST", f"method {req.method!r}")
    host = _url_host(req.url)
    region = hosts.region_for(host)
    if region is None:
        _deny("sts_host_not_allowed", "the STS request names a host that is not an STS endpoint", host)
    headers = {name.lower(): value for name, value in req.headers}
    if len(headers) != len(req.headers):  # parse_sts_request refuses these; a hand-made StsRequest may not
        _deny("sts_header_duplicate", "a header is sent more than once", "duplicate names")
    sent_host = headers.get("host")
    if sent_host is not None and sent_host.lower() != host:
        _deny("sts_host_mismatch", "the Host header does not match the URL", f"{sent_host!r} != {host!r}")
    _check_body(req.body, headers)

    auth = _AUTHORIZATION.fullmatch(headers.get("authorization", ""))
    if auth is None:
        _deny("sts_auth_invalid", "the Authorization header is not a SigV4 header", "unparsable")
    if auth["service"] != "sts" or auth["region"] != region:
        _deny(
            "sts_scope_invalid",
            "the signature's credential scope is not STS in the host's region",
            f"scope {auth['region']}/{auth['service']}, host {host} is {region}",
        )
    signed = tuple(auth["signed"].split(";"))
    if list(signed) != sorted(set(signed)):
        _deny("sts_auth_invalid", "SignedHeaders is not a sorted list of unique names", auth["signed"])

    signed_at = _signed_at(headers.get("x-amz-date"), now=now, max_skew=max_skew)
    if signed_at.strftime("%Y%m%d") != auth["date"]:
        _deny("sts_scope_invalid", "the credential scope date is not the X-Amz-Date day", auth["date"])
    forward = _check_headers(req, headers, signed, host=host)

    _check_server_id(req, headers, signed, server_id=server_id)
    return ValidatedStsRequest(
        request=req,
        host=host,
        region=region,
        access_key_id=auth["akid"],
        signed_headers=signed,
        signature_hash=hashlib.sha256(auth["signature"].encode("ascii")).hexdigest(),
        signed_at=signed_at,
        expires_at=signed_at + max_skew,
        csr_bound=False,
        forward_headers=forward,
    )


def _deny(code: str, detail: str, reason: str) -> NoReturn:
    raise Unauthorized(detail, code=code, reason=f"{code}: {reason}")


def _url_host(url: str) -> str:
    """The lower-cased host of ``https://<host>/`` (no port, userinfo, query or fragment), else ``sts_url_invalid``."""
    # Parsed by hand rather than with urlsplit: no lenient corner (backslashes,
    # whitespace, userinfo, empty query or fragment) can survive.
    bad = not url.startswith("https://") or any(c in "\\?#@%" or not " " < c < "\x7f" for c in url)
    authority, slash, path = url.removeprefix("https://").partition("/")
    if bad or slash != "/" or path or not authority or ":" in authority:
        _deny("sts_url_invalid", "the STS request URL must be https://<sts-host>/", url[:200])
    return authority.lower()


def _check_body(body: bytes, headers: Mapping[str, str]) -> None:
    pairs = body.decode("ascii", errors="replace").split("&")
    if len(pairs) != len(_BODY_PAIRS) or set(pairs) != _BODY_PAIRS:
        _deny(
            "sts_body_invalid",
            "the STS request body must be exactly Action=GetCallerIdentity&Version=2011-06-15",
            repr(body[:200]),
        )
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in _FORM_TYPES:
        _deny("sts_body_invalid", "the STS request must be form-encoded", f"content-type {media_type!r}")
    length = headers.get("content-length")
    if length is not None and length != str(len(body)):
        _deny("sts_body_invalid", "Content-Length does not match the body", f"{length!r} != {len(body)}")


def _signed_at(value: str | None, *, now: datetime, max_skew: timedelta) -> datetime:
    if value is None or not _AMZ_DATE.fullmatch(value):
        _deny("sts_date_skew", "the STS request needs an X-Amz-Date header", f"x-amz-date {value!r}")
    try:
        at = datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        _deny("sts_date_skew", "the STS request's X-Amz-Date is not a valid time", repr(value))
    if abs(now - at) > max_skew:
        _deny("sts_date_skew", "the STS request was not signed within the allowed time", f"{at} vs {now}")
    return at


def _check_headers(
    req: StsRequest, headers: Mapping[str, str], signed: tuple[str, ...], *, host: str
) -> tuple[tuple[str, str], ...]:
    """Refuse what must not pass and return the headers to forward, in the client's order."""
    forwardable = _FORWARDED | _AMZ_ALLOWED
    if req.vault_style:
        forwardable = forwardable | {VAULT_SERVER_ID_HEADER.lower()}
    for name in headers:
        if name in _FRAMING or name.startswith("proxy-") or (name.startswith("x-amz-") and name not in _AMZ_ALLOWED):
            _deny("sts_header_not_allowed", "the STS request carries a header that is not allowed", name)
    for name in signed:
        if name not in forwardable:
            _deny("sts_header_not_allowed", "the STS request signs a header that is not allowed", name)
        if name != "host" and name not in headers:
            _deny("sts_signed_header_missing", "a signed header was not sent", name)
    must_sign = ("host", "x-amz-date", "x-amz-security-token")
    for name in must_sign:
        if name not in signed and (name != "x-amz-security-token" or name in headers):
            _deny("sts_header_unsigned", f"the {name} header must be signed", name)
    forward = tuple((n, v) for n, v in req.headers if n.lower() in forwardable)
    if "host" not in headers:
        forward += (("Host", host),)
    return forward


def _check_server_id(req: StsRequest, headers: Mapping[str, str], signed: tuple[str, ...], *, server_id: str) -> None:
    names = [SERVER_ID_HEADER.lower()]
    if req.vault_style:
        names.append(VAULT_SERVER_ID_HEADER.lower())
    present = [n for n in names if n in headers]
    if not present:
        _deny("sts_server_id_missing", f"the signed request must carry {SERVER_ID_HEADER}", "absent")
    for name in present:
        if name not in signed:
            _deny("sts_server_id_unsigned", f"{SERVER_ID_HEADER} must be signed", name)
        if headers[name] != server_id:
            _deny(
                "sts_server_id_mismatch",
                "the signed request was made for another service",
                f"{name} {headers[name]!r} != {server_id!r}",
            )


def _check_csr_binding(
    headers: Mapping[str, str], signed: tuple[str, ...], *, csr_sha256_hex: str, required: bool
) -> bool:
    name = CSR_BINDING_HEADER.lower()
    value = headers.get(name)
    if value is None:
        if required:
            _deny("sts_csr_binding_missing", f"the signed request must carry {CSR_BINDING_HEADER}", "absent")
        return False
    if name not in signed:
        _deny("sts_csr_binding_unsigned", f"{CSR_BINDING_HEADER} must be signed", "unsigned")
    if value.lower() != csr_sha256_hex.lower():
        _deny(
            "sts_csr_binding_mismatch",
            "the signed request was made for another CSR",
            f"{value!r} != {csr_sha256_hex!r}",
        )
    return True
