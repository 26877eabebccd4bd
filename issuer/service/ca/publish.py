"""Publish the truststore to S3 and point API Gateway custom domains at the new version.

The steps, each reported through ``progress``, nothing written before every check passed:

1. check the truststore (as ``GET /v1/truststore`` serves it) against API Gateway's rules
   (:mod:`ca.truststore_rules`): errors refuse the publish, warnings are reported;
2. require a versioned bucket — API Gateway pins ``truststoreVersion``, and an
   unversioned object cannot be pinned (nor rolled back);
3. with a domain: read it and require that its truststore URI is this object;
4. read the current object and upload a new version only when the content changed
   (SHA-256 of the body; the hash is also stored as ``x-amz-meta-sha256``), on the
   condition that the object is still what was read;
5. optionally the signed CRLs (``GET /v1/crls``, what the Lambda authorizer verifies) and the
   older revocation list (``GET /v1/revoked``'s JSON) beside it, the same way;
6. with a domain: set its truststore version unless it already uses it, and return
   the ``truststoreWarnings`` API Gateway answers with.

``dry_run`` makes only the read calls and reports what would change. Errors::

    TruststoreRejected   400  truststore_invalid           a rule is broken (first error named; all in .problems)
    VersioningRequired   400  s3_versioning_disabled       the bucket is not versioned (never, or suspended)
    DomainMismatch       409  domain_truststore_mismatch   the domain's truststore is another object
                              domain_mtls_disabled         the domain has no mutual TLS
    ClientError          400  publish_arguments_invalid    domain without api, or api without domain
    ... and every one-line AWS failure of :mod:`issuer.aws.failures` (NoSuchBucket, AccessDenied, ...).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.truststore_rules import MAX_BYTES, TruststoreProblem, check_truststore, errors_of, warnings_of
from issuer.aws.apigateway import Api, DomainNames, DomainTruststore, apigateway_client
from issuer.aws.s3 import S3Location, S3Objects, StoredObject
from issuer.aws.s3 import s3_client as make_s3_client
from issuer.errors import ClientError, Conflict
from issuer.service.ca.registry import export_truststore

__all__ = [
    "DEFAULT_CRLS_KEY",
    "DEFAULT_REVOKED_KEY",
    "DomainMismatch",
    "DomainPublished",
    "ObjectPublished",
    "Progress",
    "PublishResult",
    "TruststoreRejected",
    "VersioningRequired",
    "publish_pem",
    "publish_truststore",
]

Progress = Callable[[str], None]
DEFAULT_REVOKED_KEY = "revoked.json"  # beside the truststore, when no key is given
DEFAULT_CRLS_KEY = "crls.pem"
CRLS_MAX_BYTES = 32 * 1024 * 1024  # what is read back to compare; larger is uploaded again
PEM_TYPE = "application/x-pem-file"
JSON_TYPE = "application/json"


class TruststoreRejected(ClientError):
    default_code = "truststore_invalid"
    title = "Truststore breaks API Gateway's rules"

    def __init__(self, detail: str, *, problems: tuple[TruststoreProblem, ...]) -> None:
        super().__init__(detail)
        self.problems = problems


class VersioningRequired(ClientError):
    default_code = "s3_versioning_disabled"


class DomainMismatch(Conflict):
    default_code = "domain_truststore_mismatch"


@dataclass(frozen=True, slots=True)
class ObjectPublished:
    uri: str
    sha256: str
    size: int
    changed: bool  # the content differs from the current version (uploaded unless dry_run)
    version_id: str | None  # the version now current; None on a dry run that would upload
    previous_version_id: str | None


@dataclass(frozen=True, slots=True)
class DomainPublished:
    domain: str
    api: Api
    truststore_uri: str
    previous_version: str | None
    version: str | None  # None on a dry run that would upload a new truststore version
    updated: bool  # the domain was (dry run: would be) pointed at ``version``
    warnings: tuple[str, ...]  # API Gateway's truststoreWarnings


@dataclass(frozen=True, slots=True)
class PublishResult:
    truststore: ObjectPublished
    certificates: int
    problems: tuple[TruststoreProblem, ...]  # warnings only: any error refuses the publish
    revoked: ObjectPublished | None
    domain: DomainPublished | None
    dry_run: bool
    crls: ObjectPublished | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def publish_truststore(
    sessions: async_sessionmaker[AsyncSession],
    target: S3Location,
    *,
    domain: str | None = None,
    api: Api | None = None,
    revoked: bytes | None = None,
    revoked_key: str | None = None,
    crls: bytes | None = None,
    crls_key: str | None = None,
    dry_run: bool = False,
    now: datetime,
    s3_client: Any = None,
    apigw_client: Any = None,
    region: str | None = None,
    progress: Progress | None = None,
) -> PublishResult:
    """Publish the registry's truststore to ``target`` (see the module docstring for the steps and errors).

    ``revoked`` is the revocation list document (the bytes ``GET /v1/revoked`` serves); it is
    written to ``revoked_key`` (default ``revoked.json`` beside the truststore); ``crls`` (the PEM
    bundle ``GET /v1/crls`` serves) to ``crls_key`` (default ``crls.pem``). Clients are
    made from the default credential chain and ``region`` unless injected.
    """
    if (domain is None) != (api is None):
        raise ClientError("a domain needs its API type (rest or http), and an API type a domain",
                          code="publish_arguments_invalid")  # fmt: skip
    pem = await export_truststore(sessions, now=now)
    return await asyncio.to_thread(
        _publish_with_clients, pem, target, domain=domain, api=api, revoked=revoked, revoked_key=revoked_key,
        crls=crls, crls_key=crls_key, dry_run=dry_run, now=now, s3_client=s3_client, apigw_client=apigw_client,
        region=region, progress=progress,
    )  # fmt: skip


def _publish_with_clients(
    pem: bytes,
    target: S3Location,
    *,
    domain: str | None,
    api: Api | None,
    revoked: bytes | None,
    revoked_key: str | None,
    crls: bytes | None,
    crls_key: str | None,
    dry_run: bool,
    now: datetime,
    s3_client: Any,
    apigw_client: Any,
    region: str | None,
    progress: Progress | None,
) -> PublishResult:
    # Made here, in the worker thread: making a boto3 client is slow and blocking.
    s3 = S3Objects(s3_client if s3_client is not None else make_s3_client(region=region))
    domains = None
    if domain is not None and api is not None:
        domains = DomainNames(apigw_client if apigw_client is not None else apigateway_client(api, region=region), api)
    revoked_at = target.beside(revoked_key or DEFAULT_REVOKED_KEY) if revoked is not None else None
    crls_at = target.beside(crls_key or DEFAULT_CRLS_KEY) if crls is not None else None
    return publish_pem(
        pem, target, s3=s3, domains=domains, domain=domain, revoked=revoked, revoked_at=revoked_at,
        crls=crls, crls_at=crls_at, dry_run=dry_run, now=now, progress=progress,
    )  # fmt: skip


def publish_pem(
    pem: bytes,
    target: S3Location,
    *,
    s3: S3Objects,
    domains: DomainNames | None = None,
    domain: str | None = None,
    revoked: bytes | None = None,
    revoked_at: S3Location | None = None,
    crls: bytes | None = None,
    crls_at: S3Location | None = None,
    dry_run: bool = False,
    now: datetime,
    progress: Progress | None = None,
) -> PublishResult:
    """The publish itself for a given truststore ``pem`` (blocking: call it in a worker thread)."""
    say = progress or (lambda _line: None)
    count = pem.count(b"-----BEGIN CERTIFICATE-----")
    say(f"Checking the truststore ({count} certificate(s), {len(pem):,} bytes) against API Gateway's rules")
    problems = check_truststore(pem, now=now)
    for problem in problems:
        say(f"  {problem.severity}: {problem.message}")
    errors = errors_of(problems)
    if errors:
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        raise TruststoreRejected(
            f"the truststore breaks API Gateway's rules, nothing was published: {errors[0].message}{more}",
            problems=problems,
        )
    if not problems:
        say("  ok")

    say(f"Checking that bucket {target.bucket} is versioned")
    state = s3.versioning(target.bucket)
    if state != "Enabled":
        why = "never had versioning enabled" if state == "Disabled" else "has versioning suspended"
        raise VersioningRequired(
            f"bucket {target.bucket} {why}; API Gateway pins truststoreVersion, so the truststore must be in a "
            f"versioned bucket: aws s3api put-bucket-versioning --bucket {target.bucket} "
            "--versioning-configuration Status=Enabled"
        )
    say("  versioning is enabled")

    before: DomainTruststore | None = None
    if domains is not None and domain is not None:
        before = _read_domain(domains, domain, target, say)

    published = _publish_object(s3, target, pem, content_type=PEM_TYPE, dry_run=dry_run, say=say)
    revoked_published = None
    if revoked is not None and revoked_at is not None:
        revoked_published = _publish_object(s3, revoked_at, revoked, content_type=JSON_TYPE, dry_run=dry_run, say=say)
    crls_published = None
    if crls is not None and crls_at is not None:
        crls_published = _publish_object(
            s3, crls_at, crls, content_type=PEM_TYPE, dry_run=dry_run, say=say, max_bytes=CRLS_MAX_BYTES
        )

    domain_published = None
    if domains is not None and before is not None:
        domain_published = _point_domain(domains, before, target, published, dry_run=dry_run, say=say)
    return PublishResult(
        truststore=published,
        certificates=count,
        problems=warnings_of(problems),
        revoked=revoked_published,
        domain=domain_published,
        dry_run=dry_run,
        crls=crls_published,
    )


def _read_domain(domains: DomainNames, domain: str, target: S3Location, say: Progress) -> DomainTruststore:
    kind = "REST" if domains.api == "rest" else "HTTP"
    say(f"Reading the {kind} API custom domain {domain}")
    current = domains.get(domain)
    if current.uri is None:
        raise DomainMismatch(
            f"custom domain {domain} has no mutual TLS; enable it with truststore {target.uri} first "
            f"(aws {'apigateway' if domains.api == 'rest' else 'apigatewayv2'} update-domain-name)",
            code="domain_mtls_disabled",
        )
    if not _same_object(current.uri, target):
        raise DomainMismatch(
            f"custom domain {domain} uses truststore {current.uri}, not {target.uri}; publish to {current.uri} "
            "or change the domain's truststore URI first"
        )
    say(f"  it uses {current.uri} version {current.version or '(latest at its last update)'}")
    for warning in current.warnings:
        say(f"  API Gateway warning (from its last update): {warning}")
    return current


def _same_object(uri: str, target: S3Location) -> bool:
    try:
        return S3Location.parse(uri.strip()) == target
    except ValueError:
        return False


def _publish_object(
    s3: S3Objects,
    location: S3Location,
    body: bytes,
    *,
    content_type: str,
    dry_run: bool,
    say: Progress,
    max_bytes: int = 2 * MAX_BYTES,
) -> ObjectPublished:
    digest = hashlib.sha256(body).hexdigest()
    say(f"Reading the current {location.uri}")
    current: StoredObject | None = s3.current(location, max_bytes=max_bytes)
    previous = current.version_id if current is not None else None
    if current is None:
        say("  there is none yet")
    elif current.sha256 == digest and current.has_version:
        say(f"  unchanged (SHA-256 {digest[:16]}…), version {previous}; nothing to upload")
        return ObjectPublished(location.uri, digest, len(body), False, previous, previous)
    elif current.sha256 == digest:
        # Written before versioning was enabled ("null" version): API Gateway needs a real version id.
        say("  unchanged, but written before versioning was enabled; uploading it again to get a version id")
    else:
        say(f"  it differs (version {previous}, {current.size:,} bytes)")
    if dry_run:
        say(f"  would upload a new version of {location.uri} (dry run)")
        return ObjectPublished(location.uri, digest, len(body), True, None, previous)
    say(f"Uploading {location.uri}")
    version = s3.put(location, body, content_type=content_type, replacing=current)
    say(f"  new version {version}")
    return ObjectPublished(location.uri, digest, len(body), True, version, previous)


def _point_domain(
    domains: DomainNames,
    before: DomainTruststore,
    target: S3Location,
    published: ObjectPublished,
    *,
    dry_run: bool,
    say: Progress,
) -> DomainPublished:
    version = published.version_id
    if version is not None and before.version == version:
        say(f"Custom domain {before.domain} already uses version {version}; nothing to update")
        return DomainPublished(before.domain, before.api, target.uri, before.version, version, False, before.warnings)
    if dry_run:
        which = f"version {version}" if version else "the new version"
        say(f"Would point custom domain {before.domain} at {which} (dry run)")
        return DomainPublished(before.domain, before.api, target.uri, before.version, version, True, ())
    if version is None:
        raise VersioningRequired(
            f"{target.uri} has no version id (was versioning suspended meanwhile?); the domain was not updated"
        )
    say(f"Pointing custom domain {before.domain} at version {version}")
    after = domains.set_version(before.domain, uri=target.uri, version=version)
    for warning in after.warnings:
        say(f"  API Gateway warning: {warning}")
    if not after.warnings:
        say("  API Gateway accepted the truststore without warnings")
    return DomainPublished(before.domain, before.api, target.uri, before.version, version, True, after.warnings)
