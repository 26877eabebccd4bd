"""Pointing API Gateway custom domains at the published truststore version: botocore's Stubber as API Gateway.

moto's server has no API Gateway domain-name calls, so the REST (``apigateway``) and HTTP
(``apigatewayv2``) clients are real botocore clients with a Stubber that checks the exact
parameters against the service models and answers with API Gateway's shapes. S3 is moto's
server (versioned), as in test_publish.py, so the version ids are real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.stub import Stubber

from issuer.aws.apigateway import DomainNames
from issuer.aws.s3 import S3Location, S3Objects
from issuer.errors import ClientError as RequestRefused
from issuer.errors import Forbidden, NotFound, UpstreamUnavailable
from issuer.service.ca.publish import DomainMismatch, PublishResult, publish_truststore
from tests.integration.test_publish import BUCKET, CONFIG, REGION, TARGET, versioned_bucket, versions
from tests.support.harness import Harness, running_issuer
from tests.support.moto_server import MotoServer, moto_server

DOMAIN = "api.example.com"
SESSION = botocore.session.Session()  # caches the service models for every client below
WARNING = "Certificate with subject CN=Old Issuing CA in the truststore has expired"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    return versioned_bucket(moto, monkeypatch)


def client(service: str) -> Any:
    return SESSION.create_client(
        service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def rest_domain(uri: str | None, version: str | None = None, warnings: list[str] | None = None) -> dict[str, Any]:
    mtls: dict[str, Any] = {}
    if uri is not None:
        mtls = {"truststoreUri": uri, **({"truststoreVersion": version} if version else {})}
        if warnings:
            mtls["truststoreWarnings"] = warnings
    return {"domainName": DOMAIN, "regionalDomainName": "d-abc.execute-api.eu-west-1.amazonaws.com",
            **({"mutualTlsAuthentication": mtls} if mtls else {})}  # fmt: skip


def http_domain(uri: str | None, version: str | None = None, warnings: list[str] | None = None) -> dict[str, Any]:
    mtls: dict[str, Any] = {}
    if uri is not None:
        mtls = {"TruststoreUri": uri, **({"TruststoreVersion": version} if version else {})}
        if warnings:
            mtls["TruststoreWarnings"] = warnings
    return {"DomainName": DOMAIN, **({"MutualTlsAuthentication": mtls} if mtls else {})}


async def publish(h: Harness, api: str, apigw: Any, lines: list[str], **kwargs: Any) -> PublishResult:
    return await publish_truststore(
        h.service.sessions, TARGET, domain=DOMAIN, api=api, now=datetime.now(UTC),  # type: ignore[arg-type]
        apigw_client=apigw, progress=lines.append, **kwargs,
    )  # fmt: skip


async def first_version(h: Harness) -> str:
    """Publish without a domain, so the version id the domain must get is known before stubbing."""
    result = await publish_truststore(h.service.sessions, TARGET, now=datetime.now(UTC))
    assert result.truststore.version_id is not None
    return result.truststore.version_id


async def test_rest_domain_is_pointed_at_the_new_version_and_its_warnings_are_reported(
    tmp_path: Path, pg_url: str, aws: Any
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        version = await first_version(h)
        apigw = client("apigateway")
        with Stubber(apigw) as stub:
            stub.add_response("get_domain_name", rest_domain(TARGET.uri, "old-version"), {"domainName": DOMAIN})
            stub.add_response(
                "update_domain_name",
                rest_domain(TARGET.uri, version, warnings=[WARNING]),
                {
                    "domainName": DOMAIN,
                    "patchOperations": [
                        {"op": "replace", "path": "/mutualTlsAuthentication/truststoreVersion", "value": version}
                    ],
                },
            )
            lines: list[str] = []
            result = await publish(h, "rest", apigw, lines)
            stub.assert_no_pending_responses()
    assert result.domain is not None
    assert result.domain.updated and result.domain.version == version
    assert result.domain.previous_version == "old-version"
    assert result.domain.warnings == (WARNING,)
    assert f"  API Gateway warning: {WARNING}" in lines
    assert versions(aws) == [version]  # unchanged truststore: no new version, the domain still moved


async def test_http_domain_is_updated_with_uri_and_version_in_one_structure(
    tmp_path: Path, pg_url: str, aws: Any
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        version = await first_version(h)
        apigw = client("apigatewayv2")
        with Stubber(apigw) as stub:
            stub.add_response("get_domain_name", http_domain(TARGET.uri, "old-version"), {"DomainName": DOMAIN})
            stub.add_response(
                "update_domain_name",
                http_domain(TARGET.uri, version, warnings=[WARNING]),
                {
                    "DomainName": DOMAIN,
                    "MutualTlsAuthentication": {"TruststoreUri": TARGET.uri, "TruststoreVersion": version},
                },
            )
            lines: list[str] = []
            result = await publish(h, "http", apigw, lines)
            stub.assert_no_pending_responses()
    assert result.domain is not None and result.domain.api == "http"
    assert result.domain.updated and result.domain.warnings == (WARNING,)
    assert f"  API Gateway warning: {WARNING}" in lines


@pytest.mark.parametrize("api", ["rest", "http"])
async def test_a_domain_already_at_the_version_is_not_updated(tmp_path: Path, pg_url: str, aws: Any, api: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        version = await first_version(h)
        apigw = client("apigateway" if api == "rest" else "apigatewayv2")
        reply = rest_domain(TARGET.uri, version) if api == "rest" else http_domain(TARGET.uri, version)
        key = "domainName" if api == "rest" else "DomainName"
        with Stubber(apigw) as stub:
            stub.add_response("get_domain_name", reply, {key: DOMAIN})  # and no update: any call would fail
            lines: list[str] = []
            result = await publish(h, api, apigw, lines)
            stub.assert_no_pending_responses()
    assert result.domain is not None and not result.domain.updated
    assert any("already uses version" in line for line in lines)


@pytest.mark.parametrize("api", ["rest", "http"])
async def test_a_domain_pointing_at_another_bucket_is_reported_and_nothing_is_uploaded(
    tmp_path: Path, pg_url: str, aws: Any, api: str
) -> None:
    other = "s3://someone-elses-bucket/truststore.pem"
    apigw = client("apigateway" if api == "rest" else "apigatewayv2")
    reply = rest_domain(other, "v7") if api == "rest" else http_domain(other, "v7")
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        with Stubber(apigw) as stub:
            stub.add_response("get_domain_name", reply)
            with pytest.raises(DomainMismatch) as mismatch:
                await publish(h, api, apigw, [])
    assert mismatch.value.code == "domain_truststore_mismatch"
    detail = mismatch.value.detail
    assert f"custom domain {DOMAIN} uses truststore {other}, not {TARGET.uri}" in detail and "\n" not in detail
    assert versions(aws) == []  # checked before anything was written


async def test_a_domain_without_mutual_tls_is_reported(tmp_path: Path, pg_url: str, aws: Any) -> None:
    apigw = client("apigateway")
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        with Stubber(apigw) as stub:
            stub.add_response("get_domain_name", rest_domain(None))
            with pytest.raises(DomainMismatch) as disabled:
                await publish(h, "rest", apigw, [])
    assert disabled.value.code == "domain_mtls_disabled"
    assert f"custom domain {DOMAIN} has no mutual TLS" in disabled.value.detail


async def test_a_dry_run_reads_the_domain_and_updates_nothing(tmp_path: Path, pg_url: str, aws: Any) -> None:
    apigw = client("apigatewayv2")
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        with Stubber(apigw) as stub:
            stub.add_response("get_domain_name", http_domain(TARGET.uri, "v1"))
            lines: list[str] = []
            result = await publish(h, "http", apigw, lines, dry_run=True)
            stub.assert_no_pending_responses()
    assert result.domain is not None and result.domain.updated and result.domain.version is None
    assert any(f"Would point custom domain {DOMAIN} at the new version (dry run)" in line for line in lines)
    assert versions(aws) == []


# -- one-line failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "code", "status", "error", "fragment"),
    [
        ("rest", "NotFoundException", 404, NotFound, "no REST API custom domain 'api.example.com' in this region"),
        ("http", "NotFoundException", 404, NotFound, "no HTTP API custom domain 'api.example.com' in this region"),
        (
            "rest",
            "UnauthorizedException",
            403,
            Forbidden,
            "check that the publisher's IAM policy allows apigateway:GET",
        ),
        (
            "http",
            "AccessDeniedException",
            403,
            Forbidden,
            "check that the publisher's IAM policy allows apigateway:GET",
        ),
        ("rest", "TooManyRequestsException", 429, UpstreamUnavailable, "try again shortly"),
    ],
)
def test_get_domain_failures_are_one_line_naming_what_to_check(
    api: str, code: str, status: int, error: type[Exception], fragment: str
) -> None:
    apigw = client("apigateway" if api == "rest" else "apigatewayv2")
    with Stubber(apigw) as stub:
        stub.add_client_error(
            "get_domain_name", service_error_code=code, service_message="nope", http_status_code=status
        )
        with pytest.raises(error) as failed:
            DomainNames(apigw, api).get(DOMAIN)  # type: ignore[arg-type]
    detail = failed.value.detail  # type: ignore[attr-defined]
    assert detail.startswith(f"apigateway:GET on arn:aws:apigateway:{REGION}::/domainnames/{DOMAIN}: {code} (nope)")
    assert fragment in detail and "\n" not in detail


def test_update_refusals_name_the_version_and_the_permission_api_gateway_reads_it_with() -> None:
    apigw = client("apigateway")
    with Stubber(apigw) as stub:
        stub.add_client_error(
            "update_domain_name",
            service_error_code="BadRequestException",
            service_message="Unable to read truststore",
            http_status_code=400,
        )
        stub.add_client_error("update_domain_name", service_error_code="TooManyRequestsException", http_status_code=429)
        domains = DomainNames(apigw, "rest")
        with pytest.raises(RequestRefused) as refused:
            domains.set_version(DOMAIN, uri=TARGET.uri, version="v9")
        with pytest.raises(UpstreamUnavailable) as throttled:
            domains.set_version(DOMAIN, uri=TARGET.uri, version="v9")
    assert refused.value.code == "apigw_update_refused"
    assert f"version v9 of {TARGET.uri}" in refused.value.detail and "s3:GetObjectVersion" in refused.value.detail
    assert throttled.value.code == "apigw_throttled" and "one domain update every 30 seconds" in throttled.value.detail


@pytest.mark.parametrize(
    ("operation", "call", "fragment"),
    [
        ("get_bucket_versioning", "versioning", "allows s3:GetBucketVersioning"),
        ("get_object", "current", "s3:ListBucket on the bucket"),
        ("put_object", "put", "allows s3:PutObject"),
    ],
)
def test_s3_access_denied_is_one_line_naming_the_permission(operation: str, call: str, fragment: str) -> None:
    s3 = client("s3")
    with Stubber(s3) as stub:
        stub.add_client_error(operation, service_error_code="AccessDenied", http_status_code=403)
        objects = S3Objects(s3)
        action: Callable[[], object] = {
            "versioning": lambda: objects.versioning(BUCKET),
            "current": lambda: objects.current(TARGET, max_bytes=1000),
            "put": lambda: objects.put(TARGET, b"x", content_type="application/x-pem-file", replacing=None),
        }[call]
        with pytest.raises(Forbidden) as denied:
            action()
    assert denied.value.code == "aws_access_denied"
    assert "AccessDenied" in denied.value.detail and fragment in denied.value.detail
    assert "\n" not in denied.value.detail


def test_the_publisher_refuses_a_domain_without_an_api_type() -> None:
    with pytest.raises(RequestRefused) as refused:
        asyncio.run(
            publish_truststore(None, S3Location(BUCKET, "k"), domain=DOMAIN, now=datetime.now(UTC))  # type: ignore[arg-type]
        )
    assert refused.value.code == "publish_arguments_invalid"
