"""What the ``issuer`` command says when the operator's setup is wrong: one line that points the right way.

A wrong database name or user is named (host, port, database, user) like an unreachable host, from
every command and from ``serve``; ``migrate --revision`` reports the revision the database is at;
a reader that goes away (``| head``) is not a database error.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from issuer.store.migrate import revisions
from tests.support.cli import ISSUER, cli_env, issuer, ok, one_line_error, phases
from tests.support.moto_server import free_port


@pytest.fixture
def env(tmp_path: Path, pg_url: str) -> dict[str, str]:
    return cli_env(tmp_path, pg_url)


COMMANDS = (["certs", "list"], ["migrate"], ["token", "list"], ["serve", "--port", "0"], ["ca", "status"])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_database_that_does_not_exist_is_one_line_naming_where(env: dict[str, str], command: list[str]) -> None:
    url = make_url(env["ISSUER_DATABASE_URL"])
    env["ISSUER_DATABASE_URL"] = url.set(database="no_such_issuer_db").render_as_string(hide_password=False)
    line = one_line_error(issuer(*command, env=env))
    where = f"database 'no_such_issuer_db' on {url.host}:{url.port or 5432} as user '{url.username}'"
    assert where in line, line
    assert 'database "no_such_issuer_db" does not exist' in line and "ISSUER_DATABASE_URL" in line


@pytest.mark.parametrize("command", COMMANDS[:3], ids=lambda c: " ".join(c))
def test_a_user_the_server_does_not_know_is_one_line_naming_it(env: dict[str, str], command: list[str]) -> None:
    url = make_url(env["ISSUER_DATABASE_URL"])
    env["ISSUER_DATABASE_URL"] = url.set(username="no_such_issuer_user").render_as_string(hide_password=False)
    line = one_line_error(issuer(*command, env=env))
    assert f"on {url.host}:{url.port or 5432} as user 'no_such_issuer_user'" in line, line
    assert "no_such_issuer_user" in line and "user and password" in line


def test_an_unreachable_host_names_user_and_database_too(env: dict[str, str]) -> None:
    port = free_port()
    env["ISSUER_DATABASE_URL"] = f"postgresql+asyncpg://someone@127.0.0.1:{port}/issuer"
    line = one_line_error(issuer("token", "list", env=env))
    assert f"database 'issuer' on 127.0.0.1:{port} as user 'someone'" in line
    assert "that the server is running" in line


def test_migrate_to_an_older_revision_says_where_the_schema_is(env: dict[str, str]) -> None:
    known = revisions()
    done = issuer("migrate", env=env)
    assert done.returncode == 0, done.stderr
    assert f"Schema is at {known[-1]}" in done.stdout
    older = issuer("migrate", "--revision", known[0], env=env)
    line = one_line_error(older)
    assert f"the schema is at {known[-1]}, not {known[0]}" in line
    assert f"Schema is at {known[0]}" not in older.stdout
    unknown = issuer("migrate", "--revision", "9999", env=env)
    assert unknown.returncode == 2 and "'9999' is not a revision" in one_line_error(unknown)


def test_a_reader_that_goes_away_is_not_a_database_error(env: dict[str, str]) -> None:
    assert issuer("token", "create", "--role", "onprem", "--name", "box-1", env=env).returncode == 0
    proc = subprocess.Popen(
        [*ISSUER, "token", "list", "--all"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` that has read all it wanted
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141  # as a command killed by SIGPIPE
    assert err == ""


def test_ca_show_names_the_registrys_active_issuer_not_the_retired_one_in_the_files(env: dict[str, str]) -> None:
    ok("ca", "init", env=env)
    ((_, old_fp),) = phases(env)
    ok("ca", "rotate", "--validity", "90d", env=env)
    ok("ca", "activate", "--force", env=env)
    ok("ca", "retire", old_fp[:16], "--force", env=env)
    ((_, new_fp), (_, _)) = phases(env)
    shown = ok("ca", "show", env=env)
    active_block = shown.split("issuing (active: signs new certificates):", 1)[1].split("\n\n", 1)[0]
    assert f"sha256:   {new_fp}" in active_block.splitlines()[5], shown
    assert old_fp not in active_block.split("root (")[0]
    assert f"retired   {old_fp[:16]}" in shown
    assert "issuing.pem = issuing CA, retired" in shown and "root.pem = root, active" in shown
