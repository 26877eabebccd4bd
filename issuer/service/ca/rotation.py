"""Issuing-CA rotation with overlap: rotate (prepare a successor), activate it, retire the old one.

The registry in the database is the source of truth; every replica follows it within
``[issuer] registry_refresh``. The order of an overlap, and why:

1. :func:`rotate_issuer` — a new issuing CA under a registered root, ``prepared``: in
   ``GET /v1/truststore`` at once, signing nothing. Needs the root key (the only step that does).
2. The operator uploads the truststore to API Gateway (its truststore must hold an issuer
   before the first leaf of that issuer reaches it).
3. :func:`activate` — every replica signs with the new issuer; the old one stays trusted.
4. :func:`retire` — once the old issuer's last leaf has expired, it leaves the truststore.

Each function takes the session factory and ``now`` and owns its transactions; refusals are
:class:`~issuer.errors.IssuerError` s with stable codes and one-line details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.hierarchy import CertifiedKey, create_issuing
from issuer.errors import ClientError, ConfigError, IssuerError, NotFound
from issuer.service.ca import register as ca_registry
from issuer.service.ca.kms import KmsKeyChoice, KmsSetupSource, new_kms_issuer
from issuer.service.ca.lifecycle import (
    LeafCounts,
    activation_warnings,
    check_activation,
    check_retirement,
    check_rotation,
    issued_by,
    match_fingerprint,
    phase_of,
    short,
)
from issuer.service.ca.registry import SignerLoader, certificates_of, truststore_of
from issuer.store import issuers as store
from issuer.store.records import IssuerRecord, RootRecord

__all__ = [
    "Activation",
    "Retirement",
    "Rotation",
    "activate",
    "leaf_counts",
    "retire",
    "rotate_issuer",
]

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True, slots=True)
class Rotation:
    """A new prepared issuer, the root that certified it, where its key is, and what it replaced (``force``).

    ``key_path`` is the issuing key file, None when the key is in KMS (``issuer.key_ref`` names it);
    ``certificate_path`` the new certificate beside it in the CA directory, for operators.
    """

    issuer: IssuerRecord
    root: RootRecord
    key_path: Path | None
    replaced: tuple[IssuerRecord, ...]
    certificate_path: Path | None = None
    created_kms_key: str | None = None  # the ARN, when this rotation created the KMS key


@dataclass(frozen=True, slots=True)
class Activation:
    """The issuer now active (as it was just before), the one it replaced and that one's leaves."""

    issuer: IssuerRecord
    previous: IssuerRecord | None
    previous_leaves: LeafCounts
    truststore_certificates: int
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Retirement:
    """The retired issuer (as it was before), its leaves, and the refusal ``force`` overrode, if any."""

    issuer: IssuerRecord
    leaves: LeafCounts
    overridden: str | None


async def leaf_counts(session: AsyncSession, *, now: datetime) -> dict[int, LeafCounts]:
    """Per issuer id, its :class:`LeafCounts` at ``now`` (issuers without leaves are absent)."""
    rows = await store.leaf_counts(session, now=now)
    return {i: LeafCounts(issued=n, live=live, last_expiry=last) for i, (n, live, last) in rows.items()}


async def rotate_issuer(
    sessions: Sessions,
    *,
    ca_dir: Path,
    passphrase: Callable[[], bytes],
    now: datetime,
    validity: timedelta,
    min_validity: timedelta,
    trust_domain: str,
    common_name: str | None = None,
    root: str | None = None,
    force: bool = False,
    kms_key: KmsKeyChoice | None = None,
    kms: KmsSetupSource | None = None,
) -> Rotation:
    """Prepare a new issuing CA under a registered root (default: the newest one whose key is registered).

    The root signs with its registered key, a file (``file:``) or a KMS key (``kms:``, through ``kms``).
    The new issuer's key is a new encrypted file in ``ca_dir``, or with ``kms_key`` a KMS key (found or
    created through ``kms``; registered as ``kms:<key ARN>``, no key file written).

    ``min_validity`` is the longest role ``max_ttl``. The new issuer is named ``common_name``, by
    default ``<trust_domain> Issuing CA <date>``. A prepared issuer that never signed blocks a second
    one unless ``force``, which retires it in the same transaction. ``passphrase`` is called only once
    the root key file has been found, and for a new key file: never when both keys are in KMS.

    Raises ClientError ``validity_too_short``, ``root_expires_too_soon``, ``issuer_prepared_exists``,
    ``issuer_name_taken``, ``root_ambiguous``; NotFound ``root_not_found``; ConfigError
    ``root_key_unavailable`` (the root key is offline: the one-line detail says where it was expected)
    and ``root_key_mismatch``; the ``ca.files`` key errors; for KMS keys the errors of
    :func:`~issuer.service.ca.kms.obtain_kms_key` and ``ca.kms_client``, naming the key.
    """
    # The asked-for validity first, before any I/O; what the root allows is checked once it is chosen.
    check_rotation(validity=validity, effective=validity, min_validity=min_validity, root_expiry=now + validity)
    async with sessions() as session:
        issuers = await store.list_issuers(session)
        roots = await store.list_roots(session)
    if not roots:
        # Roots without issuers are fine: `issuer ca adopt` leaves a retired issuer out, and this rotates.
        raise ConfigError("the CA registry is empty; create a CA with `issuer ca init` first")
    pending = [r for r in issuers if phase_of(r, now=now) == "prepared"]
    if pending and not force:
        raise ClientError(
            f"issuer {pending[0].subject} ({short(pending[0].fingerprint_sha256)}) is already prepared "
            f"(since {pending[0].created_at:%Y-%m-%d %H:%MZ}); activate it (`issuer ca activate`), "
            "or --force to replace it",
            code="issuer_prepared_exists",
        )
    root_record = _pick_root(roots, root)
    name = _issuer_name(common_name, trust_domain=trust_domain, now=now, issuers=issuers)
    if kms_key is not None and kms is None:
        raise ValueError("a KMS issuing key needs a KMS client source")
    certified_root = await asyncio.to_thread(
        ca_registry.load_root_key, root_record, ca_dir=ca_dir, passphrase=passphrase, kms=kms
    )
    check_rotation(
        validity=validity,
        effective=min(now + validity, root_record.not_after) - now,
        min_validity=min_validity,
        root_expiry=root_record.not_after,
    )
    key_path: Path | None = None
    key_ref: str | None = None
    created_kms_key: str | None = None
    if kms_key is None:
        if not isinstance(certified_root, CertifiedKey):
            raise ConfigError(
                f"the root {root_record.subject} signs in AWS KMS, which certifies only KMS issuing keys here; "
                "add --kms-key KEY or --create-kms-key ALIAS",
                code="issuer_key_kind",
            )
        issuing = create_issuing(
            certified_root,
            now=now,
            validity=validity,
            common_name=name,
            organization=ca_registry.organization_of(certified_root),
        )
        certificate = issuing.certificate
        key_path = ca_registry.write_issuer_key(issuing, ca_dir=ca_dir, passphrase=passphrase())
        certificate_path = key_path.with_name(key_path.name.removesuffix(".key.pem") + ".pem")
    else:
        assert kms is not None  # checked before any I/O
        made = await new_kms_issuer(certified_root, kms, kms_key, ca_dir=ca_dir, now=now, validity=validity, name=name)
        certificate, certificate_path, key_ref = made.certificate, made.certificate_path, made.key.key_ref
        created_kms_key = made.key.arn if made.key.created else None
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    try:
        async with sessions() as session, session.begin():
            await store.lock_registry(session)
            pending = [r for r in await store.list_issuers(session) if phase_of(r, now=now) == "prepared"]
            if pending and not force:
                raise ClientError(
                    f"issuer {pending[0].subject} was prepared meanwhile; look with `issuer ca status`",
                    code="issuer_prepared_exists",
                )
            stamp = await ca_registry.change_stamp(session, now)
            for record in pending:
                await store.retire_prepared_issuer(session, issuer_id=record.id, now=stamp)
            await ca_registry.insert_prepared(
                session, certificate, key_path=key_path, key_ref=key_ref, ca_dir=ca_dir, now=stamp
            )
            (created,) = await store.get_issuer(session, fingerprint_prefix=fingerprint)
    except BaseException:
        # Never leave a key behind that the registry does not name (a KMS key cannot be deleted at once).
        if key_path is not None:
            key_path.unlink(missing_ok=True)
        certificate_path.unlink(missing_ok=True)
        raise
    return Rotation(
        issuer=created,
        root=root_record,
        key_path=key_path,
        replaced=tuple(pending),
        certificate_path=certificate_path,
        created_kms_key=created_kms_key,
    )


async def activate(
    sessions: Sessions,
    *,
    fingerprint: str | None,
    now: datetime,
    min_validity: timedelta,
    load_signer: SignerLoader | None = None,
    before_switch: Callable[[IssuerRecord], Awaitable[None]] | None = None,
    force: bool = False,
) -> Activation:
    """Make the prepared issuer named by ``fingerprint`` (default: the only one never activated) the active one.

    Before switching, checks that the truststore (as ``issuer truststore export`` writes it) holds the
    issuer and a root it chains to, and — with ``load_signer`` — that its key loads here. Then
    ``before_switch`` (e.g. publishing the truststore) runs; if it raises, nothing is switched.
    Naming a ``previous`` issuer's fingerprint rolls back to it.

    Raises NotFound ``no_prepared_issuer`` / ``issuer_not_found``; ClientError ``issuer_ambiguous``,
    ``issuer_not_in_truststore`` and the refusals of :func:`~issuer.service.ca.lifecycle.check_activation`
    (``issuer_expires_too_soon`` only without ``force``); whatever ``load_signer`` or ``before_switch`` raise.
    """
    async with sessions() as session:
        issuers = await store.list_issuers(session)
        roots = await store.list_roots(session)
        counts = await leaf_counts(session, now=now)
    if fingerprint is None:
        pending = [r for r in issuers if phase_of(r, now=now) == "prepared"]
        if not pending:
            raise NotFound(
                "no prepared issuer to activate; run `issuer ca rotate` first "
                "(or name a previous issuer's fingerprint to roll back to it)",
                code="no_prepared_issuer",
            )
        if len(pending) > 1:
            listed = ", ".join(short(r.fingerprint_sha256) for r in pending)
            raise ClientError(f"{len(pending)} issuers are prepared ({listed}); name one", code="issuer_ambiguous")
        record = pending[0]
    else:
        record = match_fingerprint(issuers, fingerprint, kind="issuer")
    check_activation(record, now=now, min_validity=min_validity, force=force)
    chain = certificates_of(record)
    truststore = x509.load_pem_x509_certificates(truststore_of(issuers, roots, now=now))
    _check_trusted(record, chain, truststore)
    if load_signer is not None:
        root_certs = tuple(x509.load_pem_x509_certificate(r.certificate_pem.encode()) for r in roots)
        await load_signer(record, certificate=chain[0], chain=chain, roots=root_certs)
    if before_switch is not None:
        await before_switch(record)
    previous = next((r for r in issuers if r.state == "active"), None)
    await ca_registry.activate_issuer(sessions, fingerprint_prefix=record.fingerprint_sha256, now=now)
    return Activation(
        issuer=record,
        previous=previous,
        previous_leaves=counts.get(previous.id, LeafCounts()) if previous else LeafCounts(),
        truststore_certificates=len(truststore),
        warnings=tuple(activation_warnings(record, now=now)),
    )


async def retire(
    sessions: Sessions, *, fingerprint: str, now: datetime, settle: timedelta, force: bool = False
) -> Retirement:
    """Take the issuer named by ``fingerprint`` out of the truststore for good (state ``retired``).

    Refused while it has live leaves (unexpired, unrevoked) or signed within ``settle`` — unless
    ``force`` — and always for the active issuer. The check and the change are one transaction
    under the registry lock, so an issuer activated meanwhile is never retired.

    Raises NotFound ``issuer_not_found``; ClientError ``fingerprint_invalid``, ``issuer_ambiguous``
    and the refusals of :func:`~issuer.service.ca.lifecycle.check_retirement`.
    """
    async with sessions() as session, session.begin():
        await store.lock_registry(session)
        record = match_fingerprint(await store.list_issuers(session), fingerprint, kind="issuer")
        leaves = (await leaf_counts(session, now=now)).get(record.id, LeafCounts())
        overridden = None
        try:
            check_retirement(record, leaves, now=now, settle=settle, force=False)
        except IssuerError as exc:
            if not force or exc.code in ("issuer_active", "issuer_retired"):
                raise
            overridden = exc.detail
        stamp = await ca_registry.change_stamp(session, now)
        if not await store.retire_prepared_issuer(session, issuer_id=record.id, now=stamp):
            raise ClientError(f"issuer {record.subject} changed meanwhile; look again", code="issuer_active")
    return Retirement(issuer=record, leaves=leaves, overridden=overridden)


def _pick_root(roots: Sequence[RootRecord], wanted: str | None) -> RootRecord:
    active = [r for r in roots if r.state == "active"]
    if wanted is not None:
        return match_fingerprint(active, wanted, kind="root", among="active")
    with_keys = [r for r in active if r.key_ref]
    if not with_keys:
        raise ConfigError(
            "no active root has a registered key; register one with `issuer ca add-root PEM --key FILE`",
            code="root_key_unavailable",
        )
    return max(with_keys, key=lambda r: (r.not_before, r.id))


def _issuer_name(wanted: str | None, *, trust_domain: str, now: datetime, issuers: Sequence[IssuerRecord]) -> str:
    taken = {
        attribute.value
        for record in issuers
        if record.state != "retired"
        for attribute in x509.load_pem_x509_certificate(record.certificate_pem.encode()).subject
        if attribute.oid == x509.NameOID.COMMON_NAME
    }
    if wanted is not None:
        if wanted in taken:
            # Two live issuers with one name make chain building depend on key identifiers alone.
            raise ClientError(
                f"an issuer named {wanted!r} is still in use; pick another name", code="issuer_name_taken"
            )
        return wanted
    base = f"{trust_domain} Issuing CA {now:%Y-%m-%d}"
    return next(name for n in range(1, 1000) if (name := base if n == 1 else f"{base} ({n})") not in taken)


def _check_trusted(
    record: IssuerRecord, chain: tuple[x509.Certificate, ...], truststore: Sequence[x509.Certificate]
) -> None:
    held = {c.fingerprint(hashes.SHA256()) for c in truststore}
    top = chain[-1]
    anchored = any(issued_by(top, anchor) for anchor in truststore)
    if chain[0].fingerprint(hashes.SHA256()) not in held or not anchored:
        raise ClientError(
            f"the truststore does not hold issuer {record.subject} and a root it chains to; "
            "API Gateway would refuse its leaves (`issuer ca status`)",
            code="issuer_not_in_truststore",
        )
