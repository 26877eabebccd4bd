"""``issuer --server URL …`` as an operator runs it: the real command in its own process, signing in with the
AWS keys in its environment, against the real app and moto's STS with signature checking on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_admin_api import config
from tests.support.cli import ISSUER, cli_env, one_line_error
from tests.support.harness import Harness, new_csr, running_issuer
from tests.support.moto_iam import AwsKey
from tests.support.moto_operators import Operators, moto_operators
from tests.support.moto_server import free_port


@pytest.fixture(scope="module")
def ops() -> Iterator[Operators]:
    with moto_operators() as made:
        yield made


def remote_env(ops: Operators, key: AwsKey | None, tmp_path: Path) -> dict[str, str]:
    """An operator's shell: no database, no issuer.toml, only AWS keys (or none at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "AWS_"))}
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    if key is not None:
        env |= ops.env(key)
    return env


async def issuer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``issuer`` off the event loop (the server it talks to runs on this loop)."""
    return await asyncio.to_thread(
        subprocess.run, [*ISSUER, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def url(h: Harness) -> str:
    return str(h.client.make_url("")).rstrip("/")


async def test_token_create_remotely_as_alice_and_refused_to_bob_and_mallory(
    tmp_path: Path, pg_url: str, ops: Operators
) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        server = url(h)
        alice = remote_env(ops, ops.alice, tmp_path)
        made = await issuer(
            "--server", server, "token", "create", "--role", "onprem", "--name", "db-7", "--json", env=alice
        )
        assert made.returncode == 0, made.stderr
        token = json.loads(made.stdout)
        assert token["token"].startswith("ijt_") and token["name"] == "db-7"
        status, issued = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": token["token"]})
        assert status == 201, issued

        # Plain output as locally: the token alone on stdout, the words on stderr.
        plain = await issuer("--server", server, "token", "create", "--role", "onprem", "--name", "db-8", env=alice)
        assert plain.returncode == 0 and plain.stdout.startswith("ijt_") and "shown only this once" in plain.stderr

        bob = await issuer(
            "--server",
            server,
            "token",
            "create",
            "--role",
            "onprem",
            "--name",
            "x",
            env=remote_env(ops, ops.bob, tmp_path),
        )
        line = one_line_error(bob)
        assert "'tokens'" in line and "403 permission_denied" in line, line

        mallory = await issuer("--server", server, "whoami", env=remote_env(ops, ops.mallory, tmp_path))
        assert "403 not_an_admin" in one_line_error(mallory)

        rows = [(a.action, a.actor, a.outcome) for a in await h.attestations() if a.method == "admin"]
        assert rows == [
            ("token.create", ops.arn("alice"), "success"),
            ("token.create", ops.arn("alice"), "success"),
            ("token.create", ops.arn("bob"), "failure"),
            ("whoami", ops.arn("mallory"), "failure"),
        ]


async def test_the_same_output_here_and_through_the_server(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        for name in ("box-1", "box-2"):
            status, _ = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name=name)})
            assert status == 201
        local = cli_env(tmp_path, pg_url, config=config(ops))
        remote = ["--server", url(h)]
        sso = remote_env(ops, ops.sso, tmp_path)
        for command in (
            ["certs", "list", "--json"],
            ["certs", "list"],
            ["token", "list", "--all"],
            ["ca", "status", "--json"],
        ):
            here = await issuer(*command, env=local)
            there = await issuer(*remote, *command, env=sso)
            assert here.returncode == there.returncode == 0, (here.stderr, there.stderr)
            if command[-1] == "--json" and command[0] == "ca":
                here_json, there_json = json.loads(here.stdout), json.loads(there.stdout)
                here_json.pop("now"), there_json.pop("now")
                assert here_json == there_json
            else:
                assert here.stdout == there.stdout, command

        # A serial as openssl prints it (colons: percent-encoded in the path, bound as sent).
        (first,) = [c.serial for c in await h.certificates()][:1]
        padded = first if len(first) % 2 == 0 else "0" + first
        colons = ":".join(padded[i : i + 2] for i in range(0, len(padded), 2)).upper()
        here = await issuer("certs", "show", colons, "--json", env=local)
        there = await issuer(*remote, "certs", "show", colons, "--json", env=sso)
        assert here.returncode == there.returncode == 0, (here.stderr, there.stderr)
        assert json.loads(here.stdout) == json.loads(there.stdout) and json.loads(there.stdout)["serial"] == first

        whoami = await issuer(*remote, "whoami", env=sso)
        assert whoami.returncode == 0, whoami.stderr
        assert (
            ops.sso_session_arn in whoami.stdout and "Permissions: audit, deny, read, revoke, tokens" in whoami.stdout
        )


async def test_deny_revoke_and_audit_remotely(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name="box-3")})
        assert status == 201
        alice, server = remote_env(ops, ops.alice, tmp_path), url(h)
        denied = await issuer(
            "--server", server, "deny", "--principal", "box-3", "--reason", "lost", "--revoke", env=alice
        )
        assert denied.returncode == 0, denied.stderr
        assert "Denied principal box-3 until removed" in denied.stdout and body["serial"] in denied.stdout
        listed = await issuer("--server", server, "deny", "list", "--json", env=alice)
        (denial,) = json.loads(listed.stdout)
        assert (denial["value"], denial["created_by"], denial["in_force"]) == ("box-3", ops.arn("alice"), True)
        removed = await issuer("--server", server, "deny", "remove", str(denial["id"]), env=alice)
        assert removed.returncode == 0 and "may attest again" in removed.stdout, removed.stderr

        audit = await issuer("--server", server, "audit", "--method", "admin", "--json", env=alice)
        assert audit.returncode == 0, audit.stderr
        entries = json.loads(audit.stdout)
        assert [(e["action"], e["actor"]) for e in reversed(entries)] == [
            ("deny.add", ops.arn("alice")),
            ("deny.list", ops.arn("alice")),
            ("deny.remove", ops.arn("alice")),
        ]
        assert entries[-1]["arguments"] == {"principal": "box-3", "reason": "lost", "revoke": True}


async def test_what_stays_local_and_one_line_failures(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        alice, server = remote_env(ops, ops.alice, tmp_path), url(h)
        for command in (["migrate"], ["ca", "init"], ["serve"], ["ca", "add-root", "x.pem"]):
            line = one_line_error(await issuer("--server", server, *command, env=alice))
            assert "runs only where the database" in line, line
        rotate = await issuer("--server", server, "ca", "rotate", env=alice)
        assert "403 permission_denied" in one_line_error(rotate)  # alice lacks 'ca'

        nobody = await issuer("--server", server, "whoami", env=remote_env(ops, None, tmp_path))
        assert "no AWS credentials" in one_line_error(nobody)
        closed = await issuer("--server", f"http://127.0.0.1:{free_port()}", "whoami", env=alice)
        assert "cannot reach" in one_line_error(closed)
        plain = await issuer("--server", "http://issuer.example.org", "whoami", env=alice)
        assert "plain HTTP" in one_line_error(plain)
        # ISSUER_SERVER does what --server does.
        via_env = await issuer("whoami", "--json", env=alice | {"ISSUER_SERVER": server})
        assert via_env.returncode == 0 and json.loads(via_env.stdout)["actor"] == ops.arn("alice"), via_env.stderr


async def test_local_operator_actions_are_recorded_as_the_os_user(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    local = cli_env(tmp_path, pg_url, config=config(ops))
    made = await issuer("token", "create", "--role", "onprem", "--name", "db-9", env=local)
    assert made.returncode == 0, made.stderr
    await issuer("deny", "--account", "123456789012", "--until", "1h", "--reason", "drill", env=local)
    refused = await issuer("token", "create", "--role", "nope", "--name", "x", env=local)
    assert refused.returncode == 1
    await issuer("certs", "list", env=local)  # a local read: not an action on the record
    audit = await issuer("audit", "--method", "admin", "--json", env=local)
    entries = list(reversed(json.loads(audit.stdout)))
    assert [(e["action"], e["outcome"], e["code"]) for e in entries] == [
        ("token.create", "success", None),
        ("deny.add", "success", None),
        ("token.create", "failure", "role_unknown"),
    ]
    assert all(e["actor"].startswith("local:") and "@" in e["actor"] for e in entries)
    assert entries[1]["arguments"] == {"account": "123456789012", "until": "1h", "reason": "drill"}
