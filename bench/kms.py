"""``python -m bench.kms``: what signing in AWS KMS costs an issuance, against moto's KMS server.

    python -m bench.kms [--requests N] [--concurrency C] [--inprocess N] [--json]

For each backend — ``file`` (the issuing key in an encrypted file) and ``kms`` (``issuer ca init
--create-kms-key`` against moto) — a throwaway Postgres database, ``issuer migrate``, ``issuer ca
init``, ``issuer serve`` (one worker; the KMS one with no passphrase in its environment), preloaded
join tokens, a warm-up, then N token issuances through HTTP, C at a time (1: sequential). Then
in-process: ``KmsSigner.issue`` and ``LocalFileSigner.issue`` N times each, sequentially and C at
a time. moto answers Sign in well under a millisecond of network but in Python; real KMS takes
tens of milliseconds per Sign and allows a shared account-and-region quota of requests per second
(see the README, "CA keys in AWS KMS"), so read the KMS figures as the issuer's own overhead, not
as what AWS will give. Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import boto3
from cryptography.hazmat.primitives.asymmetric import ec

from bench import BenchError
from bench.issuer_server import TOKEN_ROLE, IssuerServer, IssuerSetup, run_issuer
from bench.postgres import base_url, throwaway_database
from bench.workload import token_workload
from ca.hierarchy import create_hierarchy, create_root
from ca.kms import load_kms_signer
from ca.kms_client import kms_botocore_config
from ca.kms_setup import create_issuing_for_kms_key, create_kms_key
from ca.profile import LeafTemplate
from ca.signer import Signer, SigningRequest
from tests.support.moto_server import moto_env, moto_server

__all__ = ["main"]

CONFIG = f"""\
# written by python -m bench.kms
[issuer]
trust_domain = "bench.example"
rate_limit = "off"

[[roles]]
name = "{TOKEN_ROLE}"
methods = ["token"]
ttl = "24h"
"""
PASSPHRASE = "bench-kms-passphrase-0123456789abcdef"
REGION = "eu-west-1"


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    count: int
    successes: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.successes / self.seconds if self.seconds > 0 else 0.0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _drive(url: str, bodies: Sequence[bytes], *, concurrency: int) -> tuple[int, float]:
    """POST every body, ``concurrency`` at a time; (201s, seconds)."""
    queue = list(reversed(bodies))
    ok = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            nonlocal ok
            while queue:
                body = queue.pop()
                async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    ok += resp.status == 201

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ok, time.perf_counter() - started


async def _http_run(backend: str, moto_url: str, work: Path, *, requests: int, concurrency: int) -> Figure:
    root = work / backend
    root.mkdir()
    config = root / "issuer.toml"
    config.write_text(CONFIG)
    async with throwaway_database(base_url(os.environ), prefix=f"bench_kms_{backend}") as db:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "AWS_"))}
        env |= moto_env(region=REGION, AWS_ENDPOINT_URL_KMS=moto_url) | {
            "ISSUER_CONFIG": str(config),
            "ISSUER_STATE_DIR": str(root / "state"),
            "ISSUER_DATABASE_URL": db,
        }
        init = ["ca", "init"]
        if backend == "kms":
            init += ["--create-kms-key", f"alias/bench-{secrets.token_hex(4)}"]
        env["ISSUER_CA_PASSPHRASE"] = PASSPHRASE  # the kms set-up uses it for the root key file only
        run_issuer(["migrate"], env, what="issuer migrate")
        run_issuer(init, env, what=f"issuer {' '.join(init)}")
        if backend == "kms":
            env.pop("ISSUER_CA_PASSPHRASE")  # serving needs none
        warmup = min(20, requests)
        workload = await token_workload(db, role=TOKEN_ROLE, count=requests, warmup=warmup, now=datetime.now(UTC))
        setup = IssuerSetup(env=env, config_path=config, state_dir=root / "state", database_url=db)
        server = IssuerServer(setup, workers=1, log_path=root / "serve.log", log_level="warning")
        try:
            await server.wait_ready()
            url = f"{server.url}{workload.path}"
            await _drive(url, workload.warmup, concurrency=concurrency)
            _say(f"{backend}: {requests} token issuances through HTTP, {concurrency} at a time")
            ok, seconds = await _drive(url, workload.bodies, concurrency=concurrency)
        finally:
            server.stop()
    if ok != requests:
        raise BenchError(f"{backend}: {requests - ok} of {requests} issuances failed; see {root / 'serve.log'}")
    return Figure(f"http {backend} c={concurrency}", requests, ok, seconds)


async def _timed(name: str, count: int, concurrency: int, step: Callable[[], Awaitable[object]]) -> Figure:
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await step()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Figure(name, count, count, time.perf_counter() - started)


async def _inprocess(moto_url: str, *, count: int, concurrency: int) -> list[Figure]:
    now = datetime.now(UTC)
    client = boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=kms_botocore_config(max_pool_connections=32),
    )
    root = create_root(now=now)
    key = create_kms_key(client, key_spec="ECC_NIST_P256")
    issuing = create_issuing_for_kms_key(root, client, key.key_id, now=now)
    kms = await load_kms_signer(client, key.key_id, issuer_certificate=issuing, roots=[root.certificate])
    local = create_hierarchy(now=now).signer()
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    template = LeafTemplate(
        common_name="bench",
        uri_sans=("spiffe://bench.example/bench",),
        not_before=now - timedelta(minutes=1),
        not_after=now + timedelta(hours=1),
    )

    def step(signer: Signer) -> Callable[[], Awaitable[object]]:
        return lambda: signer.issue(SigningRequest(template=template, public_key=public))

    figures = []
    for name, signer in (("kms", kms), ("file", local)):
        await _timed("warm-up", min(count, 10), 1, step(signer))
        for c in sorted({1, concurrency}):
            _say(f"in-process {name}: {count} leaves, {c} at a time")
            figures.append(await _timed(f"in-process {name} c={c}", count, c, step(signer)))
    return figures


def _render(figures: Sequence[Figure]) -> str:
    lines = [f"{'figure':<24} {'count':>6} {'seconds':>8} {'certs/s':>9}"]
    lines += [f"{f.name:<24} {f.successes:>6} {f.seconds:>8.2f} {f.per_second:>9.1f}" for f in figures]
    return "\n".join(lines)


async def _run(options: argparse.Namespace) -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-kms-") as tmp, ExitStack() as stack:
        try:
            moto = stack.enter_context(moto_server()).url
        except RuntimeError as exc:
            last = str(exc).strip().splitlines()[-1]
            raise BenchError(f"moto's server did not start: {last}", code="moto_failed") from None
        for backend in ("file", "kms"):
            for c in sorted({1, options.concurrency}):
                work = Path(tmp) / f"c{c}"
                work.mkdir(exist_ok=True)
                figures.append(await _http_run(backend, moto, work, requests=options.requests, concurrency=c))
        figures += await _inprocess(moto, count=options.inprocess, concurrency=options.concurrency)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kms", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="issuances through HTTP per backend (300)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests/signings in flight, besides 1 (8)")
    parser.add_argument("--inprocess", type=int, default=500, help="in-process signings per backend (500)")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    options = parser.parse_args(argv)
    if min(options.requests, options.concurrency, options.inprocess) < 1:
        parser.error("counts must be at least 1")
    try:
        figures = asyncio.run(_run(options))
    except BenchError as exc:
        print(f"bench.kms: error: {exc}", file=sys.stderr)
        return 1
    if options.json:
        print(json.dumps([asdict(f) | {"per_second": round(f.per_second, 1)} for f in figures], indent=2))
    else:
        print(_render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
