"""One authorizer decision: the event, the certificate, revocation, the route policy — and the answer.

For each request the authorizer

1. parses the certificate API Gateway passes (``clientCertPem``) and refuses one that does not
   parse, is outside its validity period, or whose serial disagrees with API Gateway's
   ``serialNumber``;
2. refuses a certificate that is revoked, or whose revocation cannot be checked (see
   :mod:`.revocation`);
3. applies the route policy (:mod:`.policy`) to the route template and the request path.

Responses never raise: REST APIs (and HTTP APIs with payload 1.0) get an IAM policy that Allows
or Denies ``execute-api:Invoke`` on the ``methodArn`` (a Deny is a 403 to the client); HTTP APIs
with payload 2.0 get the simple response ``{"isAuthorized": ..., "context": ...}`` (simple
responses must be enabled on the authorizer). A Deny's context carries ``reason`` (a stable
code) and ``detail``. Every decision is one JSON log line on stdout.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Final

from .certificate import ClientCertificate, parse_certificate_pem, serial_matches
from .errors import AuthorizerError, CertificateError
from .event import METHOD_ARN, parse_event
from .policy import parse_policy
from .revocation import RevocationCache
from .settings import load_settings
from .sources import Log, log_line

__all__ = ["Decision", "authorize", "lambda_handler"]

_LOUD_REASONS: Final = ("settings_invalid", "policy_invalid", "internal_error")


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str
    detail: str = ""
    cert: ClientCertificate | None = None
    route: str = ""
    path: str = ""
    rule: str = ""
    revocation: str = "not_checked"
    list_age: float | None = None
    crls: tuple[str, ...] = ()
    request_id: str = ""


def _decide(event: object, env: Mapping[str, str], cache: RevocationCache, now: datetime, log: Log) -> Decision:
    try:
        settings = load_settings(env)
        policy = parse_policy(settings.policy_json)
        request = parse_event(event)
    except AuthorizerError as exc:
        return Decision(False, exc.code, str(exc))
    base = Decision(False, "", route=str(request.route), path=request.request_path[:256], request_id=request.request_id)
    try:
        cert = parse_certificate_pem(request.cert_pem)
    except CertificateError as exc:
        return replace(base, reason=exc.code, detail=str(exc))
    base = replace(base, cert=cert)
    if not serial_matches(cert.serial, request.serial_text):
        return replace(base, reason="cert_serial_mismatch", detail=f"serialNumber {request.serial_text[:80]!r}")
    if now > cert.not_after:
        return replace(base, reason="cert_expired", detail=f"notAfter {cert.not_after.isoformat()}")
    if now < cert.not_before:
        return replace(base, reason="cert_not_yet_valid", detail=f"notBefore {cert.not_before.isoformat()}")
    outcome = cache.check(cert, settings, now=now, log=log)
    base = replace(base, revocation=outcome.state, list_age=outcome.age, crls=outcome.crls)
    if outcome.reason:
        return replace(base, reason=outcome.reason, detail=outcome.detail)
    verdict = policy.decide(request.route, cert, request_paths=request.request_paths)
    return replace(base, allow=verdict.allowed, reason=verdict.reason, rule=verdict.rule, detail=verdict.detail)


def authorize(
    event: object,
    *,
    env: Mapping[str, str],
    cache: RevocationCache,
    now: datetime,
    log: Log = print,
) -> dict[str, Any]:
    """Decide one authorizer event; returns the response API Gateway expects for its shape.

    Never raises: a bug becomes a Deny with reason ``internal_error`` and its traceback logged.
    """
    try:
        decision = _decide(event, env, cache, now, log)
    except Exception as exc:  # deny rather than let API Gateway turn a crash into a 500
        decision = Decision(False, "internal_error", f"{type(exc).__name__}: {exc}")
        log_line(log, "error", "authorizer_bug", traceback=traceback.format_exc())
    _log_decision(log, decision)
    return _response(event, decision)


def _log_decision(log: Log, decision: Decision) -> None:
    cert = decision.cert
    loud = decision.reason in _LOUD_REASONS or decision.revocation in ("unchecked", "unavailable")
    fields: dict[str, Any] = {
        "decision": "allow" if decision.allow else "deny",
        "reason": decision.reason,
        "detail": decision.detail or None,
        "route": decision.route or None,
        "path": decision.path or None,
        "rule": decision.rule or None,
        "revocation": decision.revocation,
        "list_age": decision.list_age,
        "crls": list(decision.crls) or None,
        "request_id": decision.request_id or None,
    }
    if cert is not None:
        fields.update(_identity(cert))
    if decision.allow and decision.revocation == "unchecked":
        fields["alert"] = "FAIL-OPEN: allowed without a revocation list (ISSUER_FAIL_CLOSED=false)"
    log_line(log, "error" if loud else "info" if decision.allow else "warning", "authorizer_decision", **fields)


def _identity(cert: ClientCertificate) -> dict[str, str]:
    return {
        "serial": cert.serial,
        "role": cert.roles[0] if cert.roles else "",
        "uri_san": cert.uri_sans[0] if cert.uri_sans else "",
        "common_name": cert.common_name,
    }


def _response(event: object, decision: Decision) -> dict[str, Any]:
    cert = decision.cert
    context: dict[str, str] = {**_identity(cert), "not_after": cert.not_after.isoformat()} if cert else {}
    if not decision.allow:
        context.update(reason=decision.reason, detail=decision.detail[:1000])
    if isinstance(event, dict) and event.get("version") == "2.0":
        return {"isAuthorized": decision.allow, "context": context}
    arn = event.get("methodArn") if isinstance(event, dict) else None
    valid_arn = isinstance(arn, str) and METHOD_ARN.fullmatch(arn) is not None
    # An allowed REST decision always has a valid methodArn (parse_event checks it).
    statement = {
        "Action": "execute-api:Invoke",
        "Effect": "Allow" if decision.allow and valid_arn else "Deny",
        "Resource": arn if valid_arn else "*",
    }
    principal = (cert.uri_sans[0] if cert.uri_sans else cert.common_name or cert.serial) if cert else "unknown"
    return {
        "principalId": principal,
        "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        "context": context,
    }


_CACHE: Final = RevocationCache()


def lambda_handler(event: object, context: object) -> dict[str, Any]:
    """The Lambda entry point: settings from ``os.environ``, the module's cache, the wall clock."""
    return authorize(event, env=os.environ, cache=_CACHE, now=datetime.now(timezone.utc))
