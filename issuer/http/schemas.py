"""Wire schemas: an untrusted JSON object in, a typed :class:`IssueRequest` out, or a 4xx with a stable code.

Every field is checked for presence, type and size here, at the edge; the use
cases never see request dicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from issuer.attest.ec2 import Ec2Proof
from issuer.attest.sts import StsRequest
from issuer.attest.token import TokenProof
from issuer.durations import parse_duration
from issuer.errors import ClientError, Unauthorized
from issuer.http.sts_wire import parse_sts_request
from issuer.service.issuance.ec2 import Ec2Submission
from issuer.service.issuance.model import IssueRequest
from issuer.service.issuance.renew import RenewProof

__all__ = [
    "EC2_FIELDS",
    "IAM_FIELDS",
    "TOKEN_FIELDS",
    "ec2_request",
    "iam_request",
    "text_field",
    "token_request",
]

MAX_CSR = 16 * 1024
MAX_DOCUMENT = 16 * 1024
MAX_BLOB = 16 * 1024
COMMON_FIELDS = frozenset({"csr", "role", "ttl"})
TOKEN_FIELDS = COMMON_FIELDS | {"token"}
EC2_FIELDS = COMMON_FIELDS | {"document", "rsa2048", "pkcs7", "signature", "nonce"}
RENEW_FIELDS = COMMON_FIELDS
IAM_FIELDS = COMMON_FIELDS | {
    "sts_request",
    "iam_http_request_method",
    "iam_request_url",
    "iam_request_headers",
    "iam_request_body",
}
_FORMS = ("rsa2048", "pkcs7", "signature")
_NONCE = re.compile(r"[A-Za-z0-9._~+/=-]{16,128}")
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def text_field(
    body: Mapping[str, Any], name: str, *, max_len: int, required: bool = True, blank_ok: bool = False
) -> str | None:
    """A string field: None when absent (or null) and optional; ClientError ``field_missing``/``field_invalid``."""
    value = body.get(name)
    if value is None:
        if required:
            raise ClientError(f"The field {name!r} is required.", code="field_missing")
        return None
    if not isinstance(value, str):
        raise ClientError(f"The field {name!r} must be a string.", code="field_invalid")
    if (not value and not blank_ok) or len(value) > max_len:
        raise ClientError(f"The field {name!r} must be 1 to {max_len} characters long.", code="field_invalid")
    return value


def _required(body: Mapping[str, Any], name: str, *, max_len: int) -> str:
    value = text_field(body, name, max_len=max_len)
    assert value is not None
    return value


def _issue(body: Mapping[str, Any], proof: Any) -> IssueRequest[Any]:
    csr = _required(body, "csr", max_len=MAX_CSR)
    role = text_field(body, "role", max_len=64, required=False)
    if role is not None and not _ROLE.fullmatch(role):
        raise ClientError("The field 'role' is not a role name.", code="field_invalid")
    ttl_value = body.get("ttl")
    ttl = None
    if ttl_value is not None:
        if not isinstance(ttl_value, str | int) or isinstance(ttl_value, bool):
            raise ClientError("The field 'ttl' must be a duration such as \"12h\".", code="field_invalid")
        if isinstance(ttl_value, str) and len(ttl_value) > 32:
            raise ClientError("The field 'ttl' must be a duration such as \"12h\".", code="field_invalid")
        try:
            ttl = parse_duration(ttl_value)
        except ValueError as exc:
            raise ClientError(f"The field 'ttl': {exc}.", code="field_invalid") from None
    return IssueRequest(csr_pem=csr, proof=proof, role=role, ttl=ttl)


def token_request(body: Mapping[str, Any]) -> IssueRequest[TokenProof]:
    """``{"csr", "token", "role"?, "ttl"?}``."""
    token = _required(body, "token", max_len=256)
    return _issue(body, TokenProof(token=token))


def ec2_request(body: Mapping[str, Any]) -> IssueRequest[Ec2Submission]:
    """``{"csr", "document", exactly one of "rsa2048" | "pkcs7" | "signature", "nonce"?, "role"?, "ttl"?}``.

    A signature field that is present counts, even blank: exactly one form, and it must not be blank
    (``ec2_proof_form``).
    """
    document = _required(body, "document", max_len=MAX_DOCUMENT)
    forms = {name: text_field(body, name, max_len=MAX_BLOB, required=False, blank_ok=True) for name in _FORMS}
    nonce = text_field(body, "nonce", max_len=128, required=False)
    if nonce is not None and not _NONCE.fullmatch(nonce):
        raise ClientError("The nonce must be 16 to 128 URL-safe characters.", code="field_invalid")
    proof = Ec2Proof.from_fields(
        document=document,
        rsa2048=forms.get("rsa2048"),
        pkcs7=forms.get("pkcs7"),
        signature=forms.get("signature"),
    )
    return _issue(body, Ec2Submission(proof=proof, nonce=nonce))


def renew_request(
    body: Mapping[str, Any], *, authorization: str | None, peer_certificate: bytes | None
) -> IssueRequest[RenewProof]:
    """``{"csr", "ttl"?}`` with ``Authorization: Bearer <token>`` or a TLS client certificate."""
    token = None
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized(
                "Send the renewal token as Authorization: Bearer <token>.",
                code="renew_token_invalid",
                reason=f"Authorization scheme {scheme[:20]!r}",
            )
        token = value.strip()
    return _issue(body, RenewProof(token=token, peer_certificate=peer_certificate))


def iam_request(body: Mapping[str, Any]) -> IssueRequest[StsRequest]:
    """``{"csr", "sts_request" | Vault's "iam_*" fields, "role"?, "ttl"?}``."""
    return _issue(body, parse_sts_request(body))
