"""``issuer audit verify|seal|anchor`` as operators run them: real processes on the embedded SQLite default
and on Postgres, with ``issuer serve`` sealing, a superuser's edit, and moto's S3 for anchors."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cli import cli_env, issue, issuer, ok, one_line_error, serve
from tests.support.moto_events import moto_events
from tests.support.moto_server import free_port, moto_env


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def sqlite_file(env: dict[str, str]) -> str:
    return env["ISSUER_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")


def audit_rows(env: dict[str, str]) -> int:
    """How many audit rows there are: machines' attempts and operators' actions (token create, revoke) alike."""
    connection = sqlite3.connect(sqlite_file(env))
    try:
        return int(connection.execute("SELECT count(*) FROM attestations").fetchone()[0])
    finally:
        connection.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = cli_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}")
    ok("ca", "init", env=env)
    return env


def test_verify_after_serving_then_after_an_edit(env: dict[str, str]) -> None:
    port = free_port()
    proc = serve(env, port)
    try:
        for name in ("a", "b", "c"):
            issue(env, port, name)
    finally:
        stop(proc)  # the last rows are sealed and checkpointed on the way out
    out = ok("audit", "verify", env=env)
    rows = audit_rows(env)  # 3 issuances and the 3 `token create` operator actions
    assert rows >= 6
    assert re.match(
        rf"Audit trail verified: {rows} entries \(seq 1\.\.{rows}\), \d signed checkpoint\(s\) \(last at seq {rows}\)",
        out,
    ), out
    report = json.loads(ok("audit", "verify", "--json", env=env))
    assert report["ok"] and report["first_bad_row"] is None and report["notes"] == []

    connection = sqlite3.connect(sqlite_file(env))
    connection.execute("UPDATE attestations SET principal = 'mallory' WHERE id = 2")
    connection.commit()
    connection.close()
    result = issuer("audit", "verify", env=env)
    assert result.returncode == 1
    assert result.stdout.startswith("FAILED: row 2 (seq 2): edited:"), result.stdout
    assert result.stderr.strip() == "issuer: error: the audit trail does not verify: first bad row 2 (edited)"
    report = json.loads(issuer("audit", "verify", "--json", env=env).stdout)
    assert report["ok"] is False and report["first_bad_row"] == 2 and report["findings"][0]["kind"] == "edited"


def test_rows_written_with_no_server_running_wait_for_seal(env: dict[str, str]) -> None:
    port = free_port()
    proc = serve(env, port)
    try:
        issue(env, port, "a")
    finally:
        stop(proc)
    serial = json.loads(ok("certs", "list", "--json", env=env))[0]["serial"]
    sealed = audit_rows(env)  # the server sealed everything on its way out
    ok("revoke", "--serial", serial, "--reason", "superseded", env=env)  # audit rows, and no sealer running
    unsealed = audit_rows(env) - sealed
    assert unsealed >= 1
    time.sleep(1.2)
    result = issuer("audit", "verify", "--seal-window", "1s", env=env)
    assert result.returncode == 1 and "unsealed" in result.stdout and "issuer audit seal" in result.stdout
    assert re.fullmatch(
        rf"Sealed {unsealed} audit row\(s\); signed checkpoint \d+\.",
        ok("audit", "seal", "--checkpoint", env=env).strip(),
    )
    assert f"verified: {sealed + unsealed} entries" in ok("audit", "verify", "--seal-window", "1s", env=env)


def test_usage_errors_are_one_line(env: dict[str, str]) -> None:
    assert "--from" in one_line_error(issuer("audit", "verify", "--from", "0", env=env))
    assert "--roots" in one_line_error(issuer("audit", "verify", "--roots", "/nonexistent.pem", env=env))
    result = issuer("audit", "anchor", "s3://Not_A_Bucket/x", env=env)
    assert result.returncode == 2 and "not a valid S3 bucket name" in result.stderr
    assert "example" in ok("audit", "verify", "--help", env=env)


def test_anchor_and_verify_against_the_anchors(tmp_path: Path, env: dict[str, str]) -> None:
    with moto_events() as aws:
        aws.client("s3").create_bucket(Bucket="audit-anchors", ObjectLockEnabledForBucket=True)
        port = free_port()
        proc = serve(env, port)
        try:
            issue(env, port, "a")
        finally:
            stop(proc)
        env |= moto_env(region="us-east-1", AWS_ENDPOINT_URL=aws.server.url)
        env |= {"AWS_ACCESS_KEY_ID": aws.access_key_id, "AWS_SECRET_ACCESS_KEY": aws.secret_access_key}
        out = ok("audit", "anchor", "s3://audit-anchors/prod", "--mode", "COMPLIANCE", "--retain-days", "7", env=env)
        assert re.match(
            r"Anchored [1-9]\d* new checkpoint\(s\) in s3://audit-anchors/prod \(0 were there already\); "
            r"Object Lock COMPLIANCE until ",
            out,
        ), out
        assert "matching the anchored copies" in ok("audit", "verify", "--anchors", "s3://audit-anchors/prod", env=env)
        connection = sqlite3.connect(sqlite_file(env))
        connection.execute("DELETE FROM audit_checkpoints")
        connection.commit()
        connection.close()
        result = issuer("audit", "verify", "--anchors", "s3://audit-anchors/prod", env=env)
        assert result.returncode == 1 and "anchored but missing from the database" in result.stdout
