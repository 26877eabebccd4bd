"""The ``issuer-agent`` command line: ``bootstrap``, ``renew``, ``run`` (the daemon) and ``status``.

This module is the parser and :func:`main`; the commands themselves are in
:mod:`clients.agent.commands` and :mod:`clients.agent.status`. Progress and the daemon's log go to
stderr, results to stdout; a failure is one line on stderr (``error: ... (code ...)``) and an exit
status from ``sysexits.h`` (see :mod:`clients.errors`): 64, 77 and 78 are never worth retrying, 75 is.

Options that are not given default to what ``issuer.json`` in ``--out`` remembers (see
:mod:`clients.agent.remembered`), which is why most of them default to None here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from clients.agent.commands import Handler, check_options, run_bootstrap, run_daemon, run_renew
from clients.agent.status import STATUS_EPILOG, run_status
from clients.errors import EX_USAGE, AgentError
from clients.imds import DEFAULT_ENDPOINT
from clients.wire import AUTH_MODES, DEFAULT_KEY_TYPE, KEY_TYPES, METHODS

__all__ = ["build_parser", "main", "parse"]

_EXIT_USAGE = "  64  bad usage: an option is missing, unknown or contradictory (do not retry)"
_EXIT_DENIED = "  77  the issuer denies this machine's identity (code identity_denied; do not retry)"
_EXIT_TEMPFAIL = """\
  75  temporary: the issuer is unreachable or busy (429/502/503/504), or the instance metadata
      service kept failing (503, timeouts) for --imds-max-wait; retry later"""
_EXIT_CONFIG = """\
  78  configuration: --ca-bundle, --token-file, --external-cert/--external-key or --out cannot be
      used, the files in --out are broken, or the issuer's TLS certificate does not verify against
      the trust given (do not retry)"""

_BOOTSTRAP_EPILOG = f"""\
examples:
  # on-prem machine, with a one-time token from `issuer token create --role onprem ...`
  ISSUER_JOIN_TOKEN=... issuer-agent bootstrap --method token \\
      --server https://issuer.example.org --ca-bundle /etc/issuer/ca.pem --out /etc/issuer-agent

  # EC2 instance: the AWS-signed identity document via IMDSv2 is the proof
  issuer-agent bootstrap --method aws-ec2 --role web-fleet \\
      --server https://issuer.example.org --out /etc/issuer-agent

  # EC2 instance, stronger: an STS request signed with the instance identity role (no document)
  issuer-agent bootstrap --method aws-ec2-role --role web-fleet --server-id issuer.example.org \\
      --server https://issuer.example.org --out /etc/issuer-agent

  # ECS task, Lambda, IAM Roles Anywhere, EC2 instance profile: a signed STS request is the proof
  issuer-agent bootstrap --method aws-iam --role ecs-tasks --server-id issuer.example.org \\
      --server https://issuer.example.org --out /run/issuer-agent

  # on-prem machine with a certificate from the enterprise PKI (or a device certificate)
  issuer-agent bootstrap --method x509pop --role corp-servers --server-id issuer.example.org \\
      --external-cert /etc/pki/host.pem --external-key /etc/pki/host.key \\
      --server https://issuer.example.org --out /etc/issuer-agent

writes to --out (created 0700): key.pem (0600), cert.pem, chain.pem, bundle.pem, fullchain.pem
(leaf + chain), issuer.json (issuer, server id, method, role, serial, not after, renew after, and
the options given here: --ca-bundle, --auth, --on-change, --token-file, --imds-endpoint, ...; never
a token); for aws-ec2 also instance-nonce (0600, keep it: the issuer binds the instance to it).
Afterwards `renew --out DIR` and `run --out DIR` need nothing else. The key is made here and never
leaves the machine.

exit status:
  0   issued
  1   refused or failed (the issuer said no, or its answer was unusable)
{_EXIT_USAGE}
{_EXIT_TEMPFAIL}
{_EXIT_DENIED}
{_EXIT_CONFIG}
"""

_RENEW_EPILOG = f"""\
examples:
  # from a systemd timer or cron every 15 minutes: renews only when due, prints nothing otherwise
  issuer-agent renew --out /etc/issuer-agent --quiet --on-change "systemctl reload nginx"

  # present the current certificate over mTLS instead of a proof-of-possession token
  issuer-agent renew --out /etc/issuer-agent --auth mtls --ca-bundle /etc/issuer/ca.pem

Due at the issuer's renew_after (in issuer.json; else 2/3 of the lifetime), brought forward by a
jitter of up to 10 % of the lifetime that is fixed per certificate, so every run agrees on the time.
A renewal always uses a NEW key (same type as the current one unless --key-type). The files are
switched all at once: readers never see a key that does not match the certificate.
Every option defaults to what issuer.json remembers from the bootstrap (--server, --server-id,
--ca-bundle, --auth, --on-change, ...); an option given here is remembered after a renewal.

exit status:
  0   renewed, or not due yet (the time it is due is printed)
  1   refused (revoked, superseded, expired, unknown...: bootstrap again, or let `run` do it) or failed
{_EXIT_USAGE}
  75  temporary: the issuer is unreachable or busy (429/502/503/504); retry later
{_EXIT_DENIED}
{_EXIT_CONFIG}
      (also: no certificate in --out yet: bootstrap first)
"""

_RUN_EPILOG = f"""\
examples:
  # ECS sidecar: keep /certs/live fresh for the app container that shares the volume
  issuer-agent run --method aws-iam --role ecs-tasks --server-id issuer.example.org \\
      --server https://issuer.example.org --out /certs/live

  # on-prem daemon: re-proves itself with the enterprise certificate whenever renewal is refused
  issuer-agent run --method x509pop --server-id issuer.example.org --external-cert /etc/pki/host.pem \\
      --external-key /etc/pki/host.key --server https://issuer.example.org --out /etc/issuer-agent

  # systemd service on an EC2 instance, reloading nginx after every change
  issuer-agent run --method aws-ec2 --server https://issuer.example.org \\
      --out /etc/issuer-agent --on-change "systemctl reload nginx"

  # after `issuer-agent bootstrap`: everything else comes from /etc/issuer-agent/issuer.json
  issuer-agent run --out /etc/issuer-agent --metrics-file /var/lib/node_exporter/issuer-agent.prom

Bootstraps when --out has no certificate, then sleeps until renewal is due (jittered) and renews
with a new key. Transient failures are retried with exponential backoff and full jitter (at most
5 minutes apart, honouring Retry-After, and always once more before the certificate expires).
When the issuer refuses renewal (revoked, superseded, ...) or the certificate has expired, the
machine proves who it is again with --method (for token: a new token in --token-file or
ISSUER_JOIN_TOKEN; a spent token is not sent twice). After every change --on-change runs (split
like a shell would, but without one; its environment has ISSUER_AGENT_EVENT, ISSUER_AGENT_SERIAL,
ISSUER_AGENT_NOT_AFTER, ISSUER_AGENT_OUT); its failure is logged, not fatal. One log line per event
on stderr. SIGTERM/SIGINT: finish the exchange under way (at most --timeout), then exit 0; a second
signal exits at once. Files are never left half-written. Every option defaults to what issuer.json
remembers; --method and --server are needed only while --out holds nothing bootstrapped.
--metrics-file writes node_exporter textfile metrics after every event (atomically): certificate
not-after and renewal due time, last renewal attempt and success times, consecutive failures.

exit status:
  0   stopped by SIGTERM/SIGINT; with --once: done (bootstrapped, renewed, re-attested, or not due)
  1   no certificate yet and the issuer refused (with --once: refused or failed)
{_EXIT_USAGE}
  75  with --once only: temporary failure, retry later (without --once the daemon retries itself,
      also through an instance metadata service that is not answering yet)
{_EXIT_DENIED}
      (the daemon stops rather than re-attest)
{_EXIT_CONFIG}
Once it has a certificate the daemon only exits when told to, on a usage error, or when the issuer
denies its identity: systemd: Restart=on-failure, RestartPreventExitStatus=64 77 78.
"""


COMMANDS: dict[str, Handler] = {
    "bootstrap": run_bootstrap,
    "renew": run_renew,
    "run": run_daemon,
    "status": run_status,
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 64 (EX_USAGE) rather than 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _connection(parser: argparse.ArgumentParser, *, server_required: bool, timeout: float | None = None) -> None:
    group = parser.add_argument_group("issuer")
    group.add_argument(
        "--server",
        required=server_required,
        metavar="URL",
        help="the issuer's base URL (https://...)" + ("" if server_required else "; default: from issuer.json"),
    )
    group.add_argument("--out", required=True, type=Path, metavar="DIR", help="the directory of the files")
    group.add_argument(
        "--server-id",
        metavar="ID",
        help="the issuer's server id (or ISSUER_SERVER_ID): signed into aws-iam, aws-ec2-role and x509pop proofs, "
        "and the "
        "audience of renewal tokens (default for those: the one issuer.json records, from the issuer's own answer)",
    )
    group.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="PEM",
        help="CA certificates to verify the issuer (default: remembered, else the system's)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=timeout,
        metavar="S",
        help=f"seconds to wait for the issuer (default {timeout or 30:g})",
    )
    group.add_argument(
        "--insecure-http",
        action="store_true",
        default=None,
        help="allow plain http to a non-loopback issuer (labs only)",
    )


def _key(parser: argparse.ArgumentParser, *, default: str | None, shown: str) -> None:
    group = parser.add_argument_group("key")
    group.add_argument("--key-type", choices=KEY_TYPES, default=default, help=f"default: {shown}")
    group.add_argument("--common-name", metavar="CN", help="subject hint in the CSR (default: the hostname)")


def _attestation(parser: argparse.ArgumentParser, *, required: bool) -> None:
    common = parser.add_argument_group("attestation")
    common.add_argument(
        "--method",
        required=required,
        choices=METHODS,
        help="how this machine proves who it is" + ("" if required else " (default: from issuer.json)"),
    )
    common.add_argument("--role", help="issuer role to ask for (optional when exactly one role matches)")
    token = parser.add_argument_group("--method token", "the join token: --token, --token-file or ISSUER_JOIN_TOKEN")
    source = token.add_mutually_exclusive_group()
    source.add_argument("--token", help="the join token (visible in `ps`; prefer the file or the variable)")
    source.add_argument("--token-file", type=Path, metavar="FILE", help="read the join token from FILE")
    ec2 = parser.add_argument_group("--method aws-ec2 and aws-ec2-role")
    ec2.add_argument(
        "--imds-endpoint",
        metavar="URL",
        help=f"instance metadata service (default {DEFAULT_ENDPOINT}, or AWS_EC2_METADATA_SERVICE_ENDPOINT; "
        "IPv6: http://[fd00:ec2::254])",
    )
    ec2.add_argument(
        "--imds-max-wait",
        type=float,
        metavar="S",
        help="retry an instance metadata service that answers 5xx or not at all for up to S seconds, "
        "then exit 75 (default 120)",
    )
    iam = parser.add_argument_group(
        "--method aws-iam (--sts-* also aws-ec2-role)", "needs --server-id (or ISSUER_SERVER_ID)"
    )
    iam.add_argument("--sts-region", metavar="REGION", help="STS region (default: the AWS config's, else us-east-1)")
    iam.add_argument(
        "--sts-endpoint-host", metavar="HOST", help="another STS host the issuer allows, e.g. sts.amazonaws.com"
    )
    iam.add_argument("--profile", help="AWS profile for credentials (default: botocore's chain)")
    pop = parser.add_argument_group(
        "--method x509pop", "a certificate another CA issued to this machine; needs --server-id (or ISSUER_SERVER_ID)"
    )
    pop.add_argument("--external-cert", type=Path, metavar="FILE", help="its certificate (PEM), then any intermediates")
    pop.add_argument(
        "--external-key", type=Path, metavar="FILE", help="its private key (PEM, unencrypted); it only signs the proof"
    )


def _renewal(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("renewal")
    group.add_argument(
        "--auth",
        choices=AUTH_MODES,
        help="how the current certificate vouches for the new key: a proof-of-possession token signed by the "
        "current key (default), or the certificate itself as the TLS client certificate (https only)",
    )
    group.add_argument(
        "--on-change",
        metavar="CMD",
        help="command to run after the files changed (no shell); '' forgets a remembered one",
    )
    group.add_argument("--on-change-timeout", type=float, metavar="S", help="kill CMD after S seconds (default 30)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="issuer-agent",
        description="Get and keep a short-lived mTLS client certificate for this machine from the issuer.",
        epilog="run `issuer-agent COMMAND --help` for options, examples and exit statuses",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    boot = commands.add_parser(
        "bootstrap",
        help="prove who this machine is and get its first certificate",
        description="Generate a key, prove this machine's identity (join token, EC2 identity document,\n"
        "IAM-signed STS request or a certificate from another CA) and install the certificate the issuer returns.",
        epilog=_BOOTSTRAP_EPILOG,
        formatter_class=raw,
    )
    _attestation(boot, required=True)
    _connection(boot, server_required=True)
    _key(boot, default=None, shown=DEFAULT_KEY_TYPE)
    _renewal(boot)

    renew = commands.add_parser(
        "renew",
        help="renew the certificate in --out with a new key when it is due",
        description="Renew the certificate in --out for a new key when it is due (or now, with --force):\n"
        "the current certificate vouches for the new key.",
        epilog=_RENEW_EPILOG,
        formatter_class=raw,
    )
    _connection(renew, server_required=False)
    _key(renew, default=None, shown="the current key's type")
    _renewal(renew)
    extra = renew.add_argument_group("when")
    extra.add_argument("--force", action="store_true", help="renew now, even when not due")
    extra.add_argument("--quiet", "-q", action="store_true", help="print nothing unless it fails (for cron)")

    run = commands.add_parser(
        "run",
        help="daemon: bootstrap if needed, then renew before expiry, forever",
        description="Keep a valid certificate in --out: bootstrap when there is none, renew before it\n"
        "expires, prove the machine's identity again when renewal is refused or too late.",
        epilog=_RUN_EPILOG,
        formatter_class=raw,
    )
    _attestation(run, required=False)
    _connection(run, server_required=False)
    _key(run, default=None, shown=f"{DEFAULT_KEY_TYPE} at bootstrap, then the current key's type")
    _renewal(run)
    run.add_argument_group("when").add_argument(
        "--once", action="store_true", help="one pass (bootstrap/renew/re-attest if needed), then exit (for cron)"
    )
    run.add_argument_group("monitoring").add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write node_exporter textfile metrics to PATH (a *.prom file in the collector's directory)",
    )

    status = commands.add_parser(
        "status",
        help="show the installed certificate, and ask the issuer whether it was revoked",
        description="Show the certificate installed in --out and when it is due for renewal; ask the issuer\n"
        "whether it was revoked (GET /v1/revoked). Without an answer from the issuer, say so and\n"
        "judge from the files alone.",
        epilog=STATUS_EPILOG,
        formatter_class=raw,
    )
    _connection(status, server_required=False, timeout=5.0)
    shown = status.add_argument_group("output")
    shown.add_argument("--json", action="store_true", help="one JSON object on stdout (for scripts and monitoring)")
    shown.add_argument(
        "--offline", action="store_true", help="do not ask the issuer: judge from the files alone (health checks)"
    )
    return parser


def parse(argv: list[str], env: Mapping[str, str]) -> argparse.Namespace:
    """Parse and check ``argv`` without any I/O; raise :class:`clients.errors.UsageError`
    (or ``SystemExit(64)`` from argparse itself)."""
    args = build_parser().parse_args(argv)
    if args.command is not None:
        check_options(args, env)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run ``issuer-agent`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse(argv, os.environ)
    except SystemExit as exc:  # --help (0), or argparse's own usage error (64)
        return exc.code if isinstance(exc.code, int) else EX_USAGE
    except AgentError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_status
    if args.command is None:
        build_parser().print_help(sys.stderr)
        return EX_USAGE
    try:
        status: int = COMMANDS[args.command](args, env=os.environ, out=sys.stdout, err=sys.stderr)
    except AgentError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return status
