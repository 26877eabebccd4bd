"""``[[admins]]``: parsing with clear errors, and which permissions a caller's ARNs hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from issuer.errors import ConfigError
from issuer.policy.admins import AdminGrant, parse_admins, permissions_of
from issuer.settings import load_settings

A = "123456789012"
SSO_SESSION = f"arn:aws:sts::{A}:assumed-role/AWSReservedSSO_Admins_0123abcd/alice@example.com"
SSO_ROLE = f"arn:aws:iam::{A}:role/AWSReservedSSO_Admins_0123abcd"

GRANTS = parse_admins(
    [
        {
            "name": "platform",
            "principals": [f"arn:aws:iam::{A}:role/AWSReservedSSO_Admins_*"],
            "permissions": ["read", "ca"],
        },
        {
            "name": "alice",
            "principals": [f"arn:aws:sts::{A}:assumed-role/AWSReservedSSO_Admins_*/alice@example.com"],
            "permissions": ["audit"],
        },
        {"name": "ci", "principals": [f"arn:aws:iam::{A}:role/ci-deployer"], "permissions": ["tokens", "read"]},
    ],
    source="issuer.toml",
)


def test_a_role_grant_covers_its_sessions_and_a_session_grant_only_that_session() -> None:
    assert permissions_of(GRANTS, (SSO_SESSION, SSO_ROLE)) == {"read", "ca", "audit"}
    bob = SSO_SESSION.replace("alice", "bob")
    assert permissions_of(GRANTS, (bob, SSO_ROLE)) == {"read", "ca"}
    ci = f"arn:aws:sts::{A}:assumed-role/ci-deployer/run-9"
    assert permissions_of(GRANTS, (ci, f"arn:aws:iam::{A}:role/ci-deployer")) == {"tokens", "read"}
    assert permissions_of(GRANTS, (f"arn:aws:iam::{A}:role/ci-deployer-2",)) == frozenset()
    assert permissions_of(GRANTS, ("arn:aws:iam::210987654321:role/ci-deployer",)) == frozenset()
    assert permissions_of((), (SSO_ROLE,)) == frozenset()


def test_names_default_and_permissions_keep_their_order() -> None:
    (grant,) = parse_admins(
        [{"principals": [f"arn:aws:iam::{A}:user/ops"], "permissions": ["audit", "read"]}], source="f"
    )
    assert grant == AdminGrant("admins-1", (f"arn:aws:iam::{A}:user/ops",), frozenset({"read", "audit"}))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"principals": [], "permissions": ["read"]}, "field 'principals'"),
        ({"principals": ["alice"], "permissions": ["read"]}, "is not an IAM/STS ARN pattern"),
        ({"principals": [f"arn:aws:s3:::{A}"], "permissions": ["read"]}, "is not an IAM/STS ARN pattern"),
        ({"principals": [f"arn:aws:iam::{A}:user/x"], "permissions": ["admin"]}, "'admin' is not a permission"),
        ({"principals": [f"arn:aws:iam::{A}:user/x"], "permissions": []}, "field 'permissions'"),
        ({"principals": [f"arn:aws:iam::{A}:user/x"], "permissions": ["read"], "roles": []}, "unknown field 'roles'"),
        ({"name": "has space", "principals": [f"arn:aws:iam::{A}:user/x"], "permissions": ["read"]}, "name must be"),
    ],
)
def test_mistakes_are_named(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_admins([table], source="issuer.toml")
    assert message in caught.value.detail and caught.value.detail.startswith("issuer.toml: ")


def test_settings_read_admins_and_need_a_server_id(tmp_path: Path) -> None:
    path = tmp_path / "issuer.toml"
    admins = f'[[admins]]\nprincipals = ["arn:aws:iam::{A}:user/ops"]\npermissions = ["read"]\n'
    path.write_text(admins)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert "server_id is required with [[admins]]" in caught.value.detail
    path.write_text('[issuer]\nserver_id = "issuer.example.org"\n' + admins)
    settings = load_settings(path, env={})
    assert [g.permissions for g in settings.admins] == [frozenset({"read"})]
    path.write_text('[issuer]\nserver_id = "issuer.example.org"\n')
    assert load_settings(path, env={}).admins == ()
