"""Checking a certificate a remote signer returned against what was asked for, before anyone uses it.

A backend that builds the certificate itself (AWS Private CA: it applies a template, the API
passthrough and the validity it was sent) is trusted to sign, not to get the content right:
a wrong template, a CA configured to copy the CSR's names, a validity unit mixed up, or an
emulator that ignores half the request would otherwise hand a machine a certificate policy
never decided. :func:`check_issued` compares the result with the :class:`~ca.signer.SigningRequest`
and the leaf profile (DESIGN §5); any difference is :class:`~ca.errors.SignerResultRejected`
(502) — the certificate is neither recorded nor answered.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from ca.errors import SignerResultRejected
from ca.profile import leaf_subject, leaf_validity
from ca.signer import SigningRequest

__all__ = ["DEFAULT_TOLERANCE", "PUBLIC_DETAIL", "check_issued"]

# How far the backend's NotBefore may stray either way, and how much shorter its NotAfter may be.
DEFAULT_TOLERANCE: Final = timedelta(minutes=2)
PUBLIC_DETAIL: Final = "The CA returned a certificate that does not match the request; nothing was issued."
# clientAuth is required; serverAuth is tolerated because some CA templates always add it.
_ALLOWED_EKUS: Final = frozenset({ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH})
# Extensions a relying party must understand; any other critical one could make the leaf unusable or mean more.
_MAY_BE_CRITICAL: Final = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    }
)


def check_issued(
    certificate: x509.Certificate,
    request: SigningRequest,
    *,
    issuer: x509.Certificate,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Return if ``certificate`` is the leaf ``request`` asks ``issuer`` for; raise otherwise.

    Checked: the issuer's signature and name; the public key is the request's; the subject and
    the subject alternative names are exactly the template's; CA:FALSE; key usage without
    certificate or CRL signing; extended key usage with clientAuth (serverAuth tolerated,
    nothing else); no unknown critical extension; NotBefore within ``tolerance`` of the
    template's, NotAfter no later than the template's (clamped to the issuer, as a local
    signer would) and at most ``tolerance`` earlier. Raises :class:`SignerResultRejected`
    whose ``reason`` names the first difference.
    """
    problem = _first_problem(certificate, request, issuer=issuer, tolerance=tolerance)
    if problem is not None:
        raise SignerResultRejected(
            PUBLIC_DETAIL,
            reason=f"serial {certificate.serial_number:x} from {issuer.subject.rfc4514_string()}: {problem}",
        )


def _first_problem(
    certificate: x509.Certificate, request: SigningRequest, *, issuer: x509.Certificate, tolerance: timedelta
) -> str | None:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        return f"not signed by the issuing CA ({type(exc).__name__}: {exc})"
    if _spki(certificate.public_key()) != _spki(request.public_key):
        return "its public key is not the CSR's"
    return (
        _subject_problem(certificate, request, issuer)
        or _names_problem(certificate, request)
        or _usage_problem(certificate)
        or _validity_problem(certificate, request, issuer, tolerance)
    )


def _subject_problem(certificate: x509.Certificate, request: SigningRequest, issuer: x509.Certificate) -> str | None:
    expected = leaf_subject(request.template, issuer=issuer)
    # A CA may order the attributes its own way; what they say must be the same.
    if sorted(_attributes(certificate.subject)) != sorted(_attributes(expected)):
        return f"subject {certificate.subject.rfc4514_string()!r}, asked for {expected.rfc4514_string()!r}"
    return None


def _names_problem(certificate: x509.Certificate, request: SigningRequest) -> str | None:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subject alternative names"
    template = request.template
    expected = {("URI", u) for u in template.uri_sans} | {("DNS", d) for d in template.dns_sans}
    found: set[tuple[str, str]] = set()
    for name in san:
        if isinstance(name, x509.UniformResourceIdentifier):
            found.add(("URI", name.value))
        elif isinstance(name, x509.DNSName):
            found.add(("DNS", name.value))
        else:
            return f"a subject alternative name of a kind policy never gives: {name!r}"
    if found != expected or len(san) != len(expected):
        return f"subject alternative names {sorted(found)}, asked for {sorted(expected)}"
    return None


def _usage_problem(certificate: x509.Certificate) -> str | None:
    extensions = certificate.extensions
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "no basic constraints (a leaf must say CA:FALSE)"
    if constraints.ca:
        return "it is a CA certificate (CA:TRUE)"
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and (usage.key_cert_sign or usage.crl_sign or not usage.digital_signature):
        return f"key usage {usage!r}: it must allow digitalSignature and never certificate or CRL signing"
    try:
        ekus = set(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return "no extended key usage (clientAuth is required)"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
        return f"extended key usage {sorted(o.dotted_string for o in ekus)} lacks clientAuth"
    if not ekus <= _ALLOWED_EKUS:
        extra = sorted(o.dotted_string for o in ekus - _ALLOWED_EKUS)
        return f"extended key usage allows more than client (and server) authentication: {extra}"
    for extension in extensions:
        if extension.critical and extension.oid not in _MAY_BE_CRITICAL:
            return f"an unexpected critical extension {extension.oid.dotted_string}"
    return None


def _validity_problem(
    certificate: x509.Certificate, request: SigningRequest, issuer: x509.Certificate, tolerance: timedelta
) -> str | None:
    not_before, not_after = leaf_validity(request.template, issuer=issuer)
    got_before, got_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if abs(got_before - not_before) > tolerance:
        return f"NotBefore {_at(got_before)}, asked for {_at(not_before)}"
    if got_after > not_after:
        return f"NotAfter {_at(got_after)} is later than the {_at(not_after)} policy allows"
    if got_after < not_after - tolerance:
        return f"NotAfter {_at(got_after)}, asked for {_at(not_after)}"
    return None


def _attributes(name: x509.Name) -> list[tuple[str, str]]:
    return [(a.oid.dotted_string, str(a.value)) for a in name]


def _spki(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    return bytes(public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _at(value: datetime) -> str:
    return value.isoformat()
