"""The ``issuer`` command: run the service and operate it.

Every subcommand prints what happened and what to do next, exits 0 on success,
and on failure prints one line ``issuer: error: <reason>`` and exits non-zero
(2 for configuration and usage mistakes, 1 otherwise). One module per group.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ca.errors import CAError
from issuer import __version__
from issuer.cli import audit_chain, ca, certs, instances, migrate, revoke, serve, tokens, truststore
from issuer.cli.database import database_problem
from issuer.cli.errors import CliError
from issuer.errors import IssuerError
from issuer.settings import Settings, load_settings

__all__ = ["build_parser", "main"]

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
  issuer truststore export --out truststore.pem    # upload this as API Gateway's truststore

Production: ISSUER_DATABASE_URL=postgresql+asyncpg://..., `issuer migrate`,
`issuer ca init`, then run `issuer serve` replicas behind a load balancer.
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
    for group in (serve, migrate, ca, tokens, certs, instances, revoke, truststore, audit_chain):
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings: Settings | None = None
    try:
        settings = load_settings(args.config)
        status: int = args.handler(args, settings)
        return status
    except CliError as exc:
        _error(exc.detail)
        return exc.exit_status
    except (IssuerError, CAError) as exc:
        _error(exc.detail)
        return 2 if getattr(exc, "code", "") == "config_invalid" else 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = database_problem(exc, settings)
        if message is None:
            raise
        _error(message)
        return 1


def _error(message: str) -> None:
    print(f"issuer: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
