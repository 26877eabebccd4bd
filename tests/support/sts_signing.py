"""Signed STS ``GetCallerIdentity`` requests for tests, made by botocore's own SigV4 signer.

Nothing here computes a signature by hand: ``botocore.auth.SigV4Auth`` signs an
``AWSRequest`` exactly as an SDK-based client would. The only thing added is the clock:
the signing time is a parameter, so a test can make a request signed 16 minutes ago.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

BODY = b"Action=GetCallerIdentity&Version=2011-06-15"
FORM = "application/x-www-form-urlencoded; charset=utf-8"


@dataclass(frozen=True, slots=True)
class SignedStsRequest:
    """A signed request as a client would hand it over; change it only to tamper."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def sts_request(self) -> dict[str, object]:
        """The native ``sts_request`` object of an issue request."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "body": base64.b64encode(self.body).decode(),
        }

    def vault_fields(self) -> dict[str, object]:
        """Vault's AWS-auth login fields (headers as Go's ``http.Header``: name → [values])."""
        headers = {name: [value] for name, value in self.headers}
        return {
            "iam_http_request_method": self.method,
            "iam_request_url": base64.b64encode(self.url.encode()).decode(),
            "iam_request_headers": base64.b64encode(json.dumps(headers).encode()).decode(),
            "iam_request_body": base64.b64encode(self.body).decode(),
        }

    def header(self, name: str) -> str:
        return next(v for n, v in self.headers if n.lower() == name.lower())

    def with_header(self, name: str, value: str) -> SignedStsRequest:
        """Replace (keeping its position) or append a header, after signing."""
        found = any(n.lower() == name.lower() for n, _ in self.headers)
        if found:
            headers = tuple((n, value if n.lower() == name.lower() else v) for n, v in self.headers)
        else:
            headers = (*self.headers, (name, value))
        return replace(self, headers=headers)

    def without_header(self, name: str) -> SignedStsRequest:
        return replace(self, headers=tuple((n, v) for n, v in self.headers if n.lower() != name.lower()))


class _SigV4AuthAt(SigV4Auth):  # type: ignore[misc]
    """botocore's SigV4 signer with the signing time passed in instead of read from the clock."""

    def __init__(self, credentials: Credentials, service: str, region: str, *, at: datetime) -> None:
        super().__init__(credentials, service, region)
        self._at = at

    def _modify_request_before_signing(self, request: AWSRequest) -> None:
        # add_auth stamps context["timestamp"] with the wall clock just before this hook;
        # everything after it (X-Amz-Date, scope, signature) reads the context value.
        request.context["timestamp"] = self._at.astimezone(UTC).strftime(SIGV4_TIMESTAMP)
        super()._modify_request_before_signing(request)


def sign_get_caller_identity(
    *,
    access_key_id: str,
    secret_access_key: str,
    now: datetime,
    session_token: str | None = None,
    host: str = "sts.amazonaws.com",
    region: str = "us-east-1",
    service: str = "sts",
    url: str | None = None,
    server_id: str | None = "issuer.example.org",
    server_id_header: str = "X-Issuer-Server-ID",
    csr_sha256_hex: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    body: bytes = BODY,
    send_host_header: bool = True,
) -> SignedStsRequest:
    """Sign ``GetCallerIdentity`` for ``host`` at time ``now`` with botocore's SigV4.

    Every header given (server ID, CSR binding, ``extra_headers``) is signed, as an SDK
    signs every header it is given; pass ``extra_headers`` after signing with
    ``with_header`` to model an unsigned one.
    """
    headers: dict[str, str] = {"Content-Type": FORM}
    if send_host_header:
        headers["Host"] = host
    if server_id is not None:
        headers[server_id_header] = server_id
    if csr_sha256_hex is not None:
        headers["X-Issuer-CSR-SHA256"] = csr_sha256_hex
    headers.update(extra_headers or {})
    request = AWSRequest(method="POST", url=url or f"https://{host}/", data=body, headers=headers)
    credentials = Credentials(access_key_id, secret_access_key, session_token)
    _SigV4AuthAt(credentials, service, region, at=now).add_auth(request)
    stamped = request.context["timestamp"]
    assert stamped == now.astimezone(UTC).strftime(SIGV4_TIMESTAMP), "botocore ignored the given time"
    items: list[tuple[str, Any]] = list(request.headers.items())
    return SignedStsRequest(
        method="POST",
        url=request.url,
        headers=tuple((str(n), str(v)) for n, v in items),
        body=body,
    )
