"""The ``issuer`` console script: says in one line what to install when the server extra is missing.

The distribution's base install is the agent's (``issuer-agent`` needs only cryptography and
botocore); the service needs ``pip install 'aws-machine-issuer[server]'``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

_SERVER_MODULES = ("aiohttp", "sqlalchemy", "alembic", "asn1crypto", "boto3")


def main(argv: Sequence[str] | None = None) -> int:
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
