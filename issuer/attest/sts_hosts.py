"""The STS hostnames a signed ``GetCallerIdentity`` request may name, and their regions.

The allowlist is built once at start-up from botocore's endpoint data (shipped with
botocore, no network), so the service never forwards a signed request to a host AWS
does not run STS on. ``region_for`` gives the region the SigV4 credential scope must
carry for that host (the global endpoint signs as ``us-east-1``).
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from issuer.errors import ConfigError

__all__ = ["StsHostAllowlist"]

_SERVICE = "sts"
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+-[0-9]+")


@dataclass(frozen=True, slots=True)
class StsHostAllowlist:
    """An immutable map of STS hostname (lower case) → credential-scope region."""

    hosts: Mapping[str, str]

    @classmethod
    def from_botocore(cls, partitions: Iterable[str] = ("aws",)) -> StsHostAllowlist:
        """Every STS hostname botocore knows for ``partitions``.

        Includes the global endpoint (region ``us-east-1``), every regional endpoint,
        the FIPS endpoints botocore lists for STS, and the dual-stack endpoint of each
        region. Raises ``ConfigError`` for a partition botocore does not know or an
        empty list.
        """
        wanted = tuple(partitions)
        if not wanted:
            raise ConfigError("aws.sts.partitions must name at least one partition", code="config_invalid")
        # Imported here: nothing heavy at import time, and only start-up needs botocore.
        import botocore.loaders
        import botocore.regions

        data: dict[str, Any] = botocore.loaders.create_loader().load_data("endpoints")
        # Only STS matters; the resolver merges defaults into the data it is given, so it
        # gets its own copy and the FIPS decision below reads the pristine one.
        by_name = {
            p["partition"]: {**p, "services": {_SERVICE: p["services"].get(_SERVICE, {})}} for p in data["partitions"]
        }
        resolver = botocore.regions.EndpointResolver({"partitions": copy.deepcopy(list(by_name.values()))})
        unknown = [p for p in wanted if p not in by_name]
        if unknown:
            raise ConfigError(
                f"aws.sts.partitions: unknown partition(s) {', '.join(map(repr, unknown))}; "
                f"botocore knows {', '.join(sorted(by_name))}",
                code="config_invalid",
            )
        hosts: dict[str, str] = {}
        for name in wanted:
            _add_partition(hosts, resolver, by_name[name])
        return cls(hosts=MappingProxyType(hosts))

    def with_extra_hosts(self, extra: Mapping[str, str]) -> StsHostAllowlist:
        """A copy that also allows ``extra`` (hostname → region), e.g. a VPC endpoint name.

        Raises ``ConfigError`` for anything that is not a DNS name (IP addresses, ports,
        upper case, trailing dots) or not a region name.
        """
        merged = dict(self.hosts)
        for host, region in extra.items():
            if not _is_dns_name(host):
                raise ConfigError(f"aws.sts extra host {host!r} is not a lower-case DNS name")
            if not _REGION.fullmatch(region):
                raise ConfigError(f"aws.sts extra host {host!r}: {region!r} is not a region name")
            merged[host] = region
        return StsHostAllowlist(hosts=MappingProxyType(merged))

    def region_for(self, host: str) -> str | None:
        """The credential-scope region for ``host``, or ``None`` when it is not allowed.

        The comparison is exact after lower-casing: no ports, no trailing dot, no suffix games.
        """
        return self.hosts.get(host.lower())

    def __contains__(self, host: object) -> bool:
        return isinstance(host, str) and host.lower() in self.hosts

    def __len__(self) -> int:
        return len(self.hosts)


def _is_dns_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None
    return False


def _add_partition(hosts: dict[str, str], resolver: Any, partition: Mapping[str, Any]) -> None:
    name = partition["partition"]
    regions = set(partition.get("regions", {}))
    service = partition.get("services", {}).get(_SERVICE, {})
    endpoints: Mapping[str, Mapping[str, Any]] = service.get("endpoints", {})
    service_fips = _has_fips_variant(service.get("defaults", {}))

    def resolve(key: str, **variant: bool) -> str | None:
        found = resolver.construct_endpoint(_SERVICE, key, partition_name=name, **variant)
        return None if not found else str(found["hostname"]).lower()

    for key, entry in endpoints.items():
        if entry.get("deprecated"):
            continue  # old "<region>-fips" aliases; their hostnames are the FIPS variants below
        scope = entry.get("credentialScope", {}).get("region")
        region = scope or key
        if region not in regions:
            continue  # an entry botocore keeps for a region outside this partition's list
        host = resolve(key)
        if host:
            hosts[host] = region
        if scope is not None:
            continue  # pseudo-regions (aws-global, *-fips) have no variants of their own
        # FIPS only where botocore lists it for STS (the partition template would
        # invent names such as sts-fips.eu-west-1 that AWS does not serve).
        if service_fips or _has_fips_variant(entry):
            fips = resolve(key, use_fips_endpoint=True)
            if fips:
                hosts[fips] = region
        dualstack = resolve(key, use_dualstack_endpoint=True)
        if dualstack:
            hosts[dualstack] = region


def _has_fips_variant(entry: Mapping[str, Any]) -> bool:
    return any("fips" in v.get("tags", ()) for v in entry.get("variants", ()))
