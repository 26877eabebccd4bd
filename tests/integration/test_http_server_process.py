"""``serve()`` as a process: workers sharing one port, graceful SIGTERM, a killed worker
replaced, start-up failures as one line with no "listening", listen errors.

The process tests run ``python -m tests.support.slow_app`` (the real ``serve`` with a tiny
app) and talk to it over HTTP; every wait is bounded and nothing asserts a duration.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from queue import Queue
from typing import Any

import pytest
from aiohttp import web

from issuer.errors import ConfigError
from issuer.http.server import ServeError, ServerLimits, serve
from tests.support.serve_process import REPO, fetch, leftovers, pids_answering, served, wait_for

# -- workers ---------------------------------------------------------------------------------


def test_two_workers_share_one_port_and_both_serve(tmp_path: Path) -> None:
    with served(tmp_path, "--workers", "2") as server:
        workers = server.workers(2)
        # They accept from one socket and take turns: new connections reach both.
        assert pids_answering(server.url, workers) == workers
        assert "listening on http://127.0.0.1:" in server.stderr()
        assert server.stop() == 0
    for pid in workers:
        assert (server.state / f"cleanup-{pid}").exists(), "the app's cleanup ran in every worker"


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_the_in_flight_request_finish(tmp_path: Path, workers: int) -> None:
    with served(tmp_path, "--workers", str(workers)) as server:
        result: Queue[tuple[int, Any]] = Queue()
        threading.Thread(target=lambda: result.put(fetch(f"{server.url}/slow?s=1.5")), daemon=True).start()
        started = wait_for(lambda: next(server.state.glob("started-*"), None), what="the slow request")
        os.kill(server.proc.pid, signal.SIGTERM)

        status, body = result.get(timeout=60)
        assert (status, body["slept"]) == (200, True)
        assert server.proc.wait(timeout=60) == 0
        pid = int(started.name.removeprefix("started-"))
        assert (server.state / f"cleanup-{pid}").exists()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=10)
        assert "Traceback" not in server.stderr()


def test_a_request_outliving_the_shutdown_timeout_is_cut_and_the_worker_still_cleans_up(tmp_path: Path) -> None:
    with served(tmp_path, "--shutdown-timeout", "0.5") as server:
        result: Queue[BaseException | tuple[int, Any]] = Queue()

        def slow() -> None:
            try:
                result.put(fetch(f"{server.url}/slow?s=120"))
            except BaseException as exc:
                result.put(exc)

        threading.Thread(target=slow, daemon=True).start()
        wait_for(lambda: next(server.state.glob("started-*"), None), what="the slow request")
        os.kill(server.proc.pid, signal.SIGTERM)
        # aiohttp's own default would wait 60 s; this returns once the 0.5 s are up.
        assert server.proc.wait(timeout=30) == 0
        assert isinstance(result.get(timeout=30), OSError | http.client.HTTPException)
        assert (server.state / f"cleanup-{server.proc.pid}").exists()


def test_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    with served(tmp_path, "--workers", "2") as server:
        before = server.workers(2)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        after = server.workers(2, without=victim)
        (replacement,) = after - before
        wait_for(lambda: f"worker {replacement} serving" in server.stderr(), what="the replacement to serve")
        assert f"worker {victim} was killed by SIGKILL; starting a new one" in server.stderr()
        assert pids_answering(server.url, after) == after
        assert server.stop() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_startup_failure_is_one_line_and_never_says_listening(tmp_path: Path, workers: int) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.slow_app",
            "--state",
            str(tmp_path),
            "--fail-startup",
            "--workers",
            str(workers),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""  # on_listening never ran
    assert proc.stderr.splitlines()[-1] == (
        "issuer: error: application start-up failed: ConnectionRefusedError: database at 127.0.0.1:1 refused the connection"
    )
    assert "listening" not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert leftovers(tmp_path) == [], "no worker outlives a failed start"


# -- in-process: errors before serving ------------------------------------------------------


def _never_called() -> web.Application:
    raise AssertionError("make_app must not run when the socket cannot be bound")


def _listening(url: str) -> None:
    raise AssertionError(f"on_listening must not run, got {url}")


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServeError) as caught:
            serve(_never_called, host="127.0.0.1", port=port, on_listening=_listening)
    assert caught.value.code == "listen_failed"
    assert caught.value.detail == f"cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.parametrize(
    ("host", "reason"),
    [("no-such-host.invalid", "cannot resolve the host"), ("192.0.2.1", "Cannot assign requested address")],
)
def test_unusable_host_is_one_line(host: str, reason: str) -> None:
    with pytest.raises(ServeError) as caught:
        serve(_never_called, host=host, port=8080, on_listening=_listening)
    assert caught.value.code == "listen_failed"
    assert caught.value.detail.startswith(f"cannot listen on {host}:8080: {reason}")
    assert "\n" not in caught.value.detail


def test_issuer_errors_from_startup_propagate_as_themselves() -> None:
    error = ConfigError("roles.toml: role 'web' has no bindings", code="config_invalid")

    def make_app() -> web.Application:
        raise error

    with pytest.raises(ConfigError) as caught:
        serve(make_app, host="127.0.0.1", port=0, on_listening=_listening)
    assert caught.value is error


def test_other_startup_errors_become_one_line_after_cleanup() -> None:
    closed = []

    def make_app() -> web.Application:
        app = web.Application()

        async def pool(app: web.Application) -> Any:
            yield
            closed.append("pool")

        async def broken(app: web.Application) -> Any:
            raise RuntimeError("signer key unreadable\n  (details on a second line)")
            yield

        app.cleanup_ctx.extend([pool, broken])
        return app

    with pytest.raises(ServeError) as caught:
        serve(make_app, host="127.0.0.1", port=0, on_listening=_listening)
    assert caught.value.code == "startup_failed"
    assert caught.value.detail == "application start-up failed: RuntimeError: signer key unreadable"
    assert closed == ["pool"]


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        serve(_never_called, host="127.0.0.1", port=0, workers=0)


@pytest.mark.parametrize(
    "limits",
    [{"header_timeout": 0}, {"keepalive_timeout": -1}, {"max_connections": 0}, {"shutdown_timeout": float("inf")},
     {"max_request_line": 8190, "max_header_field": 8190}, {"worker_timeout": 1.5}],
)  # fmt: skip
def test_limits_are_validated(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ServerLimits(**limits)  # type: ignore[arg-type]
