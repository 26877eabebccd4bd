"""``python -m bench``'s options: what to run, how hard, and what to profile (see :mod:`bench.__main__`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import wrk

METHODS = ("token", "aws-ec2", "renew")


@dataclass(frozen=True, slots=True)
class Options:
    requests: int
    concurrency: int
    workers: int
    warmup: int
    methods: tuple[str, ...]
    cfssl: bool
    max_seconds: float
    inprocess_count: int
    py_spy: Path | None
    cprofile: Path | None
    keep: bool
    as_json: bool
    load_generator: str = "python"  # resolved: wrk or python
    rounds: int = 1


def parse_args(argv: Sequence[str] | None) -> Options:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure certificates/s, latency and CPU of `issuer serve` on a throwaway Postgres database, "
        "with in-process figures and cfssl (when installed) for comparison.",
        epilog="example: python -m bench --requests 5000 --concurrency 16 --workers 2",
    )
    parser.add_argument("--requests", type=int, default=5000, metavar="N", help="timed requests per run (5000)")
    parser.add_argument("--concurrency", type=int, default=16, metavar="C", help="client connections (16)")
    parser.add_argument(
        "--workers", type=int, default=cores, metavar="W", help=f"issuer serve --workers (one per core: {cores})"
    )
    parser.add_argument("--warmup", type=int, default=200, metavar="N", help="untimed requests first, per run (200)")
    parser.add_argument(
        "--method",
        choices=(*METHODS, "both", "all"),
        default="all",
        help="issuer runs: one method, both (token and aws-ec2) or all (token, aws-ec2, renew; default)",
    )
    parser.add_argument(
        "--load-generator",
        choices=("wrk", "python", "auto"),
        default="auto",
        help="wrk, or the Python fallback (aiohttp in a child process; takes CPU from the servers); "
        "auto (default): wrk when it is on PATH",
    )
    parser.add_argument("--no-cfssl", action="store_true", help="skip the cfssl comparison")
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, metavar="S", help="wall-clock cap per warm-up and timed window (60)"
    )
    parser.add_argument(
        "--inprocess-count", type=int, default=1000, metavar="N", help="iterations of each in-process figure (1000)"
    )
    parser.add_argument(
        "--py-spy", type=Path, metavar="DIR", help="profile the server with py-spy during each timed window into DIR"
    )
    parser.add_argument(
        "--cprofile",
        type=Path,
        metavar="DIR",
        help="profile the server's CPU time with cProfile during each timed window into DIR (needs --workers 1)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="R",
        help="run everything R times, one round after another, and report each run's median round; on a shared "
        "machine a minute's rates vary by a fifth, cfssl's as much as ours (default 3; 1 with --py-spy or --cprofile)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and databases (for debugging)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    profiling = args.py_spy is not None or args.cprofile is not None
    if args.rounds is None:
        args.rounds = 1 if profiling else 3
    for name in ("requests", "concurrency", "workers", "inprocess_count", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.cprofile and args.workers != 1:
        parser.error("--cprofile profiles one process: use it with --workers 1")
    if args.warmup < 0 or args.max_seconds <= 0:
        parser.error("--warmup must be >= 0 and --max-seconds > 0")
    generator = args.load_generator
    if generator == "auto":
        generator = "wrk" if wrk.wrk_binary() is not None else "python"
    elif generator == "wrk" and wrk.wrk_binary() is None:
        parser.error("--load-generator wrk: no `wrk` on PATH (Debian: apt-get install wrk)")
    methods = {"both": ("token", "aws-ec2"), "all": METHODS}.get(args.method, (args.method,))
    return Options(
        requests=args.requests,
        concurrency=args.concurrency,
        workers=args.workers,
        warmup=args.warmup,
        methods=methods,
        cfssl=not args.no_cfssl,
        max_seconds=args.max_seconds,
        inprocess_count=args.inprocess_count,
        py_spy=args.py_spy,
        cprofile=args.cprofile,
        keep=args.keep,
        as_json=args.json,
        load_generator=generator,
        rounds=args.rounds,
    )
