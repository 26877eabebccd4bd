"""bench/wrk.py with the real ``wrk`` against a small HTTP server that records every request it receives.

The server is the peer wrk talks to: it answers 201 with a serial, or a problem+json
refusal, after a short varied delay, and keeps every body (and its Authorization header)
it was sent, so each test checks on the server's side that every pre-built body arrived
exactly once and that the generator's counts match what was received.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from bench import wrk
from bench.load import Workload
from tests.support.moto_server import free_port

WRK = shutil.which("wrk")


@pytest.fixture(autouse=True)
def _needs_wrk() -> None:
    if WRK is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed; CI requires it (apt-get install wrk)", pytrace=False)
        pytest.skip("SKIPPING WRK TEST: wrk is not installed (apt-get install wrk)")


@dataclass
class Peer:
    url: str
    received: Counter[int] = field(default_factory=Counter)
    authorizations: dict[int, str | None] = field(default_factory=dict)
    slow: float = 0.0  # seconds for every request
    # The cap test: requests after the first ``hold_after`` received get no answer until ``release``.
    hold_after: int | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    port = free_port()
    state = Peer(url=f"http://127.0.0.1:{port}")

    async def handle(request: web.Request) -> web.Response:
        i = int((await request.json())["i"])
        state.received[i] += 1
        state.authorizations[i] = request.headers.get("Authorization")
        if state.hold_after is not None and sum(state.received.values()) > state.hold_after:
            await state.release.wait()
        await asyncio.sleep(state.slow or (0.002 * (i % 4)))
        if i % 3 == 2:  # a refusal, in the issuer's problem+json shape
            return web.json_response({"code": "token_unknown", "status": 401}, status=401)
        return web.json_response({"serial": f"{i:04x}", "nested": {"serial": "not-this-one"}}, status=201)

    app = web.Application()
    app.router.add_post("/v1/issue/token", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield state
    finally:
        state.release.set()  # answer what is held, so the server stops at once
        await runner.cleanup()


def workload(count: int, *, warmup: int = 0, authorized: bool = False) -> Workload:
    bodies = [json.dumps({"i": i}).encode() for i in range(warmup + count)]
    auths = [f"Bearer token-{i}" for i in range(warmup + count)] if authorized else []
    return Workload(
        name="token",
        path="/v1/issue/token",
        success_status=201,
        bodies=bodies[warmup:],
        warmup=bodies[:warmup],
        authorizations=auths[warmup:],
        warmup_authorizations=auths[:warmup],
    )


def successes_of(indices: Sequence[int]) -> int:
    return sum(1 for i in indices if i % 3 != 2)


async def test_seven_bodies_over_two_threads_and_three_connections_each_sent_once(peer: Peer, tmp_path: Path) -> None:
    # wrk gives each thread 3 // 2 = 1 connection: thread 0 takes bodies 0, 2, 4, 6 and thread 1 takes 1, 3, 5.
    phase = await wrk.run_phase(
        str(WRK),
        workload(7, authorized=True),
        warmup=False,
        base_url=peer.url,
        concurrency=3,
        threads=2,
        max_seconds=30,
        work_dir=tmp_path,
    )
    assert peer.received == Counter(range(7))  # every body, exactly once
    assert peer.authorizations == {i: f"Bearer token-{i}" for i in range(7)}
    assert (phase.bodies, phase.sent, phase.answered, phase.lost) == (7, 7, 7, 0)
    assert phase.successes == successes_of(range(7)) == 5
    assert dict(phase.errors) == {"401 token_unknown": 2}
    assert sorted(phase.serials) == sorted(f"{i:04x}" for i in range(7) if i % 3 != 2)  # the top-level field
    assert sum(n for _, n in phase.latencies) == 7  # one latency per request
    assert not phase.capped
    assert 0 < phase.elapsed < 10


async def test_drive_warmup_then_timed_with_more_threads_than_a_thread_has_bodies(peer: Peer, tmp_path: Path) -> None:
    # 3 warm-up bodies and 1 timed one over 2 threads: one timed thread has nothing to send and stops at once.
    result = await wrk.drive(
        workload(1, warmup=3), base_url=peer.url, concurrency=4, max_seconds=30, work_dir=tmp_path, threads=2
    )
    assert peer.received == Counter(range(4))
    assert (result.warmup_sent, result.warmup_successes) == (3, successes_of(range(3)))
    assert (result.sent, result.successes, result.errors) == (1, 1, {})
    assert sorted(result.serials) == ["0000", "0001", "0003"]  # warm-up's and the timed window's
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert result.generator.startswith("wrk 4.") and result.generator.endswith("2 threads, 4 connections")


async def test_the_cap_ends_a_run_and_counts_requests_in_flight_as_unanswered(peer: Peer, tmp_path: Path) -> None:
    # Two answers, then nothing more until the cap: the run is capped with requests in flight however
    # fast or loaded the machine is.
    peer.hold_after = 2
    phase = await wrk.run_phase(
        str(WRK),
        workload(40),
        warmup=False,
        base_url=peer.url,
        concurrency=2,
        threads=2,
        max_seconds=2,
        work_dir=tmp_path,
    )
    assert phase.capped
    assert 0 < phase.answered < phase.sent < 40
    assert sum(peer.received.values()) == phase.sent and max(peer.received.values()) == 1  # never twice
    assert phase.successes + sum(phase.errors.values()) == phase.sent
    assert phase.errors["unanswered (in flight at the cap)"] == phase.sent - phase.answered


async def test_latencies_are_one_per_request_although_wrk_adds_synthetic_ones(peer: Peer, tmp_path: Path) -> None:
    # A long tail makes wrk's coordinated-omission correction add samples; the script takes them out again.
    peer.slow = 0.0
    slow_every = 10

    async def one_slow_in_ten() -> None:
        while True:
            peer.slow = 0.15 if sum(peer.received.values()) % slow_every == 0 else 0.001
            await asyncio.sleep(0.0005)

    task = asyncio.get_running_loop().create_task(one_slow_in_ten())
    try:
        phase = await wrk.run_phase(
            str(WRK),
            workload(200),
            warmup=False,
            base_url=peer.url,
            concurrency=4,
            threads=2,
            max_seconds=30,
            work_dir=tmp_path,
        )
    finally:
        task.cancel()
    assert peer.received == Counter(range(200))
    assert sum(n for _, n in phase.latencies) == phase.answered == 200
    assert phase.wrk_samples > 200  # wrk's own histogram, corrected: more samples than requests


def test_threads_never_outnumber_connections_and_use_them_all() -> None:
    assert [wrk.threads_for(c) for c in (1, 2, 3, 16, 17)] == [1, 2, 1, 2, 1]
    assert wrk.wrk_version(str(WRK)).startswith("4.")
