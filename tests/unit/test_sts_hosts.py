"""The STS host allowlist built from botocore's endpoint data."""

from __future__ import annotations

import pytest

from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.errors import ConfigError

AWS = StsHostAllowlist.from_botocore()


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("sts.amazonaws.com", "us-east-1"),  # global endpoint signs as us-east-1
        ("sts.us-east-1.amazonaws.com", "us-east-1"),
        ("sts.eu-west-1.amazonaws.com", "eu-west-1"),
        ("sts.ap-southeast-2.amazonaws.com", "ap-southeast-2"),
        ("sts-fips.us-east-1.amazonaws.com", "us-east-1"),
        ("sts-fips.us-west-2.amazonaws.com", "us-west-2"),
        ("sts.us-west-2.api.aws", "us-west-2"),
        ("sts.eu-central-1.api.aws", "eu-central-1"),
        ("STS.AMAZONAWS.COM", "us-east-1"),  # DNS names are case-insensitive
    ],
)
def test_commercial_hosts(host: str, region: str) -> None:
    assert AWS.region_for(host) == region
    assert host in AWS


@pytest.mark.parametrize(
    "host",
    [
        "sts.amazonaws.com.evil.com",
        "evil.com",
        "sts.amazonaws.com:8443",
        "sts.amazonaws.com:443",
        "sts.amazonaws.com.",
        "52.94.0.1",
        "[::1]",
        "",
        "amazonaws.com",
        "iam.amazonaws.com",
        "xsts.amazonaws.com",
        "sts.us-east-1.amazonaws.com.cn",
        "sts-fips.eu-west-1.amazonaws.com",  # botocore's template, but STS lists no such FIPS endpoint
        "sts.cn-north-1.amazonaws.com.cn",  # aws-cn not enabled
        "sts.us-gov-west-1.amazonaws.com",  # aws-us-gov not enabled
    ],
)
def test_refused_hosts(host: str) -> None:
    assert AWS.region_for(host) is None
    assert host not in AWS


def test_other_partitions_only_when_enabled() -> None:
    more = StsHostAllowlist.from_botocore(partitions=("aws", "aws-cn", "aws-us-gov"))
    assert more.region_for("sts.cn-north-1.amazonaws.com.cn") == "cn-north-1"
    assert more.region_for("sts.cn-northwest-1.amazonaws.com.cn") == "cn-northwest-1"
    assert more.region_for("sts.us-gov-west-1.amazonaws.com") == "us-gov-west-1"
    assert more.region_for("sts.amazonaws.com") == "us-east-1"


def test_china_alone_has_no_global_endpoint() -> None:
    cn = StsHostAllowlist.from_botocore(partitions=("aws-cn",))
    assert cn.region_for("sts.cn-north-1.amazonaws.com.cn") == "cn-north-1"
    assert cn.region_for("sts.amazonaws.com") is None


@pytest.mark.parametrize("partitions", [("aws", "aws-moon"), ("AWS",), ()])
def test_unknown_or_no_partition_is_a_config_error(partitions: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        StsHostAllowlist.from_botocore(partitions=partitions)


def test_extra_hosts_for_config() -> None:
    extra = AWS.with_extra_hosts({"vpce-0abc-sts.us-east-1.vpce.amazonaws.com": "us-east-1"})
    assert extra.region_for("vpce-0abc-sts.us-east-1.vpce.amazonaws.com") == "us-east-1"
    assert extra.region_for("sts.amazonaws.com") == "us-east-1"
    assert AWS.region_for("vpce-0abc-sts.us-east-1.vpce.amazonaws.com") is None  # the original is unchanged


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("10.0.0.5", "us-east-1"),
        ("sts.internal:8443", "us-east-1"),
        ("STS.internal.example", "us-east-1"),
        ("sts.internal.example.", "us-east-1"),
        ("https://sts.internal.example/", "us-east-1"),
        ("sts.internal.example", "Moon"),
        ("sts.internal.example", ""),
    ],
)
def test_extra_hosts_are_checked(host: str, region: str) -> None:
    with pytest.raises(ConfigError):
        AWS.with_extra_hosts({host: region})
