"""A tiny app served by ``issuer.http.server.serve``, for the process-level server tests.

Run as ``python -m tests.support.slow_app --port 0 --workers 2 --state DIR``: it prints
the listening URL on stdout (``on_listening``) and logs as text on stderr; a failure to
serve is one line ``issuer: error: ...`` and exit status 1, as the CLI does.

Routes: ``GET /pid`` (the worker's pid), ``GET /slow?s=`` (marks ``DIR/started-<pid>``,
sleeps ``s`` without blocking, answers with the pid), ``GET /block?s=`` (streams
``started``, then blocks the worker's event loop for ``s``, so the next connection goes
to another worker), ``POST /echo`` (body length). The cleanup context writes
``DIR/cleanup-<pid>``; ``--fail-startup`` makes start-up raise.
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
from issuer.http.server import ServerLimits, serve, tls_context
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


def create_app(state: Path, *, fail_startup: bool = False) -> web.Application:
    app = web.Application(middlewares=[_problems])

    async def resources(app: web.Application) -> AsyncIterator[None]:
        if fail_startup:
            raise ConnectionRefusedError("database at 127.0.0.1:1 refused the connection\nsecond line")
        yield
        (state / f"cleanup-{os.getpid()}").touch()

    async def pid(request: web.Request) -> web.Response:
        return web.json_response({"pid": os.getpid()})

    async def slow(request: web.Request) -> web.Response:
        (state / f"started-{os.getpid()}").touch()
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.json_response({"pid": os.getpid(), "slept": True})

    async def block(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Worker-Pid": str(os.getpid())})
        await response.prepare(request)
        await response.write(b"started\n")
        time.sleep(float(request.query.get("s", "1")))  # noqa: ASYNC251 - blocking the loop is the point
        await response.write(b"done\n")
        await response.write_eof()
        return response

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
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--keepalive-timeout", type=float, default=15.0)
    parser.add_argument("--shutdown-timeout", type=float, default=30.0)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--fail-startup", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(level="info", json_format=False)
    limits = ServerLimits(
        header_timeout=args.header_timeout,
        keepalive_timeout=args.keepalive_timeout,
        shutdown_timeout=args.shutdown_timeout,
    )
    try:
        ssl_context = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        serve(
            lambda: create_app(args.state, fail_startup=args.fail_startup),
            host=args.host,
            port=args.port,
            ssl_context=ssl_context,
            workers=args.workers,
            limits=limits,
            on_listening=lambda url: print(url, flush=True),
        )
    except IssuerError as exc:
        print(f"issuer: error: {exc.detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
