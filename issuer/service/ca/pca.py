"""CA set-up around AWS Private CA: ``issuer ca init --aws-pca-arn`` and ``issuer ca rotate --aws-pca-arn``.

The issuing CA is a Private CA that already exists (created, its certificate installed, ACTIVE):
its certificate and chain come from ``GetCertificateAuthorityCertificate``; the registry stores
it as ``pca:<CA ARN>`` with the chain's intermediates, and the chain's root in ``ca_roots`` (added
if it is not registered yet: a side-by-side root, in ``GET /v1/bundle`` and the truststore like
any other). From then on the truststore holds the Private CA and its chain like any issuer.
Nothing secret is stored or written: replicas need only ``acm-pca:IssueCertificate``,
``GetCertificate``, ``DescribeCertificateAuthority``, ``GetCertificateAuthorityCertificate`` and
``RevokeCertificate`` on the CA, and ``s3:GetObject`` on its CRL.

Refused: a CA that is not ACTIVE (``pca_not_active``), whose chain does not reach a self-signed
root (``pca_chain_incomplete``), whose certificate is not a CA's or whose key Private CA cannot sign
with (``pca_certificate_unusable``), that expires before the longest role ``max_ttl``
(``validity_too_short``), or that is in short-lived certificate mode (at most 7-day leaves) while a
role's ``max_ttl`` is longer (``pca_short_lived_mode``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.pca_client import pca_ca_certificate, pca_describe, signing_algorithm_for
from issuer.durations import format_duration
from issuer.errors import ClientError, ConfigError
from issuer.service.ca.kms import clear_ca_dir, write_certificates
from issuer.service.ca.lifecycle import issued_by, phase_of, short, when
from issuer.service.ca.marker import Marker, database_of, write_marker
from issuer.service.ca.register import (
    RegisteredCA,
    add_issuer_certificate,
    add_root_certificate,
    change_stamp,
    registered_ca,
)
from issuer.service.ca.rotation import Rotation
from issuer.service.ca.signers import PcaClientSource, pca_key_ref
from issuer.store import issuers as store
from issuer.store.records import IssuerRecord

__all__ = ["PcaCA", "PcaIssuer", "init_pca_ca", "prepare_pca_issuer", "read_pca_issuer"]

Sessions = async_sessionmaker[AsyncSession]
SHORT_LIVED_MAX: Final = timedelta(days=7)  # what a CA in short-lived certificate mode may issue


@dataclass(frozen=True, slots=True)
class PcaIssuer:
    """A Private CA as registered: its ARN, certificate, intermediates up to (not including) its root, the root."""

    arn: str
    certificate: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    root: x509.Certificate
    usage_mode: str
    crl_bucket: str | None

    @property
    def key_ref(self) -> str:
        return pca_key_ref(self.arn)


@dataclass(frozen=True, slots=True)
class PcaCA:
    """What :func:`init_pca_ca` registered, and the files it wrote for operators."""

    registered: RegisteredCA
    issuer: PcaIssuer
    files: tuple[Path, ...]


def read_pca_issuer(client: Any, arn: str, *, now: datetime, min_validity: timedelta) -> PcaIssuer:
    """Describe the Private CA ``arn`` and fetch its certificate and chain, checked (see the module). Blocking.

    Raises ClientError with the codes of the module docstring, and the ``ca.pca_client`` errors
    (SignerUnavailable, SignerDenied) naming the CA.
    """
    pca_key_ref(arn)  # a CA ARN, or ValueError
    authority = pca_describe(client, arn)
    status = str(authority.get("Status", ""))
    if status != "ACTIVE":
        raise ClientError(
            f"AWS Private CA {arn} is {status or 'in an unknown state'}; only an ACTIVE CA (its certificate "
            "installed) can issue",
            code="pca_not_active",
        )
    certificate, chain = pca_ca_certificate(client, arn)
    intermediates, root = _path_to_root(certificate, chain, arn)
    _check_ca_certificate(certificate, arn)
    if certificate.not_valid_after_utc - now < min_validity:
        raise ClientError(
            f"AWS Private CA {arn} expires {when(certificate.not_valid_after_utc)}, before the longest role "
            f"max_ttl ({format_duration(min_validity)}) from now; renew its certificate first",
            code="validity_too_short",
        )
    usage_mode = str(authority.get("UsageMode") or "GENERAL_PURPOSE")
    if usage_mode == "SHORT_LIVED_CERTIFICATE" and min_validity > SHORT_LIVED_MAX:
        raise ClientError(
            f"AWS Private CA {arn} is in short-lived certificate mode (leaves of at most 7 days) but a role's "
            f"max_ttl is {format_duration(min_validity)}; lower the roles' max_ttl or use a general-purpose CA",
            code="pca_short_lived_mode",
        )
    return PcaIssuer(
        arn=arn,
        certificate=certificate,
        intermediates=intermediates,
        root=root,
        usage_mode=usage_mode,
        crl_bucket=_crl_bucket(authority),
    )


async def init_pca_ca(
    sessions: Sessions,
    *,
    arn: str,
    clients: PcaClientSource,
    ca_dir: Path,
    now: datetime,
    min_validity: timedelta,
    force: bool = False,
) -> PcaCA:
    """Register the Private CA ``arn`` as the active issuer of an empty registry (and its root as the root).

    Writes ``root.pem`` and ``issuing.pem`` (the CA and its intermediates) to ``ca_dir`` for operators;
    refused while CA files are there unless ``force``, and while the registry has an issuer.
    Raises ClientError ``ca_exists`` and the errors of :func:`read_pca_issuer`.
    """
    _check_arn(arn)
    async with sessions() as session:
        if await store.list_issuers(session):
            raise ClientError("the CA registry already has an issuing CA; rotate it instead", code="ca_exists")
    files = clear_ca_dir(ca_dir, force=force)
    issuer = await _read(clients, arn, now=now, min_validity=min_validity)
    async with sessions() as session, session.begin():
        await store.lock_registry(session)
        if await store.list_issuers(session):
            raise ClientError("another `issuer ca init` registered a CA meanwhile", code="ca_exists")
        stamp = await change_stamp(session, now)
        await add_root_certificate(session, issuer.root, key_ref=None, now=stamp)
        issuer_id = await add_issuer_certificate(
            session, issuer.certificate, chain=issuer.intermediates, key_ref=issuer.key_ref, state="active", now=stamp
        )
    written = (
        write_certificates(files.root_cert_path, [issuer.root]),
        write_certificates(files.issuing_cert_path, [issuer.certificate, *issuer.intermediates]),
    )
    # The directory now names a registered CA: serving it against an empty database is refused.
    fingerprint = issuer.certificate.fingerprint(hashes.SHA256()).hex()
    write_marker(ca_dir, Marker(issuer=fingerprint, registered_at=now.isoformat(), database=database_of(sessions)))
    return PcaCA(registered=registered_ca(issuer_id, issuer.certificate), issuer=issuer, files=written)


async def prepare_pca_issuer(
    sessions: Sessions,
    *,
    arn: str,
    clients: PcaClientSource,
    ca_dir: Path,
    now: datetime,
    min_validity: timedelta,
    force: bool = False,
) -> tuple[Rotation, bool]:
    """Register the Private CA ``arn`` as a ``prepared`` issuer (``issuer ca activate`` switches to it).

    Its root is registered too when it is not yet (the second value says whether it was added).
    A prepared issuer that never signed blocks this unless ``force``, which retires it in the same
    transaction. Raises ClientError ``issuer_prepared_exists``, ``issuer_exists``, ``root_retired``,
    ConfigError for an empty registry, and the errors of :func:`read_pca_issuer`.
    """
    _check_arn(arn)
    async with sessions() as session:
        issuers = await store.list_issuers(session)
    if not issuers:
        raise ConfigError("the CA registry is empty; create a CA with `issuer ca init` first")
    _refuse_pending(issuers, now=now, force=force)
    issuer = await _read(clients, arn, now=now, min_validity=min_validity)
    fingerprint = issuer.certificate.fingerprint(hashes.SHA256()).hex()
    root_fingerprint = issuer.root.fingerprint(hashes.SHA256()).hex()
    async with sessions() as session, session.begin():
        await store.lock_registry(session)
        current = await store.list_issuers(session)
        if any(r.fingerprint_sha256 == fingerprint for r in current):
            raise ClientError(f"AWS Private CA {arn} is registered already (`issuer ca status`)", code="issuer_exists")
        pending = _refuse_pending(current, now=now, force=force)
        roots = {r.fingerprint_sha256: r for r in await store.list_roots(session)}
        known = roots.get(root_fingerprint)
        if known is not None and known.state != "active":
            raise ClientError(
                f"the root of AWS Private CA {arn} ({known.subject}) was retired here; its leaves would not be trusted",
                code="root_retired",
            )
        stamp = await change_stamp(session, now)
        for record in pending:
            await store.retire_prepared_issuer(session, issuer_id=record.id, now=stamp)
        await add_root_certificate(session, issuer.root, key_ref=None, now=stamp)
        await add_issuer_certificate(
            session, issuer.certificate, chain=issuer.intermediates, key_ref=issuer.key_ref, state="prepared", now=stamp
        )
        (created,) = await store.get_issuer(session, fingerprint_prefix=fingerprint)
        (root_record,) = await store.get_root(session, fingerprint_prefix=root_fingerprint)
    path = write_certificates(ca_dir / f"issuing-{fingerprint[:16]}.pem", [issuer.certificate, *issuer.intermediates])
    rotation = Rotation(issuer=created, root=root_record, key_path=None, replaced=tuple(pending), certificate_path=path)
    return rotation, known is None


def _check_arn(arn: str) -> None:
    try:
        pca_key_ref(arn)
    except ValueError as exc:
        raise ClientError(str(exc), code="pca_arn_invalid") from None


async def _read(clients: PcaClientSource, arn: str, *, now: datetime, min_validity: timedelta) -> PcaIssuer:
    try:
        client = clients.for_ca(arn)
    except ValueError as exc:
        raise ClientError(str(exc), code="pca_arn_invalid") from None
    try:
        return await asyncio.to_thread(read_pca_issuer, client, arn, now=now, min_validity=min_validity)
    except ValueError as exc:
        raise ClientError(str(exc), code="pca_arn_invalid") from None


def _refuse_pending(issuers: Sequence[IssuerRecord], *, now: datetime, force: bool) -> list[IssuerRecord]:
    pending = [r for r in issuers if phase_of(r, now=now) == "prepared"]
    if pending and not force:
        raise ClientError(
            f"issuer {pending[0].subject} ({short(pending[0].fingerprint_sha256)}) is already prepared; activate it "
            "(`issuer ca activate`), or --force to replace it",
            code="issuer_prepared_exists",
        )
    return pending


def _path_to_root(
    certificate: x509.Certificate, chain: Sequence[x509.Certificate], arn: str
) -> tuple[tuple[x509.Certificate, ...], x509.Certificate]:
    """The intermediates from ``certificate`` up to its self-signed root (in chain order, whatever order
    Private CA sent them in), and the root."""
    path = [certificate]
    pool = list(chain)
    while not issued_by(path[-1], path[-1]):
        parent = next((c for c in pool if issued_by(path[-1], c)), None)
        if parent is None or len(path) > 4:
            raise ClientError(
                f"the chain of AWS Private CA {arn} does not reach a self-signed root "
                f"(stuck at {path[-1].issuer.rfc4514_string()}); install the CA certificate with its full chain",
                code="pca_chain_incomplete",
            )
        path.append(parent)
        pool.remove(parent)
    if len(path) == 1:
        return (), certificate  # a root CA issuing leaves itself: it is its own root
    return tuple(path[1:-1]), path[-1]


def _check_ca_certificate(certificate: x509.Certificate, arn: str) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise ClientError(
            f"the certificate of AWS Private CA {arn} lacks extension {exc.oid.dotted_string}; it is not a CA's",
            code="pca_certificate_unusable",
        ) from None
    if not constraints.ca or not usage.key_cert_sign:
        raise ClientError(
            f"the certificate of AWS Private CA {arn} may not sign certificates (CA:{constraints.ca}, "
            f"keyCertSign:{usage.key_cert_sign})",
            code="pca_certificate_unusable",
        )
    try:
        signing_algorithm_for(certificate)
    except ValueError as exc:
        raise ClientError(f"AWS Private CA {arn}: {exc}", code="pca_certificate_unusable") from None


def _crl_bucket(authority: Mapping[str, Any]) -> str | None:
    config = (authority.get("RevocationConfiguration") or {}).get("CrlConfiguration") or {}
    return str(config["S3BucketName"]) if config.get("Enabled") and config.get("S3BucketName") else None
