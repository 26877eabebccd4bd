"""The ``issuer`` command: run the service and operate it.

Every subcommand prints what happened and what to do next, exits 0 on success,
and on failure prints one line ``issuer: error: <reason>`` and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from ca.errors import CAError
from issuer import __version__
from issuer.durations import format_duration, parse_duration
from issuer.errors import IssuerError
from issuer.settings import Settings, load_settings

T = TypeVar("T")

EPILOG = """\
Configuration: --config FILE or ISSUER_CONFIG (issuer.toml); ISSUER_DATABASE_URL,
ISSUER_STATE_DIR, ISSUER_CA_PASSPHRASE / ISSUER_CA_PASSPHRASE_FILE override it.
With no configuration the embedded default is used: SQLite and a development CA
in the state directory, and one 'default' role for join tokens.

Try it out:
  issuer ca init                                   # create the CA
  issuer serve &                                   # listen on 127.0.0.1:8080
  issuer token create --role default --name web-1  # a one-time join token
  issuer-agent bootstrap --method token --token ijt_... --server http://127.0.0.1:8080 --out ./certs

Production: ISSUER_DATABASE_URL=postgresql+asyncpg://..., `issuer migrate`, then run
`issuer serve` replicas behind a load balancer.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="issuer",
        description="Machine identity for AWS: attest EC2, IAM and join-token machines "
        "and issue short-lived mutual-TLS client certificates from a private CA.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"issuer {__version__}")
    parser.add_argument("--config", metavar="FILE", help="issuer.toml (default: $ISSUER_CONFIG, else embedded default)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API", description="Run the HTTP API.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    serve.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    serve.add_argument("--log-format", choices=("json", "text"), default="json", help="log line format")
    serve.add_argument("--log-level", default="info", help="debug, info, warning (default info)")

    migrate = sub.add_parser(
        "migrate",
        help="upgrade the database schema",
        description="Upgrade the database schema to the newest revision (run before new replicas start).",
    )
    migrate.add_argument("--revision", default="head", help="target revision (default head)")

    ca = sub.add_parser("ca", help="the private CA").add_subparsers(dest="ca_command", metavar="ACTION", required=True)
    init = ca.add_parser(
        "init",
        help="create the root and issuing CA",
        description="Create a root CA (ECDSA P-384) and an issuing CA (ECDSA P-256) in <state_dir>/ca, "
        "keys encrypted with the CA passphrase.",
    )
    init.add_argument("--root-validity", default="3650d", help="root CA lifetime (default 3650d)")
    init.add_argument("--issuing-validity", default="365d", help="issuing CA lifetime (default 365d)")
    init.add_argument("--organization", help="O= in the CA subjects and leaves")
    init.add_argument("--force", action="store_true", help="replace an existing CA (every issued cert stops verifying)")
    ca.add_parser("show", help="show the CA certificates", description="Show the CA certificates.")

    token = sub.add_parser("token", help="one-time join tokens").add_subparsers(
        dest="token_command", metavar="ACTION", required=True
    )
    create = token.add_parser(
        "create",
        help="create a join token (printed once)",
        description="Create a one-time join token for a machine with no AWS identity. "
        "The token is printed once and stored only as a hash.",
    )
    create.add_argument("--role", required=True, help="role the token issues for (must allow method 'token')")
    create.add_argument("--name", required=True, help="the machine's name (goes into the certificate)")
    create.add_argument("--ttl", default="1h", help="how long the token is usable (default 1h)")
    create.add_argument("--json", action="store_true", help="print JSON")
    tlist = token.add_parser("list", help="list unused tokens", description="List join tokens (never their text).")
    tlist.add_argument("--all", action="store_true", help="include used tokens")

    certs = sub.add_parser("certs", help="issued certificates").add_subparsers(
        dest="certs_command", metavar="ACTION", required=True
    )
    clist = certs.add_parser(
        "list", help="list issued certificates", description="List issued certificates, newest first."
    )
    clist.add_argument("--limit", type=int, default=50)
    clist.add_argument("--status", choices=("active", "revoked", "superseded"))
    clist.add_argument("--principal", help="only this principal (instance id, ARN, token name)")
    cshow = certs.add_parser("show", help="show one certificate", description="Show one certificate by serial (hex).")
    cshow.add_argument("serial")
    cshow.add_argument("--pem", action="store_true", help="print the PEM only")

    inst = sub.add_parser("instances", help="EC2 instance bindings (trust on first use)").add_subparsers(
        dest="instances_command", metavar="ACTION", required=True
    )
    ilist = inst.add_parser("list", help="list bound instances", description="List EC2 instance bindings.")
    ilist.add_argument("--limit", type=int, default=100)
    ireset = inst.add_parser(
        "reset",
        help="forget an instance's binding",
        description="Forget an instance's binding so its next attestation is treated as the first.",
    )
    ireset.add_argument("instance_id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        handler = _HANDLERS[args.command]
        return handler(args, settings)
    except (IssuerError, CAError) as exc:
        print(f"issuer: error: {exc.detail}", file=sys.stderr)
        return 2 if getattr(exc, "code", "") == "config_invalid" else 1
    except KeyboardInterrupt:
        return 130


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(factory())  # type: ignore[arg-type]


def _now() -> datetime:
    return datetime.now(UTC)


async def _with_sessions(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from issuer.store.engine import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        return await work(make_session_factory(engine))
    finally:
        await engine.dispose()


def _ensure_schema(settings: Settings) -> None:
    """SQLite (the embedded default) migrates itself; Postgres is migrated by `issuer migrate`."""
    from issuer.ca_setup import ensure_state_dir
    from issuer.store.migrate import upgrade

    if settings.is_sqlite:
        ensure_state_dir(settings)
        upgrade(settings.database_url)


# -- serve -----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from issuer.app import create_app
    from issuer.logs import configure_logging

    configure_logging(level=args.log_level, json_format=args.log_format == "json")
    log = logging.getLogger("issuer")
    _ensure_schema(settings)
    if not (settings.ca_dir / "issuing.pem").exists():
        if not settings.embedded:
            print(f"issuer: error: no CA in {settings.ca_dir}; run `issuer ca init` first", file=sys.stderr)
            return 1
        _init_ca(settings, root_validity="3650d", issuing_validity="365d", organization=None, force=False)
        log.warning("embedded default: created a development CA in %s", settings.ca_dir)
    ssl_context = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("issuer: error: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    scheme = "https" if ssl_context else "http"
    log.info("listening on %s://%s:%d (state %s)", scheme, args.host, args.port, settings.state_dir)
    web.run_app(
        create_app(settings),
        host=args.host,
        port=args.port,
        ssl_context=ssl_context,
        print=None,
        access_log=None,
        handle_signals=True,
    )
    return 0


# -- migrate ---------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.ca_setup import ensure_state_dir
    from issuer.store.migrate import upgrade

    if settings.is_sqlite:
        ensure_state_dir(settings)
    target = _redact(settings.database_url)
    print(f"Migrating {target} to {args.revision} ...", flush=True)
    upgrade(settings.database_url, args.revision)
    print(f"Schema is at {args.revision}.")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# -- ca --------------------------------------------------------------------------------


def _init_ca(
    settings: Settings, *, root_validity: str, issuing_validity: str, organization: str | None, force: bool
) -> None:
    from issuer.ca_setup import initialise_ca

    try:
        root_td, issuing_td = parse_duration(root_validity), parse_duration(issuing_validity)
    except ValueError as exc:
        raise IssuerError(str(exc), code="config_invalid") from None
    files, generated = initialise_ca(
        settings,
        now=_now(),
        root_validity=root_td,
        issuing_validity=issuing_td,
        organization=organization,
        force=force,
    )
    print(f"Created a root CA and an issuing CA in {settings.ca_dir}")
    print(f"  root:    {files.root_cert_path} (valid {format_duration(root_td)})")
    print(f"  issuing: {files.issuing_cert_path} (valid {format_duration(issuing_td)})")
    if generated:
        print(f"  passphrase: generated into {generated} (mode 0600); in production use ISSUER_CA_PASSPHRASE_FILE")


def cmd_ca(args: argparse.Namespace, settings: Settings) -> int:
    if args.ca_command == "init":
        _init_ca(
            settings,
            root_validity=args.root_validity,
            issuing_validity=args.issuing_validity,
            organization=args.organization,
            force=args.force,
        )
        print("Next: `issuer serve`, then publish the trust bundle (GET /v1/bundle) to your truststore.")
        return 0
    from ca.files import describe_ca

    info = describe_ca(settings.ca_dir)
    entries = [("root", r) for r in info.roots] + [("issuing", info.issuing)]
    for label, cert in entries:
        print(f"{label}:")
        print(f"  subject:  {cert.subject}")
        print(f"  serial:   {cert.serial_hex}")
        print(f"  key:      {cert.key_type}")
        print(f"  valid:    {cert.not_before.isoformat()} .. {cert.not_after.isoformat()}")
        print(f"  sha256:   {cert.sha256_fingerprint}")
    print(f"files:      {info.directory} (root key {'present' if info.root_key_present else 'absent'})")
    return 0


# -- tokens, certificates, instances ---------------------------------------------------


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from issuer import admin

    _ensure_schema(settings)
    if args.token_command == "create":
        try:
            ttl = parse_duration(args.ttl)
        except ValueError as exc:
            raise IssuerError(f"--ttl: {exc}", code="config_invalid") from None
        created = _run(
            lambda: _with_sessions(
                settings,
                lambda s: admin.create_token(s, settings, role=args.role, name=args.name, ttl=ttl, now=_now()),
            )
        )
        if args.json:
            print(
                json.dumps(
                    {
                        "token": created.token,
                        "name": created.name,
                        "role": created.role,
                        "expires_at": created.expires_at.isoformat(),
                    }
                )
            )
        else:
            print(created.token)
            print(
                f"One-time join token for {created.name!r} (role {created.role}), valid until "
                f"{created.expires_at.isoformat()}. It is shown only this once.",
                file=sys.stderr,
            )
        return 0
    tokens = _run(lambda: _with_sessions(settings, lambda s: admin.list_tokens(s, include_used=args.all)))
    if not tokens:
        print("No join tokens." if args.all else "No unused join tokens.")
        return 0
    print(f"{'NAME':24} {'ROLE':16} {'CREATED':25} {'EXPIRES':25} USED")
    for t in tokens:
        used = t.used_at.isoformat(timespec="seconds") if t.used_at else "-"
        print(
            f"{t.name:24} {t.role:16} {t.created_at.isoformat(timespec='seconds'):25} "
            f"{t.expires_at.isoformat(timespec='seconds'):25} {used}"
        )
    return 0


def cmd_certs(args: argparse.Namespace, settings: Settings) -> int:
    from issuer import admin

    _ensure_schema(settings)
    if args.certs_command == "list":
        rows = _run(
            lambda: _with_sessions(
                settings,
                lambda s: admin.list_certificates(s, limit=args.limit, status=args.status, principal=args.principal),
            )
        )
        if not rows:
            print("No certificates issued yet.")
            return 0
        print(f"{'SERIAL':42} {'STATUS':10} {'METHOD':8} {'ROLE':14} {'NOT AFTER':25} PRINCIPAL")
        for cert, ident in rows:
            print(
                f"{cert.serial:42} {cert.status:10} {cert.method:8} {cert.role:14} "
                f"{cert.not_after.isoformat(timespec='seconds'):25} {ident.principal}"
            )
        return 0
    cert, ident = _run(lambda: _with_sessions(settings, lambda s: admin.show_certificate(s, args.serial)))
    if args.pem:
        print(cert.certificate_pem, end="")
        return 0
    print(f"serial:      {cert.serial}")
    print(
        f"status:      {cert.status}" + (f" ({cert.revocation_reason} at {cert.revoked_at})" if cert.revoked_at else "")
    )
    print(f"subject:     {cert.subject}")
    print(f"SANs:        {', '.join(cert.sans)}")
    print(f"key:         {cert.key_type} (SPKI sha256 {cert.public_key_sha256})")
    print(f"valid:       {cert.not_before.isoformat()} .. {cert.not_after.isoformat()}")
    print(f"method/role: {cert.method} / {cert.role}")
    print(f"principal:   {ident.principal}" + (f" (account {ident.account_id})" if ident.account_id else ""))
    print(f"sha256:      {cert.fingerprint_sha256}")
    print(f"issued:      {cert.created_at.isoformat()} (request {cert.request_id})")
    return 0


def cmd_instances(args: argparse.Namespace, settings: Settings) -> int:
    from issuer import admin

    _ensure_schema(settings)
    if args.instances_command == "list":
        rows = _run(lambda: _with_sessions(settings, lambda s: admin.list_instances(s, limit=args.limit)))
        if not rows:
            print("No EC2 instances bound yet.")
            return 0
        print(f"{'INSTANCE':22} {'ACCOUNT':13} {'REGION':15} {'ROLE':14} {'PENDING TIME':26} BOUND")
        for b in rows:
            print(
                f"{b.instance_id:22} {b.account_id:13} {b.region:15} {b.role:14} "
                f"{b.pending_time.isoformat(timespec='seconds'):26} {b.created_at.isoformat(timespec='seconds')}"
            )
        return 0
    removed = _run(lambda: _with_sessions(settings, lambda s: admin.reset_instance(s, instance_id=args.instance_id)))
    if not removed:
        print(f"issuer: error: no binding for instance {args.instance_id}", file=sys.stderr)
        return 1
    print(f"Forgot the binding of {args.instance_id}; its next attestation is treated as the first.")
    return 0


_HANDLERS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "ca": cmd_ca,
    "token": cmd_token,
    "certs": cmd_certs,
    "instances": cmd_instances,
}


if __name__ == "__main__":
    sys.exit(main())
