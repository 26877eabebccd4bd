"""``serve()`` with workers sharing one socket: a burst of keep-alive connections is spread over
them; a stopped, stuck, killed or starting worker never holds a new connection, a stuck one is
replaced, and no worker outlives its supervisor.

The tests run ``python -m tests.support.slow_app --workers 2`` (the real ``serve`` with a tiny
app) and send each request on a connection of its own with a short timeout, so a connection
that lands on a worker that cannot answer fails the test instead of waiting. Every wait is
bounded and generous (a loaded CI machine); nothing asserts how fast anything was.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from queue import Queue
from typing import Any

import pytest

from issuer.http.server_config import ServeError, bind_socket
from tests.support.serve_process import children, fetch, is_alive, pids_answering, process_state, served, wait_for

ANSWER_WITHIN = 5.0  # seconds for one request on a fresh connection; the app answers in milliseconds


def answered_by(url: str) -> int:
    """The pid of the worker that answered ``GET /pid`` on a new connection within ``ANSWER_WITHIN``."""
    status, body = fetch(f"{url}/pid", timeout=ANSWER_WITHIN)
    assert status == 200
    return int(body["pid"])


def test_a_burst_of_keep_alive_connections_is_spread_over_the_workers(tmp_path: Path) -> None:
    # Keep-alive connections stay with the worker that accepted them. Without the balance, the
    # first worker to get a CPU took 15 or all 16 of a burst in about a quarter of the bursts.
    with served(tmp_path, "--workers", "2") as server:
        workers = server.workers(2)
        for _ in range(3):
            connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(16)]
            for connection in connections:
                connection.connect()  # all 16 queued at once, before any is accepted
            taken: Counter[int] = Counter()
            for connection in connections:
                connection.request("GET", "/pid")
                taken[json.loads(connection.getresponse().read())["pid"]] += 1
                connection.close()
            assert set(taken) == workers and min(taken.values()) >= 3, taken


def test_a_stopped_worker_does_not_hold_new_connections(tmp_path: Path) -> None:
    # The issue allows 15 s before new connections must be answered again; the shared socket needs
    # none: from the moment the worker stops, the other one takes every new connection.
    with served(tmp_path, "--workers", "2", "--worker-timeout", "300") as server:
        workers = server.workers(2)
        assert pids_answering(server.url, workers) == workers
        victim = min(workers)
        os.kill(victim, signal.SIGSTOP)
        try:
            wait_for(lambda: process_state(victim) == "T", what=f"worker {victim} to stop")
            answers = [answered_by(server.url) for _ in range(20)]
            assert answers == [max(workers)] * 20
            assert process_state(victim) == "T", "still stopped: the watchdog (300 s) had no part in it"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
        # Back from the stop, it takes its turn again.
        assert pids_answering(server.url, workers) == workers
        assert server.stop() == 0


def test_a_killed_worker_loses_no_new_connection_while_it_is_replaced(tmp_path: Path) -> None:
    # Start-up takes 6 s (as opening a database pool may), longer than a request may wait: a
    # connection handed to the replacement before it serves would time out.
    with served(tmp_path, "--workers", "2", "--startup-delay", "6") as server:
        before = server.workers(2)
        assert pids_answering(server.url, before) == before
        victim, survivor = min(before), max(before)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not is_alive(victim), what=f"worker {victim} to die")

        answers, replacement, deadline = [], None, time.monotonic() + 120
        while replacement is None or f"worker {replacement} serving" not in server.stderr():
            answers.append(answered_by(server.url))  # every one answered, none reset or left waiting
            replacement = replacement or next(iter(children(server.proc.pid) - before), None)
            assert time.monotonic() < deadline, "the replacement never served"
            time.sleep(0.05)
        assert set(answers) == {survivor}
        assert len(answers) > 10  # requests were made all through the replacement's start-up

        after = server.workers(2, without=victim)
        assert pids_answering(server.url, after) == after
        assert f"worker {victim} was killed by SIGKILL; starting a new one" in server.stderr()
        assert server.stop() == 0


def test_the_watchdog_replaces_a_worker_whose_loop_is_stuck(tmp_path: Path) -> None:
    with served(tmp_path, "--workers", "2", "--worker-timeout", "3") as server:
        before = server.workers(2)
        stuck_request: Queue[BaseException | tuple[int, Any]] = Queue()

        def block() -> None:
            try:
                stuck_request.put(fetch(f"{server.url}/block?s=300", timeout=120))
            except BaseException as exc:
                stuck_request.put(exc)

        threading.Thread(target=block, daemon=True).start()
        marker = wait_for(lambda: next(server.state.glob("blocked-*"), None), what="a worker to block")
        victim = int(marker.name.removeprefix("blocked-"))
        (healthy,) = before - {victim}

        # New connections go to the healthy worker meanwhile ...
        assert [answered_by(server.url) for _ in range(5)] == [healthy] * 5
        # ... and once the stuck one has not reported for 3 s, it is killed and replaced.
        wait_for(lambda: f"worker {victim} has not reported for" in server.stderr(), timeout=60, what="the watchdog")
        after = server.workers(2, without=victim)
        assert healthy in after, "a worker whose loop runs reports in time and is left alone"
        assert pids_answering(server.url, after) == after
        # The request it was stuck on was in it, and is lost with it.
        assert isinstance(stuck_request.get(timeout=60), OSError)
        assert server.stop() == 0


def test_workers_finish_their_requests_and_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with served(tmp_path, "--workers", "2") as server:
        workers = server.workers(2)
        slow: Queue[BaseException | tuple[int, Any]] = Queue()

        def request() -> None:
            try:
                slow.put(fetch(f"{server.url}/slow?s=2"))
            except BaseException as exc:
                slow.put(exc)

        threading.Thread(target=request, daemon=True).start()
        wait_for(lambda: next(server.state.glob("started-*"), None), what="the slow request")
        os.kill(server.proc.pid, signal.SIGKILL)
        assert server.proc.wait(timeout=30) == -signal.SIGKILL

        result = slow.get(timeout=60)
        assert not isinstance(result, BaseException), result
        assert result[0] == 200, "the request in flight finished: the workers stopped gracefully"
        wait_for(lambda: not any(is_alive(pid) for pid in workers), timeout=30, what="the workers to exit")
        for pid in workers:
            assert (server.state / f"cleanup-{pid}").exists(), "the app's cleanup ran"
        _assert_port_free(server.port)
        assert server.stderr().count("the supervisor is gone; stopping") == 2


def test_a_worker_stuck_when_its_supervisor_dies_is_ended_all_the_same(tmp_path: Path) -> None:
    # Its event loop cannot stop it gracefully: its lifeline thread ends it once the shutdown
    # timeout (1 s) and the grace after it (10 s) are over.
    with served(tmp_path, "--workers", "2", "--shutdown-timeout", "1", "--worker-timeout", "300") as server:
        workers = server.workers(2)
        threading.Thread(target=lambda: _ignore(lambda: fetch(f"{server.url}/block?s=300")), daemon=True).start()
        marker = wait_for(lambda: next(server.state.glob("blocked-*"), None), what="a worker to block")
        stuck = int(marker.name.removeprefix("blocked-"))
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)

        wait_for(lambda: not is_alive(stuck), timeout=60, what=f"the stuck worker {stuck} to exit")
        wait_for(lambda: not any(is_alive(pid) for pid in workers), timeout=30, what="the workers to exit")
        _assert_port_free(server.port)
        assert f"worker {stuck}: still running 11s after its supervisor died; exiting" in server.stderr()


def _ignore(call: Any) -> None:
    with contextlib.suppress(BaseException):
        call()


def _assert_port_free(port: int) -> None:
    # What the next `issuer serve` does: bind and listen (SO_REUSEADDR, which does not allow a
    # second listener). A worker still holding the socket makes this fail.
    try:
        bind_socket("127.0.0.1", port).close()
    except ServeError as exc:
        pytest.fail(f"port {port} still in use: {exc.detail}")
