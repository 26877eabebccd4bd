"""Where each ``issuer-agent`` method's proof comes from: a join token (read afresh each attempt),
the instance identity document (IMDS), STS signed with the AWS credentials or the instance
identity role's, or a certificate from another CA."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

from clients.agent.bootstrap import Ec2Proof, IamProof, Progress, Proof, TokenProof
from clients.agent.x509pop import load_external
from clients.errors import ConfigError
from clients.imds import ImdsClient, ImdsPatience, resolve_endpoint
from clients.imds_role import instance_role_credentials

__all__ = ["TokenSource", "inline_token", "proof_source", "read_token_file", "server_id_of"]


def server_id_of(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    return args.server_id or env.get("ISSUER_SERVER_ID") or None


def inline_token(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    return (args.token or env.get("ISSUER_JOIN_TOKEN") or "").strip()


def read_token_file(path: Path) -> str:
    try:
        return str(path.read_text(encoding="utf-8")).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --token-file {path}: {exc}", code="token_file_unreadable") from None


class TokenSource:
    """Join tokens for the daemon, read afresh for every attempt (from ``file``, else ``inline``);
    a token the issuer accepted (they are one-time) is never sent again, so an operator can drop
    a new one into --token-file while the daemon keeps trying. Raises :class:`ConfigError`
    (``token_missing``, ``token_spent``, ``token_file_unreadable``)."""

    def __init__(self, *, file: Path | None, inline: str = "") -> None:
        self._file = file
        self._inline = inline.strip()
        self._spent: set[str] = set()

    def __call__(self) -> Proof:
        token = read_token_file(self._file) if self._file else self._inline
        where = f"--token-file {self._file}" if self._file else "--token/ISSUER_JOIN_TOKEN"
        if not token:
            raise ConfigError(f"no join token in {where}", code="token_missing")
        if token in self._spent:
            raise ConfigError(f"the join token in {where} was used already; put a new one there", code="token_spent")
        return TokenProof(token=token, on_accepted=self._spent.add)


def proof_source(
    args: argparse.Namespace,
    env: Mapping[str, str],
    *,
    out_dir: Path,
    progress: Progress,
    imds_log: Progress | None = None,
) -> Callable[[], Proof]:
    if args.method == "token":
        return TokenSource(file=args.token_file, inline=inline_token(args, env))
    if args.method == "aws-ec2":
        endpoint = resolve_endpoint(args.imds_endpoint, env)
        patience = ImdsPatience(max_wait=args.imds_max_wait)
        v1_fallback = env.get("AWS_EC2_METADATA_V1_DISABLED", "").strip().lower() != "true"
        return lambda: Ec2Proof(
            imds=ImdsClient(endpoint, patience=patience, allow_v1_fallback=v1_fallback, log=imds_log or progress),
            out_dir=out_dir,
        )
    server_id = server_id_of(args, env)
    assert server_id is not None  # check_options
    if args.method == "aws-ec2-role":
        imds = ImdsClient(
            resolve_endpoint(args.imds_endpoint, env),
            patience=ImdsPatience(max_wait=args.imds_max_wait),
            allow_v1_fallback=env.get("AWS_EC2_METADATA_V1_DISABLED", "").strip().lower() != "true",
            log=imds_log or progress,
        )
        return lambda: _instance_role_proof(args, imds, server_id=server_id, env=env, progress=progress)
    if args.method == "x509pop":
        return lambda: load_external(args.external_cert, args.external_key, server_id=server_id)
    return lambda: _iam_proof(args, server_id=server_id, progress=progress)


def _iam_proof(args: argparse.Namespace, *, server_id: str, progress: Progress) -> IamProof:
    # Imported here: botocore takes half a second to import and only aws-iam needs it.
    from clients.sts_proof import default_region, load_credentials, sts_host

    region = args.sts_region or default_region(profile=args.profile)
    host = args.sts_endpoint_host.strip().lower() if args.sts_endpoint_host else None
    progress("loading AWS credentials (botocore's chain)")
    credentials = load_credentials(profile=args.profile)
    progress(f"signing for STS at {host or sts_host(region)} with access key {credentials.access_key}")
    return IamProof(credentials=credentials, region=region, server_id=server_id, host=host)


def _instance_role_proof(
    args: argparse.Namespace, imds: ImdsClient, *, server_id: str, env: Mapping[str, str], progress: Progress
) -> IamProof:
    """GetCallerIdentity signed with the instance identity role's credentials, read afresh each time."""
    progress(f"reading the instance identity role's credentials from {imds.endpoint}")
    credentials = instance_role_credentials(imds)
    region = args.sts_region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    host = args.sts_endpoint_host.strip().lower() if args.sts_endpoint_host else None
    progress(f"signing for STS with the instance identity role (access key {credentials.access_key})")
    return IamProof(credentials=credentials, region=region, server_id=server_id, host=host, method="aws-ec2-role")
