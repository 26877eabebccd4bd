"""What STS answered to a forwarded GetCallerIdentity, and the seam that asks it.

:class:`StsCaller` is the seam the IAM method depends on (the real one is
:class:`issuer.aws.sts.AiohttpStsCaller`); :func:`parse_sts_response` is the pure
reading of STS's answer, trusting nothing but a 200 ``GetCallerIdentityResponse``.

Errors::

    Unauthorized(code="sts_rejected")            STS refused the signature or credentials (401)
    UpstreamUnavailable(code="sts_unavailable")  throttling, 5xx, redirect, or an answer that is not STS's (503)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Protocol

from issuer.attest.sts import ValidatedStsRequest
from issuer.errors import Unauthorized, UpstreamUnavailable

__all__ = ["MAX_RESPONSE_BYTES", "CallerIdentity", "StsCaller", "parse_sts_response", "sts_unavailable"]

STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
MAX_RESPONSE_BYTES = 64 * 1024
# STS error codes that mean "these credentials / this signature are not good": the
# client's fault, 401. Everything else that is not a 200 is the upstream's problem, 503.
REJECTED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "InvalidToken",
        "MissingAuthenticationToken",
        "NotAuthorized",
        "RegionDisabledException",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """What STS said the signer is: ``arn`` as returned, the account and the unique ID."""

    arn: str
    account_id: str
    user_id: str


class StsCaller(Protocol):
    async def get_caller_identity(self, request: ValidatedStsRequest) -> CallerIdentity:
        """Send ``request`` to STS once; raise ``Unauthorized`` or ``UpstreamUnavailable``."""
        ...


def parse_sts_response(status: int, body: bytes) -> CallerIdentity:
    """Turn STS's answer into a ``CallerIdentity``; see the module docstring for errors."""
    if status == 200:
        root = _xml(body)
        result = _child(root, "GetCallerIdentityResult") if _is(root, "GetCallerIdentityResponse") else None
        fields = {name: _text(result, name) for name in ("Arn", "Account", "UserId")} if result is not None else {}
        arn, account, user_id = fields.get("Arn"), fields.get("Account"), fields.get("UserId")
        if not (arn and account and user_id):
            raise sts_unavailable(f"200 without a GetCallerIdentityResponse: {body[:300]!r}")
        return CallerIdentity(arn=arn, account_id=account, user_id=user_id)
    if 300 <= status < 400:
        raise sts_unavailable(f"STS answered {status}; redirects are not followed")
    code = _error_code(body) if 400 <= status < 500 else None
    if code in REJECTED_CODES:
        raise Unauthorized(
            "STS did not accept the signed request",
            code="sts_rejected",
            reason=f"sts_rejected: STS {status} {code}",
        )
    raise sts_unavailable(f"STS {status} {code or ''}: {body[:300]!r}")


def sts_unavailable(reason: str) -> UpstreamUnavailable:
    """The error for every way STS can fail to give a usable answer."""
    return UpstreamUnavailable(
        "STS could not be asked to verify the signed request; try again later",
        code="sts_unavailable",
        reason=f"sts_unavailable: {reason}",
    )


def _xml(body: bytes) -> ET.Element | None:
    # STS documents have no DOCTYPE, entities, comments or CDATA: refusing "<!" outright
    # rules out entity expansion and external entities before the parser sees a byte.
    if b"<!" in body or len(body) > MAX_RESPONSE_BYTES:
        return None
    try:
        return ET.fromstring(body)  # noqa: S314 - see above
    except ET.ParseError:
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _is(element: ET.Element | None, name: str) -> bool:
    return element is not None and element.tag == f"{{{STS_NAMESPACE}}}{name}"


def _child(parent: ET.Element | None, name: str) -> ET.Element | None:
    """The one child ``name`` in the STS namespace; ``None`` if absent or repeated."""
    if parent is None:
        return None
    found = parent.findall(f"{{{STS_NAMESPACE}}}{name}")
    return found[0] if len(found) == 1 else None


def _text(parent: ET.Element, name: str) -> str | None:
    child = _child(parent, name)
    text = (child.text or "").strip() if child is not None else ""
    return text if child is not None and len(child) == 0 and text else None


def _error_code(body: bytes) -> str | None:
    """``Error/Code`` of an ``ErrorResponse`` (STS nests it directly, moto under ``Errors``)."""
    root = _xml(body)
    if root is None or _local(root.tag) != "ErrorResponse":
        return None
    codes = [
        (code.text or "").strip()
        for error in root.iter()
        if _local(error.tag) == "Error"
        for code in error
        if _local(code.tag) == "Code"
    ]
    return codes[0] if len(codes) == 1 and codes[0] else None
