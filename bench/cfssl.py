"""cfssl as the yardstick: ``cfssl serve`` signing P-256 CSRs into its own Postgres certdb.

The CA is an issuing CA made by the issuer's own ``ca.hierarchy`` (ECDSA P-256, as
``issuer ca init`` makes it); the certdb tables are cfssl's own Postgres migration
(``certdb/pg/migrations/001_CreateCertificates.sql``, the schema of the cfssl
1.2.0 that Debian's ``golang-cfssl`` ships), applied to a throwaway database.
With a certdb configured, ``cfssl serve`` inserts every certificate it signs
before it answers — the same promise the issuer makes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from bench import process
from bench.postgres import libpq_url
from ca.hierarchy import create_hierarchy
from tests.support.moto_server import free_port

__all__ = ["CERTDB_SCHEMA", "CfsslServer", "cfssl_binary"]

# cloudflare/cfssl certdb/pg/migrations/001_CreateCertificates.sql (goose "Up" section).
CERTDB_SCHEMA = """
CREATE TABLE certificates (
  serial_number            bytea NOT NULL,
  authority_key_identifier bytea NOT NULL,
  ca_label                 bytea,
  status                   bytea NOT NULL,
  reason                   int,
  expiry                   timestamptz,
  revoked_at               timestamptz,
  pem                      bytea NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier)
);

CREATE TABLE ocsp_responses (
  serial_number            bytea NOT NULL,
  authority_key_identifier bytea NOT NULL,
  body                     bytea NOT NULL,
  expiry                   timestamptz,
  PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier) REFERENCES certificates(serial_number, authority_key_identifier)
);
"""

# Leaves like the issuer's: client authentication, one day.
SIGNING_CONFIG = {"signing": {"default": {"usages": ["digital signature", "client auth"], "expiry": "24h"}}}


def cfssl_binary() -> str | None:
    """The ``cfssl`` on PATH, or None (Debian: ``apt-get install golang-cfssl``)."""
    return shutil.which("cfssl")


def _write_ca(directory: Path) -> tuple[Path, Path]:
    """The CA certificate and its key (unencrypted: cfssl reads it as is), both PEM files in ``directory``."""
    issuing = create_hierarchy(now=datetime.now(UTC), issuing_common_name="bench cfssl CA").issuing
    cert_path, key_path = directory / "cfssl-ca.pem", directory / "cfssl-ca-key.pem"
    cert_path.write_bytes(issuing.certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        issuing.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class CfsslServer:
    """``cfssl serve`` on a free loopback port with a fresh CA, signing into the certdb at ``database_url``.

    The database must already hold :data:`CERTDB_SCHEMA`.
    """

    def __init__(self, binary: str, work_dir: Path, *, database_url: str) -> None:
        ca, ca_key = _write_ca(work_dir)
        config = work_dir / "cfssl-config.json"
        config.write_text(json.dumps(SIGNING_CONFIG))
        db_config = work_dir / "cfssl-db.json"
        # Go's lib/pq asks for TLS unless told otherwise; the local Postgres speaks plain TCP.
        db_config.write_text(
            json.dumps({"driver": "postgres", "data_source": libpq_url(database_url) + "?sslmode=disable"})
        )
        db_config.chmod(0o600)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / "cfssl.log"
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            [
                binary,
                "serve",
                "-address",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-ca",
                str(ca),
                "-ca-key",
                str(ca_key),
                "-config",
                str(config),
                "-db-config",
                str(db_config),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def wait_ready(self, *, seconds: float = 30.0) -> None:
        """Until the port accepts connections; raises :class:`BenchError` if cfssl exits first."""
        await process.wait_listening(
            self._proc, self.port, what="cfssl serve", seconds=seconds, last_output=self._last_line, code="cfssl_failed"
        )

    def _last_line(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def stop(self) -> None:
        process.stop(self._proc, timeout=10)
        self._log.close()
