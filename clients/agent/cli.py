"""The ``issuer-agent`` command: ``issuer-agent bootstrap --method {token,aws-ec2,aws-iam} ...``.

Progress goes to stderr, the result to stdout; a failure is one line on stderr
(``error: ... (code ...)``) and a non-zero exit status (see :mod:`clients.errors`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TextIO

from clients.agent.bootstrap import (
    BootstrapResult,
    Ec2Proof,
    IamProof,
    Progress,
    Proof,
    TokenProof,
    bootstrap,
)
from clients.agent.files import NONCE_FILE, prepare_out_dir
from clients.agent.http import IssuerClient
from clients.errors import AgentError, UsageError
from clients.imds import DEFAULT_ENDPOINT, ImdsClient, resolve_endpoint
from clients.keys import hostname_hint
from clients.wire import DEFAULT_KEY_TYPE, KEY_TYPES, METHODS

__all__ = ["build_parser", "main"]

_EPILOG = """\
examples:
  # on-prem machine, with a one-time token from `issuer token create --role onprem ...`
  ISSUER_JOIN_TOKEN=... issuer-agent bootstrap --method token \\
      --server https://issuer.example.org --ca-bundle /etc/issuer/ca.pem --out /etc/issuer-agent

  # EC2 instance: the AWS-signed identity document via IMDSv2 is the proof
  issuer-agent bootstrap --method aws-ec2 --role web-fleet \\
      --server https://issuer.example.org --out /etc/issuer-agent

  # ECS task, Lambda, IAM Roles Anywhere, EC2 instance profile: a signed STS request is the proof
  issuer-agent bootstrap --method aws-iam --role ecs-tasks --server-id issuer.example.org \\
      --server https://issuer.example.org --out /run/issuer-agent

writes to --out (created 0700): key.pem (0600), cert.pem, chain.pem, bundle.pem, fullchain.pem
(leaf + chain); for aws-ec2 also instance-nonce (0600, keep it: the issuer binds the instance to it).
The key is made here and never leaves the machine.

exit status: 0 issued, 1 failed, 2 bad usage, 75 temporary failure (retry later)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="issuer-agent",
        description="Get a short-lived mTLS client certificate for this machine from the issuer.",
        epilog="run `issuer-agent bootstrap --help` for options and examples",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    boot = commands.add_parser(
        "bootstrap",
        help="prove who this machine is and get its first certificate",
        description="Generate a key, prove this machine's identity (join token, EC2 identity document "
        "or IAM-signed STS request) and install the certificate the issuer returns.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = boot.add_argument_group("common options")
    common.add_argument("--method", required=True, choices=METHODS, help="how this machine proves who it is")
    common.add_argument("--server", required=True, metavar="URL", help="the issuer's base URL (https://...)")
    common.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write the files")
    common.add_argument("--role", help="issuer role to ask for (optional when exactly one role matches)")
    common.add_argument("--key-type", choices=KEY_TYPES, default=DEFAULT_KEY_TYPE, help=f"default: {DEFAULT_KEY_TYPE}")
    common.add_argument("--common-name", metavar="CN", help="subject hint in the CSR (default: the hostname)")
    common.add_argument(
        "--ca-bundle", type=Path, metavar="PEM", help="CA certificates to verify the issuer (default: system)"
    )
    common.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds to wait for the issuer (default 30)"
    )
    common.add_argument(
        "--insecure-http", action="store_true", help="allow plain http to a non-loopback issuer (labs only)"
    )

    token = boot.add_argument_group("--method token", "the join token: --token, --token-file or ISSUER_JOIN_TOKEN")
    source = token.add_mutually_exclusive_group()
    source.add_argument("--token", help="the join token (visible in `ps`; prefer the file or the variable)")
    source.add_argument("--token-file", type=Path, metavar="FILE", help="read the join token from FILE")

    ec2 = boot.add_argument_group("--method aws-ec2")
    ec2.add_argument(
        "--imds-endpoint",
        metavar="URL",
        help=f"instance metadata service (default {DEFAULT_ENDPOINT}, or AWS_EC2_METADATA_SERVICE_ENDPOINT; "
        "IPv6: http://[fd00:ec2::254])",
    )

    iam = boot.add_argument_group("--method aws-iam")
    iam.add_argument("--server-id", metavar="ID", help="the issuer's server id (or ISSUER_SERVER_ID); required")
    iam.add_argument("--sts-region", metavar="REGION", help="STS region (default: the AWS config's, else us-east-1)")
    iam.add_argument(
        "--sts-endpoint-host", metavar="HOST", help="another STS host the issuer allows, e.g. sts.amazonaws.com"
    )
    iam.add_argument("--profile", help="AWS profile for credentials (default: botocore's chain)")
    boot.set_defaults(handler=_run_bootstrap)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``issuer-agent`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (status 2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = args.handler(args, env=os.environ, out=sys.stdout, err=sys.stderr)
    except AgentError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return status


_METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "token": ("token", "token_file"),
    "aws-ec2": ("imds_endpoint",),
    "aws-iam": ("server_id", "sts_region", "sts_endpoint_host", "profile"),
}


def _run_bootstrap(args: argparse.Namespace, *, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    for method, names in _METHOD_OPTIONS.items():
        for name in names:
            if method != args.method and getattr(args, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} is for --method {method}, not {args.method}", code="option_not_for_method")
    # Everything that can be checked without I/O is checked before the first file or request.
    if not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds", code="timeout_invalid")
    token = _join_token(args, env) if args.method == "token" else None
    server_id = args.server_id or env.get("ISSUER_SERVER_ID")
    if args.method == "aws-iam" and not server_id:
        raise UsageError("--method aws-iam needs --server-id (or ISSUER_SERVER_ID)", code="server_id_missing")

    client = IssuerClient(
        args.server, ca_bundle=args.ca_bundle, timeout=args.timeout, allow_insecure_http=args.insecure_http
    )
    if client.warning:
        print(client.warning, file=err)
    out_dir = prepare_out_dir(args.out)

    def progress(message: str) -> None:
        print(message, file=err, flush=True)

    proof: Proof
    if token is not None:
        proof = TokenProof(token=token)
    elif args.method == "aws-ec2":
        proof = Ec2Proof(imds=ImdsClient(resolve_endpoint(args.imds_endpoint, env)), out_dir=out_dir)
    else:
        assert server_id is not None
        proof = _iam_proof(args, server_id=server_id, progress=progress)

    result = bootstrap(
        proof,
        transport=client,
        out_dir=out_dir,
        role=args.role,
        key_type=args.key_type,
        common_name=args.common_name or hostname_hint(),
        progress=progress,
    )
    _report(result, method=args.method, out=out)
    return 0


def _join_token(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    if args.token_file is not None:
        try:
            token = str(args.token_file.read_text(encoding="utf-8")).strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read --token-file {args.token_file}: {exc}", code="token_file_unreadable"
            ) from None
    else:
        token = (args.token or env.get("ISSUER_JOIN_TOKEN") or "").strip()
    if not token:
        raise UsageError("no join token: give --token, --token-file or set ISSUER_JOIN_TOKEN", code="token_missing")
    return token


def _iam_proof(args: argparse.Namespace, *, server_id: str, progress: Progress) -> IamProof:
    # Imported here: botocore takes half a second to import and only aws-iam needs it.
    from clients.sts_proof import default_region, load_credentials, signing_region, sts_host

    region = args.sts_region or default_region(profile=args.profile)
    host = args.sts_endpoint_host.strip().lower() if args.sts_endpoint_host else None
    if host and args.sts_region and signing_region(host, region=args.sts_region) != args.sts_region:
        raise UsageError(
            f"--sts-endpoint-host {host} is not in --sts-region {args.sts_region}", code="sts_region_mismatch"
        )
    progress("loading AWS credentials (botocore's chain)")
    credentials = load_credentials(profile=args.profile)
    progress(f"signing for STS at {host or sts_host(region)} with access key {credentials.access_key}")
    return IamProof(credentials=credentials, region=region, server_id=server_id, host=host)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _report(result: BootstrapResult, *, method: str, out: TextIO) -> None:
    files, issued = result.files, result.issued
    print(f"wrote {files.key} (0600)", file=out)
    for path in (files.cert, files.chain, files.bundle, files.fullchain):
        print(f"wrote {path}", file=out)
    if method == "aws-ec2":
        print(f"instance nonce in {files.directory / NONCE_FILE} (keep it: it binds this instance)", file=out)
    identity = issued.identity
    print(f"serial {issued.serial}", file=out)
    uri = f" ({identity.uri_san})" if identity.uri_san else ""
    print(f"identity {identity.method} {identity.principal}{uri}", file=out)
    print(f"not after {_when(issued.not_after)}", file=out)
    print(f"renew after {_when(issued.renew_after)}", file=out)
