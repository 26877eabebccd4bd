"""Operator actions on the CA: status, rotate, activate, retire, and publishing the truststore.

Through the admin API the CA can be rotated and activated only where its key is not a file on
some machine — an AWS KMS key (``kms:``) or, where the signer supports it, AWS Private CA
(``pca:``): a file key and its passphrase belong on the operator's machine, with ``issuer ca
rotate`` run there. Retiring needs no key and works for any issuer. The local command keeps
every option (file keys, ``--publish`` gating) in :mod:`issuer.cli.ca.rotation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from ca.signer import Signer
from issuer.aws.s3 import S3Location
from issuer.errors import ClientError
from issuer.service.admin import shapes
from issuer.service.admin.actions import Action, Done, OperatorContext
from issuer.service.admin.args import Args
from issuer.service.ca.lifecycle import short
from issuer.service.ca.status import ca_status
from issuer.settings import Settings
from issuer.store.records import IssuerRecord

__all__ = ["CA_ACTIONS", "REMOTE_KEY_SCHEMES", "remote_key_allowed"]

# Key references the admin API may rotate onto and activate: keys no machine holds as a file.
REMOTE_KEY_SCHEMES = ("kms", "pca")
_KEY_SPECS = ("ECC_NIST_P256", "ECC_NIST_P384")


def remote_key_allowed(key_ref: str) -> bool:
    return key_ref.split(":", 1)[0] in REMOTE_KEY_SCHEMES


def _local_only(what: str) -> ClientError:
    return ClientError(
        f"{what} has a key file; file-key CA operations run only locally (`issuer ca …` without --server, "
        "on a machine with the CA directory and passphrase)",
        code="file_key_local_only",
    )


def _max_ttl(settings: Settings) -> timedelta:
    return max((r.max_ttl for r in settings.roles), default=timedelta(0))


def _issuer_json(record: IssuerRecord) -> dict[str, Any]:
    return {
        "fingerprint_sha256": record.fingerprint_sha256,
        "subject": record.subject,
        "state": record.state,
        "not_before": shapes.iso(record.not_before),
        "not_after": shapes.iso(record.not_after),
        "key_ref": record.key_ref,
    }


async def _status(ctx: OperatorContext, window: timedelta) -> Done:
    status = await ca_status(ctx.sessions, now=ctx.now, ca_dir=ctx.settings.ca_dir, warn_within=window)
    return Done(
        result=shapes.ca_status(status), summary=f"{len(status.issuers)} issuer(s), {len(status.warnings)} warning(s)"
    )


def _parse_status(args: Args, now: datetime) -> timedelta:
    window = args.duration("warn_within", default="30d")
    assert window is not None
    return window


@dataclass(frozen=True, slots=True)
class _Rotate:
    validity: timedelta
    common_name: str | None
    root: str | None
    force: bool
    kms_key: str | None
    create_kms_key: str | None
    kms_key_spec: str
    kms_region: str | None


def _parse_rotate(args: Args, now: datetime) -> _Rotate:
    validity = args.duration("validity", default="365d")
    assert validity is not None
    parsed = _Rotate(
        validity=validity,
        common_name=args.text("common_name", max_len=64),
        root=args.text("root", max_len=95),
        force=args.flag("force"),
        kms_key=args.text("kms_key", max_len=2048),
        create_kms_key=args.text("create_kms_key", max_len=256),
        kms_key_spec=args.choice("kms_key_spec", _KEY_SPECS) or "ECC_NIST_P256",
        kms_region=args.text("kms_region", max_len=32),
    )
    if parsed.kms_key is None and parsed.create_kms_key is None:
        raise _local_only("a new issuer without kms_key or create_kms_key")
    if parsed.kms_key is not None and parsed.create_kms_key is not None:
        raise ClientError("name kms_key or create_kms_key, not both", code="field_invalid")
    return parsed


async def _rotate(ctx: OperatorContext, a: _Rotate) -> Done:
    from issuer.aws.kms import KmsClients
    from issuer.service.ca.kms import KmsKeyChoice
    from issuer.service.ca.rotation import rotate_issuer
    from issuer.service.ca.setup import read_passphrase

    choice = (
        KmsKeyChoice(key_id=a.kms_key)
        if a.kms_key is not None
        else KmsKeyChoice(create_alias=a.create_kms_key, key_spec=a.kms_key_spec)  # type: ignore[arg-type]
    )
    done = await rotate_issuer(
        ctx.sessions,
        ca_dir=ctx.settings.ca_dir,
        passphrase=lambda: read_passphrase(ctx.settings),
        now=ctx.now,
        validity=a.validity,
        min_validity=_max_ttl(ctx.settings),
        trust_domain=ctx.settings.trust_domain,
        common_name=a.common_name,
        root=a.root,
        force=a.force,
        kms_key=choice,
        kms=KmsClients(region=a.kms_region),
    )
    return Done(
        result={
            "issuer": _issuer_json(done.issuer),
            "root_fingerprint_sha256": done.root.fingerprint_sha256,
            "root_subject": done.root.subject,
            "replaced": [r.fingerprint_sha256 for r in done.replaced],
            "created_kms_key": done.created_kms_key,
        },
        summary=f"prepared issuer {done.issuer.subject} ({short(done.issuer.fingerprint_sha256)}), "
        f"key {done.issuer.key_ref}",
    )


@dataclass(frozen=True, slots=True)
class _Switch:
    fingerprint: str | None
    force: bool


def _parse_switch(args: Args, now: datetime) -> _Switch:
    return _Switch(fingerprint=args.text("fingerprint", max_len=95), force=args.flag("force"))


async def _activate(ctx: OperatorContext, a: _Switch) -> Done:
    from issuer.service.ca.rotation import activate
    from issuer.service.ca.setup import read_passphrase
    from issuer.service.ca.signers import KeySigners

    signers = KeySigners(ca_dir=ctx.settings.ca_dir, passphrase=lambda: read_passphrase(ctx.settings))

    async def load(
        issuer: IssuerRecord,
        *,
        certificate: x509.Certificate,
        chain: tuple[x509.Certificate, ...],
        roots: tuple[x509.Certificate, ...],
    ) -> Signer:
        if ctx.remote and not remote_key_allowed(issuer.key_ref):
            raise _local_only(f"issuer {issuer.subject} ({short(issuer.fingerprint_sha256)})")
        return await signers(issuer, certificate=certificate, chain=chain, roots=roots)

    done = await activate(
        ctx.sessions,
        fingerprint=a.fingerprint,
        now=ctx.now,
        min_validity=_max_ttl(ctx.settings),
        load_signer=load,
        force=a.force,
    )
    leaves = done.previous_leaves
    return Done(
        result={
            "issuer": _issuer_json(done.issuer),
            "previous": _issuer_json(done.previous) if done.previous else None,
            "previous_leaves": {"live": leaves.live, "last_live_expiry": shapes.iso(leaves.last_expiry)},
            "truststore_certificates": done.truststore_certificates,
            "warnings": list(done.warnings),
        },
        summary=f"activated {done.issuer.subject} ({short(done.issuer.fingerprint_sha256)})",
    )


async def _retire(ctx: OperatorContext, a: _Switch) -> Done:
    from issuer.service.ca.rotation import retire

    if a.fingerprint is None:
        raise ClientError("name the issuer to retire (its fingerprint)", code="field_missing")
    done = await retire(
        ctx.sessions, fingerprint=a.fingerprint, now=ctx.now, settle=2 * ctx.settings.registry_refresh, force=a.force
    )
    return Done(
        result={"issuer": _issuer_json(done.issuer), "overridden": done.overridden},
        summary=f"retired {done.issuer.subject} ({short(done.issuer.fingerprint_sha256)})"
        + (f"; forced past: {done.overridden}" if done.overridden else ""),
    )


@dataclass(frozen=True, slots=True)
class _Publish:
    target: S3Location
    domain: str | None
    api: str | None
    revoked_key: str | None
    crls_key: str | None
    region: str | None
    dry_run: bool


def _parse_publish(args: Args, now: datetime) -> _Publish:
    target = args.required("target", max_len=1100)
    domain, api = args.text("domain", max_len=253), args.choice("api", ("rest", "http"))
    parsed_revoked, region, dry_run = args.text("revoked_key", max_len=1024), args.text("region"), args.flag("dry_run")
    crls_key = args.text("crls_key", max_len=1024)
    try:
        location = S3Location.parse(target)
    except ValueError as exc:
        raise ClientError(str(exc), code="field_invalid") from None
    if (domain is None) != (api is None):
        raise ClientError("domain and api go together", code="publish_arguments_invalid")
    return _Publish(location, domain, api, parsed_revoked, crls_key, region, dry_run)


async def _publish(ctx: OperatorContext, a: _Publish) -> Done:
    from issuer.service.ca.publish import publish_truststore
    from issuer.service.ca.setup import read_passphrase
    from issuer.service.ca.signers import KeySigners
    from issuer.service.revocation.bundle import export_crls
    from issuer.service.revocation.lists import export_revoked

    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        ctx.progress(line)

    revoked = (await export_revoked(ctx.sessions, now=ctx.now)).body if a.revoked_key else None
    crls = None
    if a.crls_key:
        # What GET /v1/crls serves: the stored CRLs, each signed anew first when it is due.
        keys = KeySigners(ca_dir=ctx.settings.ca_dir, passphrase=lambda: read_passphrase(ctx.settings))
        bundle = await export_crls(ctx.sessions, load_signer=keys, load_root_signer=keys.root, clock=lambda: ctx.now)
        crls = bundle.body
        progress(f"Built the CRL bundle: {', '.join(f'{c.subject} #{c.crl_number}' for c in bundle.crls)}")
    result = await publish_truststore(
        ctx.sessions,
        a.target,
        domain=a.domain,
        api=a.api,  # type: ignore[arg-type]
        revoked=revoked,
        revoked_key=a.revoked_key,
        crls=crls,
        crls_key=a.crls_key,
        dry_run=a.dry_run,
        now=ctx.now,
        region=a.region,
        progress=progress,
    )
    stored = result.truststore
    state = "dry run" if a.dry_run else f"version {stored.version_id}"
    return Done(
        result={**result.to_json(), "progress": lines},
        summary=f"published {stored.uri} ({state}, {'changed' if stored.changed else 'unchanged'})",
    )


CA_ACTIONS: tuple[Action[Any], ...] = (
    Action("ca.status", "read", "GET", "/v1/admin/ca", _parse_status, _status),
    Action("ca.rotate", "ca", "POST", "/v1/admin/ca/rotate", _parse_rotate, _rotate, changes=True),
    Action("ca.activate", "ca", "POST", "/v1/admin/ca/activate", _parse_switch, _activate, changes=True),
    Action("ca.retire", "ca", "POST", "/v1/admin/ca/retire", _parse_switch, _retire, changes=True),
    Action("truststore.publish", "publish", "POST", "/v1/admin/truststore/publish", _parse_publish, _publish, True),
)
