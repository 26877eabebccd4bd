"""The cut-over check: does an API Gateway custom domain *serve* a truststore that holds an issuer?

API Gateway verifies a client's leaf against the truststore version its custom domain was last
updated with — not against what S3 holds now, and not against this service's truststore. An
issuer that signs before that version holds it gets every new leaf refused with 403. So before
``issuer ca activate --domain NAME`` switches, this reads what the domain really uses
(``GetDomainName``: truststore URI, pinned version, warnings), reads that exact object version
from S3, and requires the new issuer's certificate in it.

Blocking boto3 calls: :func:`check_domain_serves` runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ca.truststore_rules import MAX_BYTES
from issuer.aws.apigateway import Api, DomainNames, apigateway_client
from issuer.aws.s3 import S3Location, S3Objects, s3_client
from issuer.errors import Conflict
from issuer.store.records import IssuerRecord

__all__ = ["DomainServes", "check_domain_serves", "domain_serves", "require_issuer"]


@dataclass(frozen=True, slots=True)
class DomainServes:
    """What a custom domain serves, and whether the issuer is in it."""

    domain: str
    api: Api
    uri: str
    version: str | None  # None: the domain follows the object's latest version at its last update
    certificates: int
    holds_issuer: bool
    warnings: tuple[str, ...]


async def domain_serves(
    record: IssuerRecord,
    *,
    domain: str,
    api: Api,
    region: str | None = None,
    apigw_client: Any = None,
    s3: Any = None,
) -> DomainServes:
    """:func:`check_domain_serves` with clients from the default chain (``region``, then ``AWS_REGION``…)."""

    def work() -> DomainServes:
        domains = DomainNames(apigw_client if apigw_client is not None else apigateway_client(api, region=region), api)
        objects = S3Objects(s3 if s3 is not None else s3_client(region=region))
        return check_domain_serves(record, domains=domains, objects=objects, domain=domain)

    return await asyncio.to_thread(work)


def check_domain_serves(record: IssuerRecord, *, domains: DomainNames, objects: S3Objects, domain: str) -> DomainServes:
    """Read the domain's live mutual-TLS truststore and look for ``record``'s certificate in it.

    Raises Conflict ``domain_mtls_disabled`` when the domain has no mutual TLS, Conflict
    ``domain_truststore_unreadable`` when its truststore is not a PEM bundle, and the AWS errors of
    :class:`DomainNames` and :class:`S3Objects` (one line each). The caller decides what a missing
    issuer means (:func:`require_issuer`).
    """
    live = domains.get(domain)
    if live.uri is None:
        raise Conflict(
            f"custom domain {domain} has no mutual TLS: it would accept no client certificate at all; "
            "enable mutual TLS with the published truststore first",
            code="domain_mtls_disabled",
        )
    try:
        location = S3Location.parse(live.uri.strip())
    except ValueError:
        raise Conflict(
            f"custom domain {domain} uses truststore {live.uri!r}, not an s3:// URI this check can read",
            code="domain_truststore_unreadable",
        ) from None
    body = objects.read(location, version_id=live.version, max_bytes=MAX_BYTES)
    try:
        certificates = x509.load_pem_x509_certificates(body)
    except ValueError:
        raise Conflict(
            f"{live.uri} version {live.version or '(latest)'} served by custom domain {domain} is not a PEM "
            "certificate bundle",
            code="domain_truststore_unreadable",
        ) from None
    wanted = record.fingerprint_sha256.lower()
    holds = any(cert.fingerprint(hashes.SHA256()).hex() == wanted for cert in certificates)
    return DomainServes(
        domain=domain,
        api=domains.api,
        uri=live.uri,
        version=live.version,
        certificates=len(certificates),
        holds_issuer=holds,
        warnings=live.warnings,
    )


def require_issuer(served: DomainServes, record: IssuerRecord) -> None:
    """Raise Conflict ``domain_truststore_stale`` unless the domain serves ``record`` without a warning naming it."""
    short = record.fingerprint_sha256[:16]
    version = f"version {served.version}" if served.version else "the version it loaded at its last update"
    if not served.holds_issuer:
        raise Conflict(
            f"custom domain {served.domain} serves {served.uri} {version} ({served.certificates} certificates), "
            f"which does not hold issuer {short}: API Gateway would refuse every leaf it signs. Publish the "
            f"truststore (`issuer truststore publish {served.uri} --domain {served.domain} --api {served.api}`), "
            "wait until the domain shows the new version, then activate again (or --force)",
            code="domain_truststore_stale",
        )
    subject = _common_name(record.subject)
    named = [w for w in served.warnings if subject and subject in w]
    if named:
        raise Conflict(
            f"custom domain {served.domain} holds issuer {short} but API Gateway warns about it: {named[0]} "
            "(fix the truststore and publish again, or --force)",
            code="domain_truststore_warning",
        )


def _common_name(subject: str) -> str:
    for part in subject.split(","):
        key, _, value = part.strip().partition("=")
        if key.upper() == "CN":
            return value
    return subject
