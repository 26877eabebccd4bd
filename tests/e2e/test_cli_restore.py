"""Restore that cannot hurt: an old CA directory meeting an empty database is refused, never re-registered.

The scenario an operator hit: a CA was initialised, rotated and its first issuing CA retired; later
the service was pointed at an *empty* database with the old state directory (a lost database, a
wrong ``ISSUER_DATABASE_URL``, a half-done restore). It registered the retired issuer as active again
and every revocation was gone. Now ``serve`` and ``ca init`` refuse in one line and say how to
restore; ``ca adopt --yes`` registers the files on purpose, and never the retired issuer.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from issuer.service.ca.marker import MARKER_NAME
from tests.support.cli import CONFIG, cli_env, issuer, ok, one_line_error, phases
from tests.support.moto_server import free_port

# The rotated issuer may be short-lived; the roles' max_ttl bounds it from below.
SHORT = CONFIG.replace('max_ttl = "72h"', 'max_ttl = "2h"').replace('ttl = "24h"', 'ttl = "1h"')


def test_an_old_ca_directory_meeting_an_empty_database_is_refused_and_adopt_never_revives_a_retired_issuer(
    tmp_path: Path, sqlite_url: str, pg_url: str
) -> None:
    # The original deployment (its database is about to be "lost"): init, rotate, activate, retire the first.
    original = cli_env(tmp_path, sqlite_url, config=SHORT)
    ok("ca", "init", env=original)
    marker = tmp_path / "state" / "ca" / MARKER_NAME
    first = json.loads(marker.read_text())["issuer"]
    assert [fp for phase, fp in phases(original)] == [first]
    ok("ca", "rotate", "--validity", "30d", env=original)
    ok("ca", "activate", env=original)
    retired = ok("ca", "retire", first[:16], "--force", env=original)
    assert MARKER_NAME in retired
    assert first in json.loads(marker.read_text())["retired"]

    # The same state directory, an empty (migrated) database.
    restored = cli_env(tmp_path, pg_url, config=SHORT)
    refused = issuer("serve", "--port", str(free_port()), env=restored, timeout=60)
    line = one_line_error(refused)
    assert "was registered in a database before" in line and "issuer ca adopt" in line
    assert "Restore the database backup" in line
    assert "registry is empty" in one_line_error(issuer("ca", "status", env=restored))  # nothing registered
    again = one_line_error(issuer("ca", "init", env=restored))
    assert "already exists" in again or "registered" in again

    # Adopting needs the explicit confirmation, and leaves the retired issuer out.
    assert issuer("ca", "adopt", env=restored).returncode == 2
    adopted = ok("ca", "adopt", "--yes", env=restored)
    assert "1 root(s) registered" in adopted and "was retired" in adopted
    # The retired issuer is not active again, nor registered at all: only the root is.
    assert "registry is empty" in one_line_error(issuer("ca", "status", env=restored))
    # The way back to signing is a rotation under the adopted root.
    ok("ca", "rotate", "--validity", "30d", env=restored)
    ok("ca", "activate", env=restored)
    [(phase, fingerprint)] = phases(restored)
    assert phase == "active" and fingerprint != first
    assert one_line_error(issuer("ca", "adopt", "--yes", env=restored))  # a second adopt: registry not empty


def test_a_deployment_from_before_the_marker_gets_one_when_it_serves_and_is_then_protected(
    tmp_path: Path, sqlite_url: str, pg_url: str
) -> None:
    original = cli_env(tmp_path, sqlite_url)
    ok("ca", "init", env=original)
    marker = tmp_path / "state" / "ca" / MARKER_NAME
    marker.unlink()  # as a CA directory made before this change looks
    # Serving against its own database marks it; a port already taken stops it right after that check.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        line = one_line_error(issuer("serve", "--port", str(taken.getsockname()[1]), env=original))
    assert "in use" in line
    assert json.loads(marker.read_text())["database"].startswith("sqlite:")

    restored = cli_env(tmp_path, pg_url)
    line = one_line_error(issuer("serve", "--port", str(free_port()), env=restored))
    assert "was registered in a database before" in line


def test_adopting_an_unmarked_directory_registers_it_as_active(tmp_path: Path, sqlite_url: str, pg_url: str) -> None:
    ok("ca", "init", env=cli_env(tmp_path, sqlite_url))
    restored = cli_env(tmp_path, pg_url)
    out = ok("ca", "adopt", "--yes", env=restored)
    assert "active issuer" in out
    assert [phase for phase, _ in phases(restored)] == ["active"]
