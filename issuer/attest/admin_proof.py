"""An operator's proof, the pure part: a signed STS request made for one admin API request.

An operator signs (SigV4, their own IAM credentials) an ``sts:GetCallerIdentity`` request
that they do not send; it travels base64-encoded in the ``X-Issuer-Admin-Proof`` header of the
admin request, and the service forwards it to STS once (as for machines). Besides every check
a machine's proof passes (:func:`issuer.attest.sts.check_signed_request`: STS host, body,
SigV4 shape, server ID, 5 minutes of skew here), three signed headers make it an operator's
proof for *this* request only:

======================== ===============================================================
``X-Issuer-Purpose``     ``admin`` — a machine's attestation proof never carries it (and the
                         issuance endpoints refuse one that does), so neither proof can stand
                         in for the other
``X-Issuer-Admin-Request`` :func:`request_digest` of the admin request: method, path and query
                         as sent, and the body's SHA-256 — a proof cannot be moved to
                         another request
``X-Issuer-Server-ID``   this service's ``server_id``
======================== ===============================================================

The proof is single use (its signature is burnt before STS is asked), so even the same
request cannot be sent twice with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime, timedelta
from typing import NoReturn

from issuer.attest.sts import (
    ADMIN_REQUEST_HEADER,
    CSR_BINDING_HEADER,
    PURPOSE_HEADER,
    StsRequest,
    ValidatedStsRequest,
    check_signed_request,
)
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.errors import Unauthorized

__all__ = [
    "ADMIN_PROOF_HEADER",
    "ADMIN_PROOF_SKEW",
    "ADMIN_PURPOSE",
    "MAX_PROOF_HEADER",
    "decode_proof_header",
    "request_digest",
    "validate_admin_proof",
]

ADMIN_PROOF_HEADER = "X-Issuer-Admin-Proof"
ADMIN_PURPOSE = "admin"
# An operator signs right before sending: much less than STS's own 15 minutes is needed.
ADMIN_PROOF_SKEW = timedelta(minutes=5)
MAX_PROOF_HEADER = 7 * 1024  # the server refuses header lines over 8190 bytes anyway


def request_digest(method: str, target: str, body: bytes) -> str:
    """Hex SHA-256 of ``METHOD\\nTARGET\\nhex(sha256(body))``: what ``X-Issuer-Admin-Request`` carries.

    ``target`` is the request target exactly as sent on the wire: the path and, if any, ``?`` and
    the query (``/v1/admin/certificates?limit=5``).
    """
    body_hash = hashlib.sha256(body).hexdigest()
    return hashlib.sha256(f"{method.upper()}\n{target}\n{body_hash}".encode()).hexdigest()


def decode_proof_header(value: str | None) -> dict[str, object]:
    """The ``{method, url, headers, body}`` object in an ``X-Issuer-Admin-Proof`` header value.

    Raises ``Unauthorized`` ``admin_proof_missing`` (no header) or ``admin_proof_malformed``.
    """
    if value is None or not value.strip():
        raise Unauthorized(
            f"The admin API needs a signed STS request in the {ADMIN_PROOF_HEADER} header "
            "(`issuer --server URL …` makes one from your AWS credentials).",
            code="admin_proof_missing",
        )
    if len(value) > MAX_PROOF_HEADER:
        _malformed(f"the header is longer than {MAX_PROOF_HEADER} characters")
    try:
        decoded = json.loads(base64.b64decode(value.strip().encode("ascii"), validate=True))
    except (binascii.Error, UnicodeError, ValueError, RecursionError):
        _malformed("not base64 of a JSON object")
    if not isinstance(decoded, dict):
        _malformed("not base64 of a JSON object")
    return decoded


def validate_admin_proof(
    req: StsRequest,
    *,
    server_id: str,
    digest: str,
    hosts: StsHostAllowlist,
    now: datetime,
    max_skew: timedelta = ADMIN_PROOF_SKEW,
) -> ValidatedStsRequest:
    """Check an operator's signed request for the admin request whose :func:`request_digest` is ``digest``.

    Raises ``Unauthorized`` with the codes of :func:`~issuer.attest.sts.check_signed_request`, and
    ``admin_proof_purpose`` (no signed ``X-Issuer-Purpose: admin``: a machine's proof, say),
    ``admin_proof_request_missing`` / ``_unsigned`` / ``_mismatch`` (not made for this request),
    ``admin_proof_csr_binding`` (a CSR binding has no place in an operator's proof).
    """
    checked = check_signed_request(req, server_id=server_id, hosts=hosts, now=now, max_skew=max_skew)
    headers = {name.lower(): value for name, value in req.headers}
    signed = checked.signed_headers
    purpose = PURPOSE_HEADER.lower()
    if headers.get(purpose) != ADMIN_PURPOSE or purpose not in signed:
        _deny(
            "admin_proof_purpose",
            f"this is not an operator's proof: it must sign {PURPOSE_HEADER}: {ADMIN_PURPOSE}",
            f"{PURPOSE_HEADER} {headers.get(purpose, '')[:40]!r}, signed: {purpose in signed}",
        )
    if CSR_BINDING_HEADER.lower() in headers:
        _deny("admin_proof_csr_binding", "an operator's proof carries no CSR binding", "CSR header present")
    name = ADMIN_REQUEST_HEADER.lower()
    value = headers.get(name)
    if value is None:
        _deny("admin_proof_request_missing", f"the proof must sign {ADMIN_REQUEST_HEADER}", "absent")
    if name not in signed:
        _deny("admin_proof_request_unsigned", f"{ADMIN_REQUEST_HEADER} must be signed", "unsigned")
    if value.lower() != digest:
        _deny(
            "admin_proof_request_mismatch",
            "the proof was made for another request (method, path, query or body)",
            f"{value[:64]!r} != {digest}",
        )
    return checked


def _deny(code: str, detail: str, reason: str) -> NoReturn:
    raise Unauthorized(detail, code=code, reason=f"{code}: {reason}")


def _malformed(why: str) -> NoReturn:
    raise Unauthorized(
        f"The {ADMIN_PROOF_HEADER} header must be base64 of a JSON object {{method, url, headers, body}}.",
        code="admin_proof_malformed",
        reason=f"admin_proof_malformed: {why}",
    )
