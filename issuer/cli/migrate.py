"""``issuer migrate``: bring the database schema to this release."""

from __future__ import annotations

import argparse
from typing import Any

from issuer.cli.database import redact, run
from issuer.cli.errors import fail
from issuer.settings import Settings


def add_parser(sub: Any) -> None:
    migrate = sub.add_parser(
        "migrate",
        help="upgrade the database schema",
        description="Upgrade the database schema to the newest revision (run once per release, "
        "before new replicas start; safe to run again). It only upgrades: a database already past "
        "--revision is left as it is and the command fails saying so.",
        epilog="example: issuer migrate   (with ISSUER_DATABASE_URL set, once per release)",
    )
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.set_defaults(handler=cmd_migrate)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from issuer.service.ca.setup import ensure_state_dir
    from issuer.store.migrate import current_revision, head, revisions, upgrade

    known = revisions()
    target = head() if args.revision == "head" else args.revision
    if target not in known:
        raise fail(
            f"--revision {args.revision!r} is not a revision of this release ({', '.join(known)})",
            code="usage",
            exit_status=2,
        )
    if settings.is_sqlite:
        ensure_state_dir(settings)
    print(f"Migrating {redact(settings.database_url)} to {target} ...", flush=True)
    upgrade(settings.database_url, target, quiet=False)
    # Report what the database is at, not what was asked: upgrading to an older revision does nothing.
    reached = run(current_revision(settings.database_url))
    if reached != target:
        raise fail(
            f"the schema is at {reached}, not {target}: `issuer migrate` only upgrades, and this database "
            f"is already past {target}",
            code="migrate_not_reached",
        )
    print(f"Schema is at {reached}{' (the newest this release knows)' if reached == known[-1] else ''}.")
    return 0
