"""Configuration: defaults, environment precedence, and errors that name the file, role and field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from issuer.errors import ConfigError
from issuer.policy.ec2 import AWS_EC2
from issuer.policy.iam import AWS_IAM
from issuer.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "issuer.toml"
    path.write_text(text)
    return path


def test_embedded_default_uses_sqlite_in_the_state_dir_and_a_token_role(tmp_path: Path) -> None:
    settings = load_settings(env={"ISSUER_STATE_DIR": str(tmp_path)})
    assert settings.embedded
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}"
    assert [(r.name, r.methods) for r in settings.roles] == [("default", ("token",))]
    assert settings.roles[0].ttl == timedelta(hours=24)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[issuer]\ndatabase_url = "sqlite+aiosqlite:///x.db"\nstate_dir = "/nope"\n')
    settings = load_settings(
        path, env={"ISSUER_DATABASE_URL": "postgresql+asyncpg://u@db/issuer", "ISSUER_STATE_DIR": str(tmp_path)}
    )
    assert settings.database_url == "postgresql+asyncpg://u@db/issuer"
    assert settings.state_dir == tmp_path
    assert settings.roles == ()  # a config file without roles gets no implicit role


def test_full_design_example_parses(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[issuer]
trust_domain = "example.org"
server_id = "issuer.example.org"

[aws.sts]
partitions = ["aws", "aws-cn"]
timeout = "3s"
endpoint_overrides = { "sts.amazonaws.com" = "http://127.0.0.1:5000" }

[[roles]]
name = "web-fleet"
methods = ["aws-ec2"]
account_ids = ["123456789012"]
regions = ["us-east-1"]
max_instance_age = "10m"
allow_migration = true
check_instance = true
vpc_ids = ["vpc-0abc"]
assume_role = "arn:aws:iam::{account_id}:role/issuer-reader"

[[roles]]
name = "ecs-tasks"
methods = ["aws-iam"]
principal_arns = ["arn:aws:iam::123456789012:role/ecs-task-*"]
uri_san = "spiffe://{trust_domain}/aws/{account_id}/iam/{role_name}/{session_name}"
""",
    )
    settings = load_settings(path, env={"ISSUER_STATE_DIR": str(tmp_path)})
    web, ecs = settings.roles
    ec2 = AWS_EC2.of(web)
    assert ec2.max_instance_age == timedelta(minutes=10) and ec2.check_instance and ec2.vpc_ids == ("vpc-0abc",)
    assert AWS_IAM.of(ecs).require_csr_binding is True
    assert settings.sts.partitions == ("aws", "aws-cn")
    assert settings.sts.timeout == timedelta(seconds=3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[roles]]\nname = 'a'\nmethods = ['token']\nttl = 'soon'\n", "role 'a', field 'ttl'"),
        ("[[roles]]\nname = 'a'\nmethods = ['magic']\n", "unknown method 'magic'"),
        ("[[roles]]\nname = 'a'\nmethods = ['token']\ncolour = 'red'\n", "unknown field 'colour'"),
        (
            "[[roles]]\nname = 'a'\nmethods = ['token']\nregions = ['us-east-1']\n",
            "only applies to roles with method 'aws-ec2'",
        ),
        ("[[roles]]\nname = 'a'\nmethods = ['aws-ec2']\nvpc_ids = ['vpc-1']\n", "needs check_instance = true"),
        (
            "[[roles]]\nname = 'a'\nmethods = ['token']\nuri_san = 'spiffe://x/{instance_id}'\n",
            "unknown variable {instance_id}",
        ),
        ("[[roles]]\nname = 'a'\nmethods = ['token']\nttl = '4d'\n", "longer than max_ttl"),
        ("[[roles]]\nname = 'a'\nmethods = ['token']\nkey_types = ['rsa-1024']\n", "unknown key type 'rsa-1024'"),
        (
            "[[roles]]\nname = 'a'\nmethods = ['aws-ec2']\naccount_ids = ['12345']\nmax_instance_age = '5m'\n",
            "not a 12-digit AWS account ID",
        ),
        # A document never expires: an EC2 role must bound its age or check the instance, or say it accepts the risk.
        ("[[roles]]\nname = 'a'\nmethods = ['aws-ec2']\n", "needs max_instance_age"),
        ("[[roles]]\nname = 'a'\nmethods = ['token']\nallow_unbounded_documents = true\n", "only applies"),
        ("[[roles]]\nname = 'a'\nmethods = ['token']\nrenew_grace = 'later'\n", "field 'renew_grace'"),
        ("[issuer]\nregistry_refresh = 'often'\n", "registry_refresh"),
        ("[[roles]]\nname = 'a'\nmethods = ['aws-iam']\n", "server_id is required"),
        (
            "[[roles]]\nname = 'a'\nmethods = ['token']\n[[roles]]\nname = 'a'\nmethods = ['token']\n",
            "used by another role",
        ),
        ("[issuer]\ndatabase_url = 'mysql://x'\n", "database_url must start with"),
        ("[issuer\n", "not valid TOML"),
        ("[server]\nport = 1\n", "unknown section 'server'"),
    ],
)
def test_config_errors_name_file_role_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"ISSUER_STATE_DIR": str(tmp_path)})
    assert str(path) in info.value.detail
    assert message in info.value.detail


@pytest.mark.parametrize(
    "bounds",
    ["max_instance_age = '10m'", "check_instance = true", "allow_unbounded_documents = true"],
)
def test_an_ec2_role_with_any_bound_starts(tmp_path: Path, bounds: str) -> None:
    path = write(tmp_path, f"[[roles]]\nname = 'a'\nmethods = ['aws-ec2']\n{bounds}\n")
    (role,) = load_settings(path, env={"ISSUER_STATE_DIR": str(tmp_path)}).roles
    assert role.methods == ("aws-ec2",)


def test_the_passphrase_comes_from_the_environment_and_never_shows(tmp_path: Path) -> None:
    settings = load_settings(env={"ISSUER_STATE_DIR": str(tmp_path), "ISSUER_CA_PASSPHRASE": "s3cret-passphrase-0123"})
    assert settings.ca_passphrase is not None
    assert settings.ca_passphrase.reveal() == b"s3cret-passphrase-0123"
    assert "s3cret" not in repr(settings)
    named = load_settings(env={"ISSUER_STATE_DIR": str(tmp_path), "ISSUER_CA_PASSPHRASE_FILE": "/run/secrets/ca"})
    assert named.ca_passphrase is None and str(named.ca_passphrase_file) == "/run/secrets/ca"


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "absent.toml", env={})
