"""``issuer migrate``: bring the database schema to this release."""

from __future__ import annotations

import argparse
from typing import Any

from issuer.cli.database import redact
from issuer.settings import Settings


def add_parser(sub: Any) -> None:
    migrate = sub.add_parser(
        "migrate",
        help="upgrade the database schema",
        description="Upgrade the database schema to the newest revision (run once per release, "
        "before new replicas start; safe to run again).",
    )
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.set_defaults(handler=cmd_migrate)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.ca.setup import ensure_state_dir
    from issuer.store.migrate import upgrade

    if settings.is_sqlite:
        ensure_state_dir(settings)
    print(f"Migrating {redact(settings.database_url)} to {args.revision} ...", flush=True)
    upgrade(settings.database_url, args.revision, quiet=False)
    print(f"Schema is at {args.revision}.")
    return 0
