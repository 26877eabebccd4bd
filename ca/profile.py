"""The certificate profiles: what a leaf, the root and the issuing CA contain.

Each function returns an *unsigned* ``x509.CertificateBuilder``; a signer backend
signs it with a key wherever that key lives. The leaf profile is the one API
Gateway's mutual TLS accepts (DESIGN §5): nothing in it comes from the CSR
except the public key.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.errors import CAStateError

__all__ = [
    "LeafTemplate",
    "authority_key_id",
    "issuing_builder",
    "leaf_builder",
    "leaf_subject",
    "leaf_validity",
    "organization_of",
    "root_builder",
    "utc_seconds",
]

# RFC 5280 ub-common-name; cryptography refuses longer ones with a less helpful message.
_MAX_CN: Final = 64
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_DNS_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class LeafTemplate:
    """What a leaf certificate says, decided by policy from the verified identity.

    Keyword-only. Times must be timezone-aware; they are normalised to UTC and whole seconds
    (X.509 carries no fractions). Raises ``ValueError`` when a field cannot be
    put in a certificate (a programming error in the caller, not a client error).
    """

    common_name: str
    uri_sans: tuple[str, ...]
    dns_sans: tuple[str, ...] = ()
    not_before: datetime
    not_after: datetime
    # The role the certificate was issued under (OU=), so relying parties can authorise by it.
    organizational_unit: str | None = None

    def __post_init__(self) -> None:
        if not self.common_name or len(self.common_name) > _MAX_CN:
            raise ValueError(f"common_name must be 1 to {_MAX_CN} characters, got {self.common_name!r}")
        if self.organizational_unit is not None and not 0 < len(self.organizational_unit) <= _MAX_CN:
            raise ValueError(f"organizational_unit must be 1 to {_MAX_CN} characters, got {self.organizational_unit!r}")
        if not self.uri_sans and not self.dns_sans:
            raise ValueError("a leaf needs at least one URI or DNS subject alternative name")
        for uri in self.uri_sans:
            if not uri.isascii() or not _URI_SCHEME.match(uri):
                raise ValueError(f"URI SAN {uri!r} is not an ASCII URI with a scheme")
        for name in self.dns_sans:
            if not name.isascii() or not _DNS_NAME.match(name):
                raise ValueError(f"DNS SAN {name!r} is not an ASCII (A-label) DNS name")
        not_before = utc_seconds(self.not_before, "not_before")
        not_after = utc_seconds(self.not_after, "not_after")
        if not_after <= not_before:
            raise ValueError(f"not_after {not_after.isoformat()} is not after not_before {not_before.isoformat()}")
        object.__setattr__(self, "not_before", not_before)
        object.__setattr__(self, "not_after", not_after)


def leaf_builder(
    template: LeafTemplate,
    public_key: CertificatePublicKeyTypes,
    *,
    issuer: x509.Certificate,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    """An unsigned client-certificate builder for ``public_key``, issued by ``issuer``.

    The validity is clamped into the issuer's (a leaf never outlives its CA); the
    subject is the issuer's O (if it has one), the template's OU (the role) and CN. Raises
    :class:`CAStateError` ``ca_expired`` when nothing of the window is left.
    """
    not_before, not_after = leaf_validity(template, issuer=issuer)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in template.uri_sans]
    sans += [x509.DNSName(d) for d in template.dns_sans]
    base, organization, aki = _leaf_base(issuer)
    return (
        base.serial_number(serial if serial is not None else x509.random_serial_number())
        .subject_name(_name(template.common_name, organization, template.organizational_unit))
        .public_key(public_key)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
        # The subject carries a CN, so RFC 5280 lets the SAN be non-critical.
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )


@functools.lru_cache(maxsize=32)
def _leaf_base(issuer: x509.Certificate) -> tuple[x509.CertificateBuilder, str | None, x509.AuthorityKeyIdentifier]:
    """What every leaf of ``issuer`` shares (builders are immutable, so one serves every issuance)."""
    base = (
        x509.CertificateBuilder()
        .issuer_name(issuer.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    return base, organization_of(issuer), authority_key_id(issuer)


def leaf_validity(template: LeafTemplate, *, issuer: x509.Certificate) -> tuple[datetime, datetime]:
    """The leaf's (NotBefore, NotAfter): the template's window clamped into the issuer's.

    Raises :class:`CAStateError` ``ca_expired`` when nothing of the window is left.
    """
    not_before = max(template.not_before, issuer.not_valid_before_utc)
    not_after = min(template.not_after, issuer.not_valid_after_utc)
    if not_after <= not_before:
        raise CAStateError(
            f"The issuing CA is valid until {issuer.not_valid_after_utc.isoformat()}; "
            "it cannot issue a certificate for this period. Rotate the CA.",
            code="ca_expired",
        )
    return not_before, not_after


def leaf_subject(template: LeafTemplate, *, issuer: x509.Certificate) -> x509.Name:
    """The leaf's subject: the issuer's O (if it has one), the template's OU (the role) and CN."""
    return _name(template.common_name, organization_of(issuer), template.organizational_unit)


def root_builder(
    public_key: CertificatePublicKeyTypes,
    *,
    common_name: str,
    organization: str | None,
    not_before: datetime,
    not_after: datetime,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    """An unsigned self-signed root CA builder (sign it with the matching private key)."""
    name = _name(common_name, organization)
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    return (
        x509.CertificateBuilder()
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .not_valid_before(utc_seconds(not_before, "not_before"))
        .not_valid_after(utc_seconds(not_after, "not_after"))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        # Self-signed, so AKI = SKI; openssl and most chain builders use it to match issuers.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )


def issuing_builder(
    public_key: CertificatePublicKeyTypes,
    *,
    issuer: x509.Certificate,
    common_name: str,
    organization: str | None,
    not_before: datetime,
    not_after: datetime,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    """An unsigned issuing (intermediate) CA builder under ``issuer``, path length 0.

    Its validity is clamped into the issuer's. digitalSignature is set beside
    keyCertSign/cRLSign so the issuing key may sign OCSP responses directly.
    """
    not_before = max(utc_seconds(not_before, "not_before"), issuer.not_valid_before_utc)
    not_after = min(utc_seconds(not_after, "not_after"), issuer.not_valid_after_utc)
    if not_after <= not_before:
        raise CAStateError(
            f"The root CA is valid until {issuer.not_valid_after_utc.isoformat()}; "
            "it cannot certify an issuing CA for this period",
            code="ca_expired",
        )
    return (
        x509.CertificateBuilder()
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .subject_name(_name(common_name, organization))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_id(issuer), critical=False)
    )


def _name(common_name: str, organization: str | None, unit: str | None = None) -> x509.Name:
    if not common_name or len(common_name) > _MAX_CN:
        raise ValueError(f"common name must be 1 to {_MAX_CN} characters, got {common_name!r}")
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
    if unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def organization_of(issuer: x509.Certificate) -> str | None:
    """The first O= of ``issuer``'s subject, which its leaves carry too; None without one."""
    values = issuer.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = values[0].value if values else None
    return value if isinstance(value, str) else None


def authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI naming ``issuer``: its SKI, or one derived from its public key if it has none."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # Our CAs always carry an SKI; an imported one might not, so derive it the RFC 5280 way.
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def utc_seconds(value: datetime, field: str) -> datetime:
    """``value`` in UTC without microseconds; ``ValueError`` naming ``field`` if it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC).replace(microsecond=0)
