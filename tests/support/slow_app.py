"""A tiny app served by ``issuer.http.server.serve``, for the process-level server tests.

Run as ``python -m tests.support.slow_app --port 0 --workers 2 --state DIR``: it prints
the listening URL on stdout (``on_listening``) and logs as text on stderr; a failure to
serve is one line ``issuer: error: ...`` and exit status 1, as the CLI does.

Routes: ``GET /pid`` (the worker's pid), ``GET /slow?s=`` (marks ``DIR/started-<pid>``,
sleeps ``s`` without blocking, answers with the pid), ``GET /block?s=`` (marks
``DIR/blocked-<pid>``, then blocks the event loop for ``s``: a stuck worker), ``POST /echo``
(body length). The
cleanup context writes ``DIR/cleanup-<pid>``; ``--fail-startup`` makes start-up raise;
``--startup-delay S`` makes it take S seconds (as opening a database pool does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from issuer.errors import IssuerError
from issuer.http.problems import problem
from issuer.http.server import ServerLimits, serve
from issuer.logs import configure_logging

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A stand-in for the app's error middleware: HTTP errors become problem+json.
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, code="bad_request", title=exc.reason, detail=exc.text or "", request_id="test")


def create_app(state: Path, *, fail_startup: bool = False, startup_delay: float = 0.0) -> web.Application:
    app = web.Application(middlewares=[_problems])

    async def resources(app: web.Application) -> AsyncIterator[None]:
        if fail_startup:
            raise ConnectionRefusedError("database at 127.0.0.1:1 refused the connection\nsecond line")
        await asyncio.sleep(startup_delay)
        yield
        (state / f"cleanup-{os.getpid()}").touch()

    async def pid(request: web.Request) -> web.Response:
        return web.json_response({"pid": os.getpid()})

    async def slow(request: web.Request) -> web.Response:
        (state / f"started-{os.getpid()}").touch()
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.json_response({"pid": os.getpid(), "slept": True})

    async def block(request: web.Request) -> web.Response:
        (state / f"blocked-{os.getpid()}").touch()
        time.sleep(float(request.query.get("s", "1")))  # noqa: ASYNC251 - a stuck event loop on purpose
        return web.json_response({"pid": os.getpid(), "blocked": True})

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"length": len(body)})

    app.cleanup_ctx.append(resources)
    app.router.add_get("/pid", pid)
    app.router.add_get("/slow", slow)
    app.router.add_get("/block", block)
    app.router.add_post("/echo", echo)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--shutdown-timeout", type=float, default=30.0)
    parser.add_argument("--worker-timeout", type=float, default=30.0)
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--fail-startup", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(level="info", json_format=False)
    try:
        serve(
            lambda: create_app(args.state, fail_startup=args.fail_startup, startup_delay=args.startup_delay),
            host="127.0.0.1",
            port=args.port,
            workers=args.workers,
            limits=ServerLimits(shutdown_timeout=args.shutdown_timeout, worker_timeout=args.worker_timeout),
            on_listening=lambda url: print(url, flush=True),
        )
    except IssuerError as exc:
        print(f"issuer: error: {exc.detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
