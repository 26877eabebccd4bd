"""API Gateway custom domains: read and set the mutual-TLS truststore version (REST and HTTP APIs).

The two APIs name the same thing differently (shapes checked against botocore's
service models)::

    REST  apigateway.get_domain_name(domainName=)   -> mutualTlsAuthentication.{truststoreUri,
          apigateway.update_domain_name(domainName=, patchOperations=[...])     truststoreVersion,
                                                                                 truststoreWarnings}
    HTTP  apigatewayv2.get_domain_name(DomainName=) -> MutualTlsAuthentication.{TruststoreUri,
          apigatewayv2.update_domain_name(DomainName=, MutualTlsAuthentication=  TruststoreVersion,
                                          {TruststoreUri, TruststoreVersion})   TruststoreWarnings}

:class:`DomainNames` hides the difference behind :class:`DomainTruststore`. API Gateway
reads the truststore at update time with the caller's permissions and answers with
``truststoreWarnings`` for certificates it cannot use; those are returned, not raised.
Blocking boto3 calls: run them in a worker thread. Failures are one-line
:class:`~issuer.errors.IssuerError` s naming the domain and what to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from issuer.aws.failures import Hint, aws_failure
from issuer.aws.sessions import default_client
from issuer.errors import IssuerError

__all__ = ["Api", "DomainNames", "DomainTruststore", "apigateway_client"]

Api = Literal["rest", "http"]

_SERVICE: dict[Api, str] = {"rest": "apigateway", "http": "apigatewayv2"}
_VERSION_PATH = "/mutualTlsAuthentication/truststoreVersion"


@dataclass(frozen=True, slots=True)
class DomainTruststore:
    """A custom domain's mutual-TLS truststore as API Gateway reports it."""

    domain: str
    api: Api
    uri: str | None  # None: mutual TLS is not enabled on the domain
    version: str | None
    warnings: tuple[str, ...]


def apigateway_client(api: Api, *, region: str | None = None) -> Any:
    """A boto3 client for ``api``'s service with bounded timeouts; ``AWS_ENDPOINT_URL*`` settings apply.

    Raises ConfigError ``aws_region_missing`` when no region is configured.
    """
    return default_client(_SERVICE[api], region=region, read_timeout=30.0)


class DomainNames:
    """Get and set the truststore version of custom domains of one API type, on one injected client."""

    def __init__(self, client: Any, api: Api) -> None:
        if api not in _SERVICE:
            raise ValueError(f"api must be 'rest' or 'http', not {api!r}")
        self._client = client
        self.api: Api = api

    def get(self, domain: str) -> DomainTruststore:
        """The domain's current truststore; raises NotFound ``apigw_domain_not_found`` and the like."""
        try:
            if self.api == "rest":
                reply = self._client.get_domain_name(domainName=domain)
            else:
                reply = self._client.get_domain_name(DomainName=domain)
        except (ClientError, BotoCoreError) as exc:
            raise self._failure(exc, "GET", domain) from exc
        return self._truststore(domain, reply)

    def set_version(self, domain: str, *, uri: str, version: str) -> DomainTruststore:
        """Point the domain at ``version`` of the truststore at ``uri``; returns what API Gateway answered.

        For REST only the version is patched (the URI was checked to be ``uri`` before);
        the HTTP API takes both in one structure.
        """
        try:
            if self.api == "rest":
                reply = self._client.update_domain_name(
                    domainName=domain,
                    patchOperations=[{"op": "replace", "path": _VERSION_PATH, "value": version}],
                )
            else:
                reply = self._client.update_domain_name(
                    DomainName=domain,
                    MutualTlsAuthentication={"TruststoreUri": uri, "TruststoreVersion": version},
                )
        except (ClientError, BotoCoreError) as exc:
            raise self._failure(exc, "PATCH", domain, uri=uri, version=version) from exc
        return self._truststore(domain, reply)

    def _truststore(self, domain: str, reply: dict[str, Any]) -> DomainTruststore:
        if self.api == "rest":
            mtls = reply.get("mutualTlsAuthentication") or {}
            uri, version, warnings = (
                mtls.get("truststoreUri"),
                mtls.get("truststoreVersion"),
                mtls.get("truststoreWarnings"),
            )
        else:
            mtls = reply.get("MutualTlsAuthentication") or {}
            uri, version, warnings = (
                mtls.get("TruststoreUri"),
                mtls.get("TruststoreVersion"),
                mtls.get("TruststoreWarnings"),
            )
        return DomainTruststore(
            domain=domain,
            api=self.api,
            uri=str(uri) if uri else None,
            version=str(version) if version else None,
            warnings=tuple(str(w) for w in warnings or ()),
        )

    def _failure(
        self, exc: BaseException, method: str, domain: str, *, uri: str | None = None, version: str | None = None
    ) -> IssuerError:
        kind = "REST" if self.api == "rest" else "HTTP"
        hints: dict[str, Hint] = {
            "NotFoundException": (
                "apigw_domain_not_found",
                f"no {kind} API custom domain {domain!r} in this region: check the name, --api and AWS_REGION",
            ),
        }
        if method == "PATCH":
            hints["TooManyRequestsException"] = (
                "apigw_throttled",
                "API Gateway allows one domain update every 30 seconds per account; try again shortly",
            )
            hints["BadRequestException"] = (
                "apigw_update_refused",
                f"API Gateway refused version {version} of {uri}: check that the object version exists and that "
                "the publisher may s3:GetObject and s3:GetObjectVersion it (API Gateway reads it as the caller)",
            )
        # The IAM resource of a domain name is /domainnames/NAME for REST and HTTP APIs alike.
        region = getattr(getattr(self._client, "meta", None), "region_name", None) or "REGION"
        return aws_failure(
            exc,
            call=f"apigateway:{method}",
            resource=f"arn:aws:apigateway:{region}::/domainnames/{domain}",
            hints=hints,
        )
