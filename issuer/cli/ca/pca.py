"""The AWS Private CA option of ``issuer ca init`` and ``issuer ca rotate``: ``--aws-pca-arn ARN``.

Registered by :mod:`issuer.cli.ca.init` and :mod:`issuer.cli.ca.rotation`. The Private CA client is
boto3's with the default credential chain; ``AWS_ENDPOINT_URL_ACM_PCA`` / ``AWS_ENDPOINT_URL`` apply.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from issuer.cli.database import ensure_schema, now, run, with_sessions
from issuer.cli.errors import fail
from issuer.durations import format_duration
from issuer.settings import Settings

__all__ = ["add_init_options", "add_rotate_options", "cmd_init_pca", "cmd_rotate_pca", "wants_pca"]

_PERMISSIONS = (
    "acm-pca:IssueCertificate, GetCertificate, DescribeCertificateAuthority, GetCertificateAuthorityCertificate "
    "and RevokeCertificate on {arn}"
)
_HELP = "an existing, ACTIVE AWS Private CA signs the leaves (arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID)"


def add_init_options(init: Any) -> None:
    group = init.add_argument_group("AWS Private CA", "issue through an AWS Private CA: no CA key here at all")
    group.add_argument("--aws-pca-arn", metavar="ARN", help=_HELP)


def add_rotate_options(rotate: Any) -> None:
    group = rotate.add_argument_group("AWS Private CA", "the new issuer is an AWS Private CA (prepared, then activate)")
    group.add_argument("--aws-pca-arn", metavar="ARN", help=_HELP)


def wants_pca(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "aws_pca_arn", None))


def _min_validity(settings: Settings) -> timedelta:
    return max((r.max_ttl for r in settings.roles), default=timedelta(0))


def _refuse_mixed(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    from issuer.aws.pca import is_ca_arn

    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None)]
    if given:
        raise fail(f"--aws-pca-arn does not go with {', '.join(given)}", code="usage", exit_status=2)
    if not is_ca_arn(args.aws_pca_arn):
        raise fail(
            f"--aws-pca-arn {args.aws_pca_arn!r} is not an AWS Private CA ARN "
            "(arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID)",
            code="pca_arn_invalid",
            exit_status=2,
        )


def cmd_init_pca(args: argparse.Namespace, settings: Settings) -> int:
    """``issuer ca init --aws-pca-arn ARN``: register the Private CA as the active issuer."""
    from issuer.aws.pca import PcaClients
    from issuer.cli.ca.guards import refuse_second_init
    from issuer.service.ca.pca import init_pca_ca

    _refuse_mixed(args, ("issuing_kms_key", "create_kms_key", "root_kms_key", "create_root_kms_key", "organization"))
    ensure_schema(settings)
    refuse_second_init(settings, instead="rotate to the Private CA instead (`issuer ca rotate --aws-pca-arn`)")
    print(f"Asking AWS Private CA for {args.aws_pca_arn}", flush=True)
    done = run(
        with_sessions(
            settings,
            lambda s: init_pca_ca(
                s,
                arn=args.aws_pca_arn,
                clients=PcaClients(),
                ca_dir=settings.ca_dir,
                now=now(),
                min_validity=_min_validity(settings),
                force=args.force,
            ),
        )
    )
    issuer = done.issuer
    print("Registered an AWS Private CA as the active issuing CA:")
    print(f"  issuing: {issuer.certificate.subject.rfc4514_string()} ({issuer.arn})")
    print(f"           valid until {issuer.certificate.not_valid_after_utc:%Y-%m-%d %H:%MZ}, {issuer.usage_mode} mode")
    for c in issuer.intermediates:
        print(f"  via:     {c.subject.rfc4514_string()}")
    print(f"  root:    {issuer.root.subject.rfc4514_string()} (registered as the trust anchor)")
    print(f"  files:   {', '.join(str(p) for p in done.files)} (copies for operators; the registry is the truth)")
    _say_crl(issuer.crl_bucket)
    print("Next:")
    print("  replicas need no CA key and no passphrase; give their role " + _PERMISSIONS.format(arn=issuer.arn))
    print("  issuer serve, then `issuer truststore export --out truststore.pem` for API Gateway")
    return 0


def cmd_rotate_pca(
    args: argparse.Namespace, settings: Settings, *, publish_after: Callable[[argparse.Namespace, Settings], bool]
) -> int:
    """``issuer ca rotate --aws-pca-arn ARN``: register the Private CA as a prepared issuer."""
    from issuer.aws.pca import PcaClients
    from issuer.service.ca.lifecycle import short, when
    from issuer.service.ca.pca import prepare_pca_issuer

    _refuse_mixed(args, ("kms_key", "create_kms_key", "common_name", "root"))
    ensure_schema(settings)
    print(f"Asking AWS Private CA for {args.aws_pca_arn}", flush=True)
    done, root_added = run(
        with_sessions(
            settings,
            lambda s: prepare_pca_issuer(
                s,
                arn=args.aws_pca_arn,
                clients=PcaClients(),
                ca_dir=settings.ca_dir,
                now=now(),
                min_validity=_min_validity(settings),
                force=args.force,
            ),
        )
    )
    new = done.issuer
    print("Prepared an AWS Private CA as the next issuing CA (in the truststore now, not signing yet):")
    print(f"  subject:      {new.subject}")
    print(f"  fingerprint:  {new.fingerprint_sha256}")
    print(f"  valid:        {when(new.not_before)} .. {when(new.not_after)}")
    print(f"  key:          {new.key_ref}")
    added = " — added as a new trust anchor: clients need the new bundle" if root_added else ""
    print(f"  root:         {done.root.subject} ({short(done.root.fingerprint_sha256)}){added}")
    for old in done.replaced:
        print(f"  replaced:     {old.subject} ({short(old.fingerprint_sha256)}), prepared but never active: retired")
    print(f"Every replica serves it in GET /v1/truststore within {format_duration(settings.registry_refresh)}.")
    published = publish_after(args, settings)
    print("Next:")
    print("  1. give the replicas' role " + _PERMISSIONS.format(arn=args.aws_pca_arn))
    if published:
        print("  2. wait until API Gateway uses the published truststore (the domain's status is AVAILABLE)")
    else:
        print("  2. issuer truststore export --out truststore.pem, upload it as API Gateway's truststore,")
        print("     and wait until the domain uses it (or: issuer truststore publish s3://BUCKET/KEY)")
    print(f"  3. issuer ca activate {short(new.fingerprint_sha256)}")
    return 0


def _say_crl(bucket: str | None) -> None:
    if bucket:
        print(f"  CRL:     Private CA publishes it to s3://{bucket}/ (served in GET /v1/crl?issuer=…)")
    else:
        print("  CRL:     disabled on this CA: revocations reach GET /v1/revoked only (enable its CRL to get one)")
