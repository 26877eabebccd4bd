"""The ``issuer`` console script: says in one line what is missing before the service starts.

The distribution's base install is the agent's (``issuer-agent`` runs on Python 3.9 and needs only
cryptography and botocore); the service needs Python 3.11 or newer and
``pip install 'aws-machine-issuer[server]'``. This module must stay importable on Python 3.9 so
that it can say so.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

_SERVER_MODULES = ("aiohttp", "sqlalchemy", "alembic", "asn1crypto", "boto3")
SERVER_PYTHON = (3, 11)


def main(argv: Sequence[str] | None = None) -> int:
    if sys.version_info < SERVER_PYTHON:
        running = ".".join(str(part) for part in sys.version_info[:3])
        print(
            f"issuer: error: the issuer service needs Python {SERVER_PYTHON[0]}.{SERVER_PYTHON[1]} or newer, "
            f"this is {running} ({sys.executable}); the agent, issuer-agent, runs on 3.9+",
            file=sys.stderr,
        )
        return 1
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"issuer: error: the issuer service needs its server extra ({', '.join(missing)} missing): "
            "pip install 'aws-machine-issuer[server]' (the agent, issuer-agent, works without it)",
            file=sys.stderr,
        )
        return 1
    from issuer.cli import main as cli_main

    return cli_main(argv)
