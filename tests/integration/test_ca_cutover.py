"""``issuer ca activate --domain``: refuse to switch until the custom domain serves a truststore with the new issuer.

API Gateway is botocore's Stubber on the real service models (moto has no domain-name calls); S3 is
moto's versioned server, so the domain's pinned version is a real object version whose bytes are read.
The failure mode this guards against: S3 already holds the new truststore (or the operator ran
``truststore publish`` without ``--domain``) while the domain still serves the old version — switching
then would get every new leaf refused by API Gateway.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from issuer.aws.apigateway import DomainNames
from issuer.aws.s3 import S3Objects, s3_client
from issuer.aws.sessions import default_client
from issuer.errors import Conflict, NotFound
from issuer.service.ca.cutover import DomainServes, check_domain_serves, domain_serves, require_issuer
from issuer.service.ca.rotation import activate
from issuer.store import issuers as store
from issuer.store.records import IssuerRecord
from tests.integration.test_publish import CONFIG, TARGET, publish, versioned_bucket
from tests.integration.test_publish_apigateway import DOMAIN, client, http_domain, moto, rest_domain
from tests.support.ca_registry import prepare_file_issuer
from tests.support.harness import PASSPHRASE, Harness, running_issuer
from tests.support.moto_server import MotoServer

__all__ = ["moto"]  # the module-scoped moto fixture, shared with the API Gateway tests


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    return versioned_bucket(moto, monkeypatch)


async def rotated(h: Harness) -> tuple[str, str, IssuerRecord]:
    """Publish (v1: the old issuer only), prepare a new issuer, publish again (v2: both); the new record."""
    old = await publish(h)
    now = datetime.now(UTC)
    await prepare_file_issuer(
        h.service.sessions, ca_dir=h.settings.ca_dir, passphrase=PASSPHRASE.encode(), now=now,
        validity=timedelta(days=200), common_name="Next Issuing CA",
    )  # fmt: skip
    new = await publish(h)
    assert old.truststore.version_id and new.truststore.version_id
    assert old.truststore.version_id != new.truststore.version_id
    async with h.service.sessions() as session:
        prepared = next(r for r in await store.list_issuers(session) if r.state == "prepared")
    return old.truststore.version_id, new.truststore.version_id, prepared


def serves(apigw: Any, api: str, record: IssuerRecord) -> DomainServes:
    return check_domain_serves(record, domains=DomainNames(apigw, api), objects=S3Objects(s3_client()), domain=DOMAIN)  # type: ignore[arg-type]


async def active_fingerprint(h: Harness) -> str:
    async with h.service.sessions() as session:
        return next(r.fingerprint_sha256 for r in await store.list_issuers(session) if r.state == "active")


async def test_activation_is_refused_while_the_domain_serves_the_old_version_and_nothing_switches(
    tmp_path: Path, pg_url: str, aws: Any
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        old_version, _, record = await rotated(h)
        before = await active_fingerprint(h)
        apigw = client("apigateway")
        with Stubber(apigw) as stub:
            stub.add_response("get_domain_name", rest_domain(TARGET.uri, old_version), {"domainName": DOMAIN})

            async def gate(candidate: IssuerRecord) -> None:
                served = await domain_serves(candidate, domain=DOMAIN, api="rest", apigw_client=apigw)
                require_issuer(served, candidate)

            with pytest.raises(Conflict) as refused:
                await activate(
                    h.service.sessions, fingerprint=record.fingerprint_sha256, now=datetime.now(UTC),
                    min_validity=timedelta(hours=1), before_switch=gate,
                )  # fmt: skip
        assert refused.value.code == "domain_truststore_stale"
        assert f"version {old_version}" in refused.value.detail
        assert record.fingerprint_sha256[:16] in refused.value.detail
        assert "issuer truststore publish" in refused.value.detail
        assert await active_fingerprint(h) == before  # nothing switched


async def test_activation_goes_ahead_once_the_domain_serves_the_version_with_the_new_issuer(
    tmp_path: Path, pg_url: str, aws: Any
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        _, new_version, record = await rotated(h)
        apigw = client("apigatewayv2")
        with Stubber(apigw) as stub:
            stub.add_response("get_domain_name", http_domain(TARGET.uri, new_version), {"DomainName": DOMAIN})
            served = await domain_serves(record, domain=DOMAIN, api="http", apigw_client=apigw)
        assert served.holds_issuer and served.version == new_version and served.certificates == 3
        require_issuer(served, record)  # does not raise
        done = await activate(
            h.service.sessions, fingerprint=record.fingerprint_sha256, now=datetime.now(UTC),
            min_validity=timedelta(hours=1), before_switch=None,
        )  # fmt: skip
        assert done.issuer.fingerprint_sha256 == record.fingerprint_sha256
        assert await active_fingerprint(h) == record.fingerprint_sha256


async def test_a_domain_without_mutual_tls_or_with_a_warning_naming_the_issuer_is_refused(
    tmp_path: Path, pg_url: str, aws: Any
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        _, new_version, record = await rotated(h)
        apigw = client("apigateway")
        warning = "Certificate with subject CN=Next Issuing CA,O=x in the truststore is not valid"
        with Stubber(apigw) as stub:
            stub.add_response("get_domain_name", rest_domain(None), {"domainName": DOMAIN})
            stub.add_response(
                "get_domain_name", rest_domain(TARGET.uri, new_version, warnings=[warning]), {"domainName": DOMAIN}
            )
            with pytest.raises(Conflict) as no_mtls:
                serves(apigw, "rest", record)
            served = serves(apigw, "rest", record)
        assert no_mtls.value.code == "domain_mtls_disabled"
        assert served.holds_issuer and served.warnings == (warning,)
        with pytest.raises(Conflict) as warned:
            require_issuer(served, record)
        assert warned.value.code == "domain_truststore_warning"


async def test_a_pinned_version_that_no_longer_exists_is_a_clear_error(tmp_path: Path, pg_url: str, aws: Any) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        _, _, record = await rotated(h)
        apigw = client("apigateway")
        with Stubber(apigw) as stub:
            stub.add_response("get_domain_name", rest_domain(TARGET.uri, "NoSuchVersionId"), {"domainName": DOMAIN})
            with pytest.raises(NotFound) as missing:
                serves(apigw, "rest", record)
        assert missing.value.code == "s3_object_not_found"
        assert "version NoSuchVersionId does not exist" in missing.value.detail


def test_the_region_comes_from_aws_region_like_the_aws_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert default_client("apigateway", read_timeout=1).meta.region_name == "ap-southeast-2"
    assert default_client("apigateway", region="eu-north-1", read_timeout=1).meta.region_name == "eu-north-1"
    monkeypatch.delenv("AWS_REGION")
    assert default_client("apigatewayv2", read_timeout=1).meta.region_name == "us-east-1"
