"""``issuer serve``: run the HTTP API."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from issuer.cli.database import ensure_schema
from issuer.cli.errors import fail
from issuer.settings import Settings

_LEVELS = ("debug", "info", "warning", "error")


def add_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the HTTP API",
        description="Run the HTTP API. Start-up checks the database schema and loads the active issuing CA's "
        "key; any failure is one line and a non-zero exit.",
        epilog="example: issuer serve --host 0.0.0.0 --port 8443 --tls-cert server.pem --tls-key server.key",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate chain")
    serve.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="accept (optional) TLS client certificates chained to these CAs, for renewal over mTLS "
        "(default with --tls-cert: the registry's roots)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"processes sharing the port (default: one per core, {os.cpu_count()} here, on Postgres; "
        "1 on the embedded SQLite default)",
    )
    serve.add_argument(
        "--max-in-flight",
        type=int,
        default=64,
        metavar="N",
        help="issuance requests each process works on at once; more are refused at once with 503 overloaded (64)",
    )
    serve.add_argument(
        "--header-timeout", type=float, default=10.0, metavar="S", help="seconds to send a request head (10)"
    )
    serve.add_argument("--body-timeout", type=float, default=30.0, metavar="S", help="seconds to send a body (30)")
    serve.add_argument(
        "--keepalive-timeout", type=float, default=15.0, metavar="S", help="idle keep-alive connections close (15)"
    )
    serve.add_argument(
        "--shutdown-timeout", type=float, default=30.0, metavar="S", help="grace for in-flight requests on SIGTERM (30)"
    )
    serve.add_argument(
        "--worker-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="with workers: one whose event loop has not reported for this long is killed and replaced (30)",
    )
    serve.add_argument("--log-format", choices=("json", "text"), default="json", help="log line format (json)")
    serve.add_argument("--log-level", choices=_LEVELS, default="info", help="debug, info, warning, error (info)")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.observability.multiprocess import metrics_directory

    if args.max_in_flight < 1:
        raise fail("--max-in-flight must be at least 1", code="usage", exit_status=2)
    if args.workers is None:
        # SQLite serialises writers: more processes only queue on its lock.
        args.workers = 1 if settings.is_sqlite else (os.cpu_count() or 1)
    # prometheus_client chooses its multi-process mode when first imported: the workers' shared
    # metrics directory is set up before anything below imports it.
    with metrics_directory(settings.state_dir, workers=args.workers):
        return _serve(args, settings)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from issuer.app import create_app
    from issuer.http.server import ServerLimits, serve, tls_context
    from issuer.logs import configure_logging

    if not 0 <= args.port <= 65535:
        raise fail(f"--port {args.port} is not a TCP port", code="usage", exit_status=2)
    if args.workers < 1:
        raise fail("--workers must be at least 1", code="usage", exit_status=2)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise fail("--tls-cert and --tls-key go together", code="usage", exit_status=2)
    try:
        limits = ServerLimits(
            header_timeout=args.header_timeout,
            keepalive_timeout=args.keepalive_timeout,
            body_timeout=args.body_timeout,
            shutdown_timeout=args.shutdown_timeout,
            worker_timeout=args.worker_timeout,
        )
    except ValueError as exc:
        raise fail(str(exc), code="usage", exit_status=2) from None
    configure_logging(level=args.log_level, json_format=args.log_format == "json")
    log = logging.getLogger("issuer")
    ensure_schema(settings)
    if not (settings.ca_dir / "issuing.pem").exists() and settings.embedded:
        from issuer.cli.ca.init import init_ca_files

        init_ca_files(settings, root_validity="3650d", issuing_validity="365d", organization=None, force=False)
        log.warning("embedded default: created a development CA in %s", settings.ca_dir)
    elif (settings.ca_dir / "issuing.pem").exists():
        # Once, before any worker starts: a CA made on disk joins an empty registry here, not N times at once.
        from issuer.cli.database import now, run, with_sessions
        from issuer.service.ca.register import register_file_ca

        run(with_sessions(settings, lambda s: register_file_ca(s, ca_dir=settings.ca_dir, now=now())))
    ssl_context = None
    if args.tls_cert:
        client_ca = args.tls_client_ca or _roots_file(settings)
        ssl_context = tls_context(args.tls_cert, args.tls_key, client_ca=client_ca)

    def make_app() -> web.Application:
        return create_app(settings, body_timeout=limits.body_timeout, max_in_flight=args.max_in_flight)

    serve(make_app, host=args.host, port=args.port, ssl_context=ssl_context, workers=args.workers, limits=limits)
    return 0


def _roots_file(settings: Settings) -> Path:
    """The registry's roots in a file under the state directory: whom TLS client certificates may chain to."""
    from issuer.cli.database import run, with_sessions
    from issuer.service.ca.registry import export_bundle

    pem = run(with_sessions(settings, export_bundle))
    path = settings.state_dir / "tls-client-ca.pem"
    path.write_bytes(pem)
    return path
