"""GET /metrics across ``issuer serve --workers 2``, run as an operator runs it: every scrape, whichever
worker answers it, adds up what every worker did; a killed worker's counts survive it and its
replacement takes its place in the live series; the shared directory is gone after a stop.

Requests go over fresh connections so both workers take some (they take turns accepting from
the one socket); the assertions hold however they are spread. Every wait is bounded and nothing
asserts a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty, Queue

from issuer.service.admin import operations as admin
from issuer.settings import Settings, load_settings
from issuer.store.engine import make_engine, make_session_factory
from tests.support.harness import PASSPHRASE, new_csr
from tests.support.metrics_scrape import Scrape
from tests.support.moto_server import free_port

REPO = Path(__file__).resolve().parents[2]
CONFIG = """
[issuer]
trust_domain = "test.example"

[[roles]]
name = "onprem"
methods = ["token"]
"""


@contextmanager
def serving(tmp_path: Path, pg_url: str, *, workers: int) -> Iterator[tuple[subprocess.Popen[str], str, Settings]]:
    """``issuer serve --workers N`` on a free port; (process, base URL, its settings)."""
    state = tmp_path / "state"
    (tmp_path / "issuer.toml").write_text(CONFIG)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "PROMETHEUS_"))},
        "ISSUER_CONFIG": str(tmp_path / "issuer.toml"),
        "ISSUER_STATE_DIR": str(state),
        "ISSUER_DATABASE_URL": pg_url,
        "ISSUER_CA_PASSPHRASE": PASSPHRASE,
    }
    made = subprocess.run(
        [sys.executable, "-m", "issuer.cli", "ca", "init"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "issuer.cli", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=REPO,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: Queue[str] = Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("listening on" in line for line in seen):
            if time.monotonic() > deadline or (proc.poll() is not None and lines.empty()):
                raise AssertionError("issuer serve did not start:\n" + "".join(seen))
            with contextlib.suppress(Empty):
                seen.append(lines.get(timeout=0.2))
        yield proc, f"http://127.0.0.1:{port}", load_settings(tmp_path / "issuer.toml", env=env)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def create_tokens(settings: Settings, count: int) -> list[str]:
    async def make() -> list[str]:
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            sessions = make_session_factory(engine)
            return [
                (
                    await admin.create_token(
                        sessions, settings, role="onprem", name=f"m-{i}", ttl=timedelta(hours=1), now=datetime.now(UTC)
                    )
                ).token
                for i in range(count)
            ]
        finally:
            await engine.dispose()

    return asyncio.run(make())


def post(url: str, body: bytes) -> int:
    """POST on a connection of its own (urllib closes it), so either worker may accept it."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def scrape(base: str) -> Scrape:
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as resp:
        assert resp.status == 200
        return Scrape.parse(resp.read().decode())


def worker_pids(metrics: Scrape) -> set[int]:
    return {int(labels["pid"]) for labels in metrics.series("issuer_worker_start_time_seconds")}


def test_two_workers_are_one_set_of_metrics(tmp_path: Path, pg_url: str) -> None:
    issued, refused = 8, 3
    with serving(tmp_path, pg_url, workers=2) as (proc, base, settings):
        tokens = create_tokens(settings, issued)
        statuses = [
            post(f"{base}/v1/issue/token", json.dumps({"csr": new_csr()[1], "token": t}).encode()) for t in tokens
        ]
        statuses += [post(f"{base}/v1/issue/token", b'{"csr": "x", "token": "y"}') for _ in range(refused)]
        assert statuses == [201] * issued + [400] * refused

        scrapes = [scrape(base) for _ in range(8)]  # answered by either worker, each adds up both
        for m in scrapes:
            assert len(worker_pids(m)) == 2  # both workers' files in every scrape
            assert m.total("issuer_issuances_total", method="token", outcome="issued") == issued
            assert m.total("issuer_issuances_total", method="token", outcome="refused") == refused
            assert m.total("issuer_http_requests_total", route="/v1/issue/token", status="201") == issued
            assert m.total("issuer_issuance_duration_seconds_count", method="token") == issued + refused
            assert m.total("issuer_http_in_flight_requests") == 0
            assert not m.has("process_resident_memory_bytes")  # per-process figures make no sense summed
        pids = worker_pids(scrapes[0])

        # A worker killed outright: the supervisor replaces it; its counts stay, its live series go.
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            now_pids = worker_pids(scrape(base))
            if len(now_pids) == 2 and victim not in now_pids:
                break
            assert time.monotonic() < deadline, f"worker {victim} not replaced: {now_pids}"
            time.sleep(0.2)
        after = scrape(base)
        assert after.total("issuer_issuances_total", method="token", outcome="issued") == issued

        metrics_dirs = list((tmp_path / "state").glob("metrics-*"))
        assert len(metrics_dirs) == 1 and any(metrics_dirs[0].iterdir())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert list((tmp_path / "state").glob("metrics-*")) == []  # removed on the way out
