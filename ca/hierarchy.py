"""Creating CA key pairs and certificates in memory: a root, and issuing CAs under it.

Nothing here touches the disk (``ca.files`` stores what this creates); time is a
parameter. The root is ECDSA P-384 signed with SHA-384, the issuing CA ECDSA
P-256 signed by the root with SHA-384.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509

from ca.keys import PrivateKey, generate_private_key, signature_hash_for
from ca.profile import issuing_builder, root_builder, utc_seconds
from ca.signer import LocalFileSigner, Serials

__all__ = [
    "CA_BACKDATE",
    "DEFAULT_ISSUING_COMMON_NAME",
    "DEFAULT_ROOT_COMMON_NAME",
    "ISSUING_VALIDITY",
    "ROOT_VALIDITY",
    "CAHierarchy",
    "CertifiedKey",
    "create_hierarchy",
    "create_issuing",
    "create_root",
]

ROOT_VALIDITY: Final = timedelta(days=3653)  # ten years, leap days included
ISSUING_VALIDITY: Final = timedelta(days=365)
# CA certificates start a little before "now" so a relying party whose clock lags
# does not see a CA that is not yet valid (leaves are backdated 60 s by policy).
CA_BACKDATE: Final = timedelta(minutes=5)
DEFAULT_ROOT_COMMON_NAME: Final = "Issuer Root CA"
DEFAULT_ISSUING_COMMON_NAME: Final = "Issuer Issuing CA"


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """A CA certificate and its private key."""

    certificate: x509.Certificate
    key: PrivateKey

    def __repr__(self) -> str:
        return f"CertifiedKey({self.certificate.subject.rfc4514_string()!r})"


@dataclass(frozen=True, slots=True)
class CAHierarchy:
    """A root and the issuing CA it certified."""

    root: CertifiedKey
    issuing: CertifiedKey

    def signer(self, *, serials: Serials = x509.random_serial_number) -> LocalFileSigner:
        """A signer issuing from this hierarchy's issuing CA, trusting its root (``serials``: its serial source)."""
        return LocalFileSigner(
            issuer_certificate=self.issuing.certificate,
            issuer_key=self.issuing.key,
            roots=(self.root.certificate,),
            serials=serials,
        )


def create_root(
    *,
    now: datetime,
    validity: timedelta = ROOT_VALIDITY,
    common_name: str = DEFAULT_ROOT_COMMON_NAME,
    organization: str | None = None,
) -> CertifiedKey:
    """A new self-signed ECDSA P-384 root, valid from ``now`` − 5 min for ``validity``."""
    start = utc_seconds(now, "now") - CA_BACKDATE
    key = generate_private_key("ec-p384")
    builder = root_builder(
        key.public_key(),
        common_name=common_name,
        organization=organization,
        not_before=start,
        not_after=start + CA_BACKDATE + validity,
    )
    return CertifiedKey(builder.sign(key, signature_hash_for(key)), key)


def create_issuing(
    root: CertifiedKey,
    *,
    now: datetime,
    validity: timedelta = ISSUING_VALIDITY,
    common_name: str = DEFAULT_ISSUING_COMMON_NAME,
    organization: str | None = None,
) -> CertifiedKey:
    """A new ECDSA P-256 issuing CA (path length 0) certified by ``root``.

    Its validity, from ``now`` − 5 min for ``validity``, is clamped into the
    root's. Raises ``CAStateError`` ``ca_expired`` if the root has expired.
    """
    start = utc_seconds(now, "now") - CA_BACKDATE
    key = generate_private_key("ec-p256")
    builder = issuing_builder(
        key.public_key(),
        issuer=root.certificate,
        common_name=common_name,
        organization=organization,
        not_before=start,
        not_after=start + CA_BACKDATE + validity,
    )
    return CertifiedKey(builder.sign(root.key, signature_hash_for(root.key)), key)


def create_hierarchy(
    *,
    now: datetime,
    root_validity: timedelta = ROOT_VALIDITY,
    issuing_validity: timedelta = ISSUING_VALIDITY,
    root_common_name: str = DEFAULT_ROOT_COMMON_NAME,
    issuing_common_name: str = DEFAULT_ISSUING_COMMON_NAME,
    organization: str | None = None,
) -> CAHierarchy:
    """A new root and an issuing CA under it, both named with ``organization`` (O=) if given."""
    root = create_root(now=now, validity=root_validity, common_name=root_common_name, organization=organization)
    issuing = create_issuing(
        root, now=now, validity=issuing_validity, common_name=issuing_common_name, organization=organization
    )
    return CAHierarchy(root=root, issuing=issuing)
