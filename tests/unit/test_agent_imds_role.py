"""The agent's aws-ec2-role proof: the instance identity role's credentials from IMDSv2, and its options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.agent.cli import main
from clients.errors import ImdsError, ImdsUnavailable
from clients.imds import ImdsClient, ImdsPatience
from clients.imds_role import INSTANCE_ROLE_PATH, instance_role_credentials
from tests.support.fake_imds import ImdsConfig, fake_imds

CREDENTIALS = {
    "Code": "Success",
    "LastUpdated": "2026-01-01T00:00:00Z",
    "Type": "AWS-HMAC",
    "AccessKeyId": "ASIAEXAMPLEEXAMPLE01",
    "SecretAccessKey": "secret/secret",
    "Token": "session-token",
    "Expiration": "2026-01-01T06:00:00Z",
}


def client(url: str, *, max_wait: float = 5.0) -> ImdsClient:
    return ImdsClient(url, patience=ImdsPatience(max_wait=max_wait), sleep=lambda _: None)


def test_credentials_are_read_with_a_token_and_kept_out_of_repr() -> None:
    with fake_imds(ImdsConfig(instance_role=json.dumps(CREDENTIALS))) as imds:
        creds = instance_role_credentials(client(imds.url))
        assert (creds.access_key, creds.secret_key, creds.token) == (
            "ASIAEXAMPLEEXAMPLE01",
            "secret/secret",
            "session-token",
        )
        assert "secret" not in repr(creds) and "session-token" not in repr(creds)
        put, get = imds.requests
        assert (put.method, get.method, get.path) == ("PUT", "GET", INSTANCE_ROLE_PATH)
        assert get.headers["X-aws-ec2-metadata-token"] in imds.tokens


def test_an_expired_token_is_replaced_and_503s_are_retried() -> None:
    config = ImdsConfig(instance_role=json.dumps(CREDENTIALS), expire_first_token=True, unavailable=2)
    with fake_imds(config) as imds:
        assert instance_role_credentials(client(imds.url)).access_key == "ASIAEXAMPLEEXAMPLE01"
        assert [r.status for r in imds.requests][:2] == [503, 503]
        assert [(r.path, r.status) for r in imds.requests if r.method == "GET"] == [
            (INSTANCE_ROLE_PATH, 401),
            (INSTANCE_ROLE_PATH, 200),
        ]


def test_an_imds_that_keeps_failing_is_temporary() -> None:
    with fake_imds(ImdsConfig(instance_role=json.dumps(CREDENTIALS), unavailable=-1)) as imds:
        with pytest.raises(ImdsUnavailable):
            instance_role_credentials(ImdsClient(imds.url, patience=ImdsPatience(max_wait=0.3, base=0.05)))


@pytest.mark.parametrize(
    ("served", "code"),
    [
        (None, "imds_not_found"),
        ("not json", "imds_bad_credentials"),
        ("[]", "imds_bad_credentials"),
        (json.dumps({**CREDENTIALS, "Code": "Failure"}), "imds_bad_credentials"),
        (json.dumps({k: v for k, v in CREDENTIALS.items() if k != "Token"}), "imds_bad_credentials"),
    ],
)
def test_unusable_answers_are_refused(served: str | None, code: str) -> None:
    with fake_imds(ImdsConfig(instance_role=served)) as imds:
        with pytest.raises(ImdsError) as err:
            instance_role_credentials(client(imds.url))
        assert err.value.code == code


def test_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["bootstrap", "--method", "aws-ec2-role", "--server", "http://127.0.0.1:9", "--out", str(tmp_path / "o")]
    assert main(base) == 64
    assert "(code server_id_missing)" in capsys.readouterr().err
    assert main([*base, "--server-id", "x", "--profile", "p"]) == 64
    assert "(code option_not_for_method)" in capsys.readouterr().err
    assert (
        main(
            [
                *base,
                "--server-id",
                "x",
                "--sts-region",
                "eu-west-1",
                "--sts-endpoint-host",
                "sts.us-east-1.amazonaws.com",
            ]
        )
        == 64
    )
    assert "(code sts_region_mismatch)" in capsys.readouterr().err
