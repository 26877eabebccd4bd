"""``--publish s3://BUCKET/KEY [--domain NAME --api rest|http]`` on ``issuer ca rotate | activate | retire``.

The upload itself is :func:`issuer.service.ca.publish.publish_truststore` (the same steps as
``issuer truststore publish``: API Gateway's rules, a versioned bucket, a new object version only
when the content changed, the custom domain pointed at it). What rotation adds is *when*:

- ``rotate`` and ``retire`` publish after the registry changed, so API Gateway's truststore gains
  the new issuer, or loses the retired one;
- ``activate`` publishes *before* switching, and switches only if that publish changed nothing —
  i.e. S3 (and the domain) already held exactly this truststore, new issuer included. If it had to
  upload or re-point the domain, API Gateway has not applied it yet: the activation is refused
  (unless ``--force``) and the operator runs the same command again once the domain shows the new
  version, when the publish is a no-op and the switch happens.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from issuer.cli.database import Sessions
from issuer.cli.errors import fail
from issuer.cli.truststore import check_domain_and_api, s3_location
from issuer.errors import Conflict

if TYPE_CHECKING:
    from issuer.service.ca.publish import PublishResult
    from issuer.store.records import IssuerRecord

__all__ = [
    "activation_gate",
    "add_publish_options",
    "check_publish_options",
    "domain_gate",
    "publish",
    "publish_gate",
    "say_published",
]


def add_publish_options(parser: Any) -> None:
    """Add ``--publish``, ``--domain``, ``--api`` and ``--region`` to a rotation action."""
    parser.add_argument(
        "--publish",
        type=s3_location,
        metavar="s3://BUCKET/KEY",
        help="also publish the truststore there (as `issuer truststore publish` does)",
    )
    parser.add_argument("--domain", metavar="NAME", help="with --publish: the API Gateway custom domain to update")
    parser.add_argument("--api", choices=("rest", "http"), help="with --domain: the domain's API type")
    parser.add_argument(
        "--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's, as the AWS CLI)"
    )


def check_publish_options(args: argparse.Namespace, *, domain_alone: bool = False) -> None:
    """Refuse option combinations that cannot work, before anything changes (exit 2).

    ``domain_alone``: ``--domain`` (with ``--api``) may come without ``--publish`` (``ca activate``
    then only checks what the domain serves).
    """
    if args.publish is None and not domain_alone and (args.domain or args.api or args.region):
        raise fail("--domain, --api and --region go with --publish s3://BUCKET/KEY", exit_status=2)
    if args.publish is None and domain_alone and args.region and not args.domain:
        raise fail("--region goes with --publish or --domain", exit_status=2)
    check_domain_and_api(args)


async def publish(
    sessions: Sessions, args: argparse.Namespace, *, now: datetime, stderr: bool = False
) -> PublishResult:
    """Publish the registry's truststore as ``args`` say; progress lines go to standard output (or error)."""
    from issuer.service.ca.publish import publish_truststore

    return await publish_truststore(
        sessions,
        args.publish,
        domain=args.domain,
        api=args.api,
        now=now,
        region=args.region,
        progress=lambda line: print(f"  {line}", file=sys.stderr if stderr else sys.stdout, flush=True),
    )


def publish_gate(
    sessions: Sessions, args: argparse.Namespace, *, now: datetime
) -> Callable[[IssuerRecord], Awaitable[None]]:
    """The last step before an activation switches: publish, and refuse when API Gateway is only now being told.

    Raises Conflict ``truststore_just_published`` (unless ``args.force``) when the publish uploaded a
    new version or re-pointed the domain.
    """

    async def gate(record: IssuerRecord) -> None:
        print(f"Publishing the truststore to {args.publish} before switching:", flush=True)
        result = await publish(sessions, args, now=now)
        say_published(result)
        fresh = result.truststore.changed or (result.domain is not None and result.domain.updated)
        if fresh and not args.force:
            target = f"custom domain {args.domain}" if args.domain else "API Gateway"
            raise Conflict(
                f"{args.publish} did not hold this truststore yet; it was published just now and {target} "
                f"may take minutes to apply it: once it uses the new version run `issuer ca activate "
                f"{record.fingerprint_sha256[:16]}` with the same --publish again (or --force)",
                code="truststore_just_published",
            )

    return gate


def activation_gate(
    sessions: Sessions, args: argparse.Namespace, *, now: datetime
) -> Callable[[IssuerRecord], Awaitable[None]] | None:
    """What ``ca activate`` checks last before switching: ``--publish`` (:func:`publish_gate`), then
    with ``--domain`` what the domain really serves (:func:`domain_gate`). None when neither was asked."""
    steps = []
    if args.publish is not None:
        steps.append(publish_gate(sessions, args, now=now))
    if args.domain is not None:
        steps.append(domain_gate(args))
    if not steps:
        return None

    async def gate(record: IssuerRecord) -> None:
        for step in steps:
            await step(record)

    return gate


def domain_gate(args: argparse.Namespace) -> Callable[[IssuerRecord], Awaitable[None]]:
    """Refuse the switch (Conflict ``domain_truststore_stale``) unless ``--domain`` serves the new issuer.

    Reads the domain's live truststore URI and version from API Gateway and that object version from
    S3. With ``--force`` a stale domain is reported as a warning and the switch goes on.
    """

    async def gate(record: IssuerRecord) -> None:
        from issuer.errors import IssuerError
        from issuer.service.ca.cutover import domain_serves, require_issuer

        print(f"Checking what custom domain {args.domain} serves:", flush=True)
        served = await domain_serves(record, domain=args.domain, api=args.api, region=args.region)
        version = served.version or "(latest at its last update)"
        held = "holds" if served.holds_issuer else "does NOT hold"
        print(f"  {served.uri} version {version}: {served.certificates} certificates, {held} the new issuer")
        for warning in served.warnings:
            print(f"  API Gateway warning: {warning}")
        try:
            require_issuer(served, record)
        except IssuerError as exc:
            if not args.force:
                raise
            print(f"warning: --force: {exc.detail}", file=sys.stderr)

    return gate


def say_published(result: PublishResult) -> None:
    stored = result.truststore
    state = f"new version {stored.version_id}" if stored.changed else f"unchanged (version {stored.version_id})"
    print(f"Truststore {stored.uri}: {state}, {result.certificates} certificate(s)")
    if result.domain is not None:
        updated = "now points at" if result.domain.updated else "already uses"
        print(f"Custom domain {result.domain.domain} {updated} version {result.domain.version}")
        for warning in result.domain.warnings:
            print(f"warning: API Gateway: {warning}")
