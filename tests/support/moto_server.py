"""Run moto's server as a real AWS peer on 127.0.0.1 for the duration of a test.

moto runs in its own process (``python -m moto.server``) so that the code under
test talks to it over real HTTP, exactly as it would talk to AWS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class MotoServer:
    url: str  # http://127.0.0.1:PORT
    port: int

    def reset(self) -> None:
        """Drop every resource moto holds (between tests)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).read()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server(*, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> Iterator[MotoServer]:
    """Start ``moto.server`` on a free loopback port; stop it on exit.

    ``env`` adds environment variables for the server process, e.g.
    ``{"INITIAL_NO_AUTH_ACTION_COUNT": "4"}`` to switch request authentication on
    after the first four (setup) requests.
    """
    port = free_port()
    proc_env = dict(os.environ)
    # Never let a developer's real credentials or region leak into the peer.
    for key in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        proc_env.pop(key, None)
    proc_env.update(env or {})
    # moto logs every request on stderr: into a file, never a pipe nobody reads (it would fill and block moto).
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, after moto stops
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=proc_env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")
                raise RuntimeError(f"moto server exited early: {err[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {url} within {timeout}s") from None
                time.sleep(0.1)
        yield MotoServer(url=url, port=port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def moto_env(*, region: str, **endpoints: str) -> dict[str, str]:
    """The ``AWS_*`` variables of a child process that talks to moto: fake keys, ``region``, no instance
    metadata look-up, and ``endpoints`` (``AWS_ENDPOINT_URL`` or a service's, e.g. ``AWS_ENDPOINT_URL_KMS``)."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        **endpoints,
    }


def fake_aws_credentials(mp: pytest.MonkeyPatch, *, region: str) -> None:
    """Fake keys for boto3 talking to moto; nothing may reach real AWS or use a developer's profile."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        mp.delenv(key, raising=False)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", region)
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
