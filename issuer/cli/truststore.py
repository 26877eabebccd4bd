"""``issuer truststore export`` / ``publish``: the PEM file API Gateway's truststore must hold, and putting it there."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from issuer.cli.database import ensure_schema, now, run, with_sessions
from issuer.cli.errors import fail
from issuer.cli.operator import act, is_remote, progress_printer
from issuer.cli.output import print_json
from issuer.settings import Settings

if TYPE_CHECKING:
    from issuer.aws.s3 import S3Location

_DESCRIPTION = """\
Write the truststore for API Gateway's mutual TLS: every issuing CA that may still have
unexpired leaves (the active one, then prepared ones), then the root(s). API Gateway looks
up the issuer of the client's leaf in this file and ignores intermediates the client sends,
so uploading only the root makes every client fail with 403. The same file is served at
GET /v1/truststore.
"""


def add_parser(sub: Any) -> None:
    group = sub.add_parser("truststore", help="API Gateway's truststore").add_subparsers(
        dest="truststore_command", metavar="ACTION", required=True
    )
    export = group.add_parser(
        "export",
        help="write the truststore PEM",
        description=_DESCRIPTION,
        epilog="example: issuer truststore export --out truststore.pem && "
        "aws s3 cp truststore.pem s3://my-bucket/truststore.pem",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (default: standard output)")
    export.set_defaults(handler=cmd_export, remote_ok=True)

    publish = group.add_parser(
        "publish",
        help="check the truststore, upload it to S3 as a new version, point API Gateway at it",
        description=_PUBLISH_DESCRIPTION,
        epilog=_PUBLISH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("target", type=s3_location, metavar="s3://BUCKET/KEY", help="where the truststore lives")
    publish.add_argument("--domain", metavar="NAME", help="API Gateway custom domain to point at the new version")
    publish.add_argument("--api", choices=("rest", "http"), help="the domain's API type (required with --domain)")
    publish.add_argument(
        "--crls-key",
        metavar="KEY",
        help="also publish every current CRL (GET /v1/crls, what the Lambda authorizer verifies) to this key "
        "in the bucket (a KEY without '/' goes beside the truststore)",
    )
    publish.add_argument(
        "--revoked-key",
        metavar="KEY",
        help="also publish the revocation list (GET /v1/revoked) to this key in the bucket "
        "(a KEY without '/' goes beside the truststore)",
    )
    publish.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's)")
    publish.add_argument("--dry-run", action="store_true", help="only read; print what would change")
    publish.add_argument("--json", action="store_true", help="print the result as JSON (progress goes to stderr)")
    publish.set_defaults(handler=cmd_publish, remote_ok=True)


_PUBLISH_DESCRIPTION = """\
Publish the truststore (the same file as GET /v1/truststore) for API Gateway's mutual TLS:

  1. check it against API Gateway's truststore rules (PEM; at most 1,000 certificates and
     1 MB; RSA >= 2048 or ECDSA P-256/P-384; SHA-256 or stronger; every certificate a CA,
     unexpired, chaining to a root in the file within 4 certificates) - errors refuse;
  2. require a versioned bucket (API Gateway pins the truststore's object version);
  3. with --domain: check the domain's truststore URI is s3://BUCKET/KEY;
  4. upload a new version only if the content changed, and print its version id;
  5. with --crls-key: publish the signed CRLs (every issuing CA and root) for the Lambda
     authorizer (ISSUER_CRLS_URL) beside it - run this at least hourly (a cron job or timer):
     the issuing CAs' CRLs are valid for 24 hours; with --revoked-key, the older JSON list;
  6. with --domain: point the domain at the new version and print API Gateway's warnings.

AWS credentials and region come from the usual places (AWS_PROFILE, AWS_ACCESS_KEY_ID, an
instance or task role; AWS_REGION); AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 redirect the calls.
"""
_PUBLISH_EPILOG = """\
examples:
  issuer truststore publish s3://my-truststores/api/truststore.pem --dry-run
  issuer truststore publish s3://my-truststores/api/truststore.pem --domain api.example.com --api rest
  issuer truststore publish s3://my-truststores/api/truststore.pem --crls-key crls.pem --json
"""


def s3_location(text: str) -> S3Location:
    """argparse ``type=`` for an ``s3://BUCKET/KEY`` argument."""
    from issuer.aws.s3 import S3Location

    try:
        return S3Location.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def check_domain_and_api(args: argparse.Namespace) -> None:
    """``--domain`` and ``--api`` come together or not at all (exit 2)."""
    if (args.domain is None) != (args.api is None):
        raise fail("--domain and --api go together: --domain NAME --api rest|http", exit_status=2)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    if is_remote(args):
        pem = _remote_truststore(args)
    else:
        from issuer.service.ca.registry import export_truststore

        ensure_schema(settings)
        pem = run(with_sessions(settings, lambda s: export_truststore(s, now=now())))
    count = pem.count(b"-----BEGIN CERTIFICATE-----")
    if args.out is None:
        sys.stdout.write(pem.decode())
        return 0
    temporary = args.out.with_name(f".{args.out.name}.tmp")
    temporary.write_bytes(pem)
    temporary.replace(args.out)
    print(f"Wrote {count} certificate(s) to {args.out}; upload it as the API Gateway truststore.")
    return 0


def _remote_truststore(args: argparse.Namespace) -> bytes:
    """``GET /v1/truststore`` of the server (public: no sign-in)."""
    import ssl
    import urllib.error
    import urllib.request

    from issuer.cli.remote import RemoteServer

    server = RemoteServer.from_args(args)
    context = ssl.create_default_context(cafile=server.ca_bundle) if server.url.startswith("https:") else None
    try:
        with urllib.request.urlopen(f"{server.url}/v1/truststore", timeout=30, context=context) as resp:  # noqa: S310
            body: bytes = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise fail(f"cannot read {server.url}/v1/truststore: {getattr(exc, 'reason', exc)}") from None
    if b"-----BEGIN CERTIFICATE-----" not in body:
        raise fail(f"{server.url}/v1/truststore is not a PEM truststore")
    return body


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    check_domain_and_api(args)
    say = progress_printer(to_stderr=args.json)
    arguments = {
        "target": args.target.uri,
        "domain": args.domain,
        "api": args.api,
        "revoked_key": args.revoked_key,
        "crls_key": args.crls_key,
        "region": args.region,
        "dry_run": args.dry_run,
    }
    result = act(
        args, settings, "truststore.publish", {k: v for k, v in arguments.items() if v is not None}, progress=say
    )
    if is_remote(args):  # locally the lines were printed as they came
        for line in result.get("progress", []):
            say(line)
    result.pop("progress", None)
    if args.json:
        print_json(result)
        return 0
    store = result["truststore"]
    changed = "new" if store["changed"] else "unchanged"
    what = "would be uploaded (dry run)" if args.dry_run and store["changed"] else f"version {store['version_id']}"
    print(
        f"Truststore {store['uri']}: {what} ({changed}; {result['certificates']} certificate(s), "
        f"SHA-256 {store['sha256']})"
    )
    if result.get("crls") is not None:
        print(f"CRLs {result['crls']['uri']}: version {result['crls']['version_id'] or '(dry run)'}")
    if result["revoked"] is not None:
        listed = result["revoked"]
        print(f"Revocation list {listed['uri']}: version {listed['version_id'] or '(dry run)'}")
    if result["domain"] is not None:
        domain = result["domain"]
        updated = domain["updated"]
        state = "would be updated" if args.dry_run and updated else "updated" if updated else "unchanged"
        print(
            f"Custom domain {domain['domain']} ({domain['api']}): truststore version {domain['version'] or 'new'}, "
            f"{state}"
        )
        if domain["warnings"]:
            print(
                f"API Gateway reported {len(domain['warnings'])} truststore warning(s) (above); "
                "fix them and publish again"
            )
    return 0
