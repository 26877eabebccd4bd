"""What each ``issuer-agent`` command does, wired to the real clock, HTTP, IMDS, botocore and signals.

:func:`check_options` holds every check that needs no I/O, so that a bad command
line fails (exit 64) before any file or request, and so that tests can check
the deployment files' command lines against the real parser.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from clients.agent.bootstrap import Progress, TokenProof, bootstrap
from clients.agent.daemon import Daemon, DaemonSettings, when
from clients.agent.denial import record_denial
from clients.agent.files import NONCE_FILE, WrittenFiles, prepare_out_dir
from clients.agent.hooks import ChangeEvent, CommandHook, EventKind, parse_command
from clients.agent.http import ClientCertificate, IssuerClient, check_server_url
from clients.agent.installed import CurrentCredentials, read_current
from clients.agent.issued import IssuedCertificate
from clients.agent.metrics import MetricsFile
from clients.agent.proofs import inline_token, proof_source, read_token_file, server_id_of
from clients.agent.remembered import METHOD_OPTIONS, Remembered, resolve
from clients.agent.renewal import renew
from clients.agent.schedule import renewal_due
from clients.agent.stop import StopSwitch, SystemClock
from clients.errors import ConfigError, ServerProblem, UsageError
from clients.keys import hostname_hint
from clients.wire import CLOCK_REFUSALS, DEFAULT_KEY_TYPE, RENEWAL_REFUSALS

__all__ = ["Handler", "check_options", "run_bootstrap", "run_daemon", "run_renew", "settle"]

Handler = Callable[..., int]

# Methods whose proof is made for the issuer's server id (--server-id or ISSUER_SERVER_ID).
_NEED_SERVER_ID = ("aws-iam", "aws-ec2-role", "x509pop")


def check_options(args: argparse.Namespace, env: Mapping[str, str], *, explicit: bool = True) -> None:
    """Every check of the parsed options that needs no I/O; raises :class:`UsageError`.

    ``explicit``: ``args`` is the command line as given; else it is completed from ``issuer.json``
    and the defaults (see :func:`settle`), where an option of another method cannot come from the
    person, so it is not looked for."""
    if not args.command:
        return
    for name in ("timeout", "on_change_timeout", "imds_max_wait"):
        value = getattr(args, name, None)
        if value is not None and not value > 0:  # also NaN
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be a positive number of seconds", code="timeout_invalid")
    if getattr(args, "on_change", None):  # '' forgets a remembered command
        parse_command(args.on_change)
    if getattr(args, "server", None):
        check_server_url(args.server, allow_insecure_http=args.insecure_http)
        if getattr(args, "auth", None) == "mtls" and not args.server.startswith("https://"):
            raise UsageError("--auth mtls needs an https:// issuer", code="mtls_needs_https")
    method = getattr(args, "method", None)
    if method is None:
        return
    for other, names in METHOD_OPTIONS.items():
        for name in names:
            shared = name in METHOD_OPTIONS.get(method, ())
            if explicit and other != method and not shared and getattr(args, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} is for --method {other}, not {method}", code="option_not_for_method")
    # On the command line as given, these may yet come from issuer.json: checked once completed.
    if method in _NEED_SERVER_ID and not explicit and not server_id_of(args, env):
        raise UsageError(f"--method {method} needs --server-id (or ISSUER_SERVER_ID)", code="server_id_missing")
    if method == "x509pop" and not explicit and not (args.external_cert and args.external_key):
        raise UsageError(
            "--method x509pop needs --external-cert and --external-key", code="external_credentials_missing"
        )
    if method == "token" and args.command == "bootstrap" and not (args.token_file or inline_token(args, env)):
        raise UsageError("no join token: give --token, --token-file or set ISSUER_JOIN_TOKEN", code="token_missing")
    if method in ("aws-iam", "aws-ec2-role") and args.sts_endpoint_host and args.sts_region:
        # Imported here: botocore takes half a second to import and only aws-iam needs it.
        from clients.sts_proof import signing_region

        host = args.sts_endpoint_host.strip().lower()
        if signing_region(host, region=args.sts_region) != args.sts_region:
            raise UsageError(
                f"--sts-endpoint-host {host} is not in --sts-region {args.sts_region}", code="sts_region_mismatch"
            )


def _client(args: argparse.Namespace, server: str, certificate: ClientCertificate | None = None) -> IssuerClient:
    return IssuerClient(
        server,
        ca_bundle=args.ca_bundle,
        timeout=args.timeout,
        allow_insecure_http=args.insecure_http,
        client_certificate=certificate,
    )


def _printer(stream: TextIO, *, quiet: bool = False) -> Progress:
    def progress(message: str) -> None:
        if not quiet:
            print(message, file=stream, flush=True)

    return progress


def settle(
    args: argparse.Namespace, env: Mapping[str, str], *, tolerate_broken: bool = False, err: TextIO | None = None
) -> tuple[argparse.Namespace, Remembered, CurrentCredentials | None]:
    """The options to run with (the command line over what ``issuer.json`` remembers), the settings
    to remember after an issuance, and what is installed now; checked like the command line.

    ``tolerate_broken``: for ``bootstrap``, which is how broken files are replaced: files in
    ``--out`` that cannot be read are reported on ``err`` and ignored rather than fatal (78).
    """
    try:
        current = read_current(args.out)
    except ConfigError as exc:
        if not tolerate_broken:
            raise
        if err is not None:
            print(f"warning: ignoring what --out holds: {exc.one_line()}", file=err)
        current = None
    state = current.state if current else None
    merged, remembered = resolve(args, state)
    if getattr(merged, "server_id", "") is None:  # the flag, else ISSUER_SERVER_ID, else what the issuer said
        merged.server_id = env.get("ISSUER_SERVER_ID") or (state.server_id if state else None)
    check_options(merged, env, explicit=False)
    return merged, remembered, current


@contextmanager
def _noting_denial(out_dir: Path, current: CurrentCredentials | None, *, err: TextIO) -> Iterator[None]:
    """Note a 403 identity_denied in ``out_dir`` for ``status`` (see :mod:`clients.agent.denial`)."""
    try:
        yield
    except ServerProblem as exc:
        if exc.denied:
            record_denial(out_dir, exc, serial=current.serial if current else None, now=datetime.now(timezone.utc))
            print(
                "hint: the issuer denies this machine's identity; an operator must lift the denial "
                "(`issuer deny remove`) before it can get a certificate again",
                file=err,
            )
        raise


def run_bootstrap(args: argparse.Namespace, *, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    progress = _printer(err)
    args, remembered, current = settle(args, env, tolerate_broken=True, err=err)
    client = _client(args, args.server)
    if client.warning:
        print(client.warning, file=err)
    out_dir = prepare_out_dir(args.out)
    proof = (
        TokenProof(token=read_token_file(args.token_file) if args.token_file else inline_token(args, env))
        if args.method == "token"
        else proof_source(args, env, out_dir=out_dir, progress=progress)()
    )
    with _noting_denial(out_dir, current, err=err):
        result = bootstrap(
            proof,
            transport=client,
            out_dir=out_dir,
            role=args.role,
            key_type=args.key_type or DEFAULT_KEY_TYPE,
            common_name=args.common_name or hostname_hint(),
            server=client.server,
            server_id=server_id_of(args, env),
            settings=remembered,
            progress=progress,
        )
    _report(result.files, result.issued, out=out)
    if args.method == "aws-ec2":
        print(f"instance nonce in {out_dir / NONCE_FILE} (keep it: it binds this instance)", file=out)
    _hook(args, "bootstrap", result.issued, out_dir, err=err)
    return 0


def run_renew(args: argparse.Namespace, *, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    progress = _printer(err, quiet=args.quiet)
    args, remembered, current = settle(args, env)
    if current is None:
        raise ConfigError(f"no certificate in {args.out}; run `issuer-agent bootstrap` first", code="not_bootstrapped")
    prepare_out_dir(args.out)  # the same checks as at bootstrap: a directory others cannot write
    state = current.state
    server = args.server
    if not server:
        raise UsageError(f"--server is needed: {args.out}/issuer.json names no issuer", code="server_missing")
    now = datetime.now(timezone.utc)
    # Seeded by the serial: every run of a timer agrees on one time per certificate, and a fleet spreads out.
    jitter = random.Random(current.serial).random()  # noqa: S311 - scheduling, not secrecy
    due = renewal_due(
        not_before=current.not_before,
        not_after=current.not_after,
        issuer_renew_after=current.renew_after,
        jitter=jitter,
    )
    if now < due and not args.force:
        if not args.quiet:
            print(
                f"not due: certificate {current.serial} is due for renewal at {when(due)} "
                f"(valid until {when(current.not_after)}); --force renews now",
                file=out,
            )
        return 0
    client = _client(args, server, current.client_certificate if args.auth == "mtls" else None)
    if client.warning:
        print(client.warning, file=err)
    try:
        with _noting_denial(args.out, current, err=err):
            result = renew(
                current,
                transport=client,
                out_dir=args.out.resolve(),
                auth=args.auth,
                server=client.server,
                server_id=server_id_of(args, env) or (state.server_id if state else None),
                now=lambda: datetime.now(timezone.utc),
                key_type=args.key_type,
                common_name=args.common_name or hostname_hint(),
                settings=remembered,
                progress=progress,
            )
    except ServerProblem as exc:
        if exc.refused and exc.code in CLOCK_REFUSALS:
            print(
                "hint: the issuer found the renewal token outside its time window, so this machine's clock "
                "and the issuer's differ by more than a minute; fix the clock (NTP, `timedatectl`) and renew "
                "again — the certificate itself does not need a new bootstrap",
                file=err,
            )
        elif exc.refused and exc.code in RENEWAL_REFUSALS:
            print(
                "hint: the issuer will not renew this certificate; run `issuer-agent bootstrap` again "
                "(`issuer-agent run` does that by itself)",
                file=err,
            )
        raise
    if not args.quiet:
        print(f"renewed {result.renewed_from} -> {result.issued.serial}", file=out)
        _report(result.files, result.issued, out=out)
    _hook(args, "renew", result.issued, args.out.resolve(), err=err)
    return 0


def run_daemon(args: argparse.Namespace, *, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    args, remembered, _ = settle(args, env)
    missing = [flag for flag, value in (("--method", args.method), ("--server", args.server)) if not value]
    if missing:
        raise UsageError(
            f"{' and '.join(missing)} needed: {args.out} holds no issuer.json from a bootstrap to take them from",
            code="settings_missing",
        )
    out_dir = prepare_out_dir(args.out)
    probe = _client(args, args.server)  # fails now (64/78) on a bad URL or --ca-bundle, not at the first renewal
    if probe.warning:
        print(probe.warning, file=err)
    switch = StopSwitch()
    hook = (
        CommandHook(parse_command(args.on_change), timeout=args.on_change_timeout)
        if args.on_change is not None
        else None
    )
    log = _printer(err)
    metrics = MetricsFile(args.metrics_file, out_dir=out_dir, log=log) if args.metrics_file else None
    daemon = Daemon(
        DaemonSettings(
            out_dir=out_dir,
            server=probe.server,
            method=args.method,
            server_id=server_id_of(args, env),
            auth=args.auth,
            role=args.role,
            key_type=args.key_type,
            common_name=args.common_name or hostname_hint(),
            once=args.once,
            remembered=remembered,
        ),
        clock=SystemClock(),
        waiter=switch,
        rng=random.SystemRandom().random,
        connect=lambda certificate: _client(args, args.server, certificate),
        # The daemon's log hears the metadata service's retries (at boot it may take a while), not the steps.
        proofs=proof_source(args, env, out_dir=out_dir, progress=_printer(err, quiet=True), imds_log=log),
        hook=hook,
        log=log,
        observer=metrics,
    )
    with switch.signals_installed():
        return daemon.run()


def _hook(args: argparse.Namespace, kind: EventKind, issued: IssuedCertificate, out_dir: Path, *, err: TextIO) -> None:
    if args.on_change is None:
        return
    hook = CommandHook(parse_command(args.on_change), timeout=args.on_change_timeout)
    problem = hook(ChangeEvent(kind, issued.serial, issued.not_after, out_dir))
    if problem is not None:
        print(f"warning: on-change command failed: {problem} (the new files are installed)", file=err)


def _report(files: WrittenFiles, issued: IssuedCertificate, *, out: TextIO) -> None:
    print(f"wrote {files.key} (0600)", file=out)
    for path in (files.cert, files.chain, files.bundle, files.fullchain):
        print(f"wrote {path}", file=out)
    identity = issued.identity
    print(f"serial {issued.serial}", file=out)
    uri = f" ({identity.uri_san})" if identity.uri_san else ""
    print(f"identity {identity.method} {identity.principal}{uri}", file=out)
    print(f"not after {when(issued.not_after)}", file=out)
    print(f"renew after {when(issued.renew_after)}", file=out)
