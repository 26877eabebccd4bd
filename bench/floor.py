"""``python -m bench.floor``: what aiohttp alone costs per request here, the floor under issuance over HTTP.

    python -m bench.floor [--requests N] [--concurrency C] [--workers W] [--warmup N] [--max-seconds S] [--json]

A bare aiohttp server (this module with ``--serve``) in ``--workers`` processes sharing one listening
socket, as ``issuer serve`` runs, answers ``POST /v1/issue/token`` with the shape and size of an
issuance's answer: it reads the body, parses it as JSON, and answers 201 with certificate-sized PEMs
(a real issuing CA's and root's), a unique serial and the other fields ``issuer serve`` sends. No
CSR check, no signature, no database, no middleware, no logs, no metrics. ``wrk`` drives it with
token-request bodies (a fresh P-256 CSR and a token each) exactly as ``make bench`` drives the
issuer (:mod:`bench.wrk`), and the server's CPU per request is measured from /proc.

Read it beside ``make bench``'s "server CPU per certificate": the difference is what the issuer does
beyond receiving a JSON request and sending a JSON answer with aiohttp. At its own (much higher)
rate the floor amortises the event loop's wake-ups over more requests than a server that waits on
crypto and a database does, so it is a lower bound. Exit status: 0; 1 when a step failed or a request went
unanswered; 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from bench import BenchError, process, wrk
from bench.cpu import CpuMeter, MachineMeter, Meter, process_tree
from bench.load import LoadResult, Workload
from bench.workload import make_csrs
from ca.hierarchy import create_hierarchy
from tests.support.moto_server import free_port

PATH = "/v1/issue/token"
MAX_BODY = 64 * 1024


def _app() -> web.Application:
    """The route: read, parse, answer as ``issuer serve`` answers an issuance (same keys, same sizes)."""
    hierarchy = create_hierarchy(now=datetime.now(UTC))
    issuing = hierarchy.issuing.certificate.public_bytes(serialization.Encoding.PEM).decode()
    root = hierarchy.root.certificate.public_bytes(serialization.Encoding.PEM).decode()
    serials = count(1)
    prefix = f"{os.getpid():08x}"

    async def issue(request: web.Request) -> web.Response:
        fields = json.loads(await request.read())
        now = datetime.now(UTC).replace(microsecond=0)
        body = {
            "serial": f"{prefix}{next(serials):024x}",
            "certificate": issuing,  # an issuing CA's PEM: the size of a leaf's, give or take a SAN
            "chain": issuing,
            "bundle": root,
            "not_before": now.isoformat(),
            "not_after": (now + timedelta(hours=1)).isoformat(),
            "renew_after": (now + timedelta(minutes=40)).isoformat(),
            "role": "bench",
            "server_id": "floor",
            "identity": {"method": "token", "principal": str(len(fields)), "uri_san": "spiffe://bench/floor"},
        }
        return web.json_response(body, status=201)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(PATH, issue)
    return app


def serve(port: int, workers: int) -> None:
    """Serve on 127.0.0.1:``port`` in ``workers`` processes (this one and its forks) until SIGTERM."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    children: list[int] = []
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)

    def stop(signum: int, frame: object) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    web.run_app(_app(), sock=sock, print=None, access_log=None, handle_signals=False)


class FloorServer:
    """``python -m bench.floor --serve`` on a free loopback port, in its own process (and its forks)."""

    def __init__(self, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "bench.floor", "--serve", "--port", str(self.port), "--workers", str(workers)]
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def wait_ready(self, *, seconds: float = 30.0) -> None:
        await process.wait_listening(
            self._proc,
            self.port,
            what="the floor server",
            seconds=seconds,
            last_output=self._error,
            code="floor_failed",
        )

    def _error(self) -> str:
        return (self._proc.stderr.read() if self._proc.stderr else b"").decode(errors="replace").strip()[-300:]

    def stop(self) -> None:
        process.stop(self._proc, timeout=10)
        if self._proc.stderr is not None:
            self._proc.stderr.close()


def workload(requests: int, warmup: int) -> Workload:
    """Token-request bodies as ``make bench`` sends them: a fresh P-256 CSR and a token each."""
    csrs = make_csrs(requests + warmup, prefix="bench-floor")
    token = "t" * 43  # a join token's length: 32 random bytes, base64url
    bodies = [json.dumps({"csr": csr, "token": token}, separators=(",", ":")).encode() for csr in csrs]
    return Workload(name="floor", path=PATH, success_status=201, bodies=bodies[warmup:], warmup=bodies[:warmup])


async def measure(
    *, requests: int, concurrency: int, workers: int, warmup: int, max_seconds: float
) -> tuple[LoadResult, float]:
    """The timed window's result and the server's CPU seconds per answered request."""
    load = await asyncio.to_thread(workload, requests, warmup)
    server = FloorServer(workers)
    work_dir = Path(tempfile.mkdtemp(prefix="issuer-bench-floor-"))
    try:
        await server.wait_ready()
        meters: dict[str, Meter] = {"server": CpuMeter(lambda: process_tree(server.pid)), "machine": MachineMeter()}
        result = await wrk.drive(
            load,
            base_url=server.url,
            concurrency=concurrency,
            max_seconds=max_seconds,
            work_dir=work_dir,
            meters=meters,
        )
    finally:
        server.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    per_request = result.cpu["server"].seconds / result.successes if result.successes else 0.0
    return result, per_request


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor",
        description="The floor under issuance over HTTP: a bare aiohttp server that reads a token request's "
        "JSON and answers an issuance-sized JSON, driven by wrk as `make bench` drives the issuer; prints "
        "requests/s, latency and the server's CPU per request.",
        epilog="example: python -m bench.floor --requests 20000 --concurrency 16 --workers 2",
    )
    parser.add_argument("--requests", type=int, default=20000, metavar="N", help="timed requests (20000)")
    parser.add_argument("--concurrency", type=int, default=16, metavar="C", help="wrk connections (16)")
    parser.add_argument("--workers", type=int, default=cores, metavar="W", help=f"server processes ({cores})")
    parser.add_argument("--warmup", type=int, default=500, metavar="N", help="untimed requests first (500)")
    parser.add_argument("--max-seconds", type=float, default=60.0, metavar="S", help="cap per phase (60)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0 or args.max_seconds <= 0:
        parser.error("--warmup must be >= 0 and --max-seconds > 0")
    if not args.serve and wrk.wrk_binary() is None:
        parser.error("no `wrk` on PATH (Debian: apt-get install wrk)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.serve:
        serve(args.port, args.workers)
        return 0
    print(
        f"bench.floor: {args.requests} requests after {args.warmup} warm-up, wrk with {args.concurrency} "
        f"connections, {args.workers} server processes",
        file=sys.stderr,
    )
    try:
        result, per_request = asyncio.run(
            measure(
                requests=args.requests,
                concurrency=args.concurrency,
                workers=args.workers,
                warmup=args.warmup,
                max_seconds=args.max_seconds,
            )
        )
    except BenchError as exc:
        print(f"bench.floor: error: {exc}", file=sys.stderr)
        return 1
    figures = {
        "requests_per_second": round(result.rate, 1),
        "answered": result.successes,
        "sent": result.sent,
        "p50_ms": round(result.p50_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "server_cpu_percent": round(100 * result.cpu["server"].seconds / result.elapsed, 1) if result.elapsed else 0,
        "server_cpu_us_per_request": round(per_request * 1e6, 1),
        "load": result.generator,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"aiohttp floor: {figures['requests_per_second']}/s, {result.successes}/{result.sent} answered, "
            f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms; server CPU {figures['server_cpu_percent']}%, "
            f"{figures['server_cpu_us_per_request']} µs per request ({result.generator})"
        )
    return 0 if result.successes == result.sent and result.successes > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
