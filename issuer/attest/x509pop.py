"""X.509 proof of possession (``x509pop``): a certificate from another CA, and a proof signed by its key.

For machines that already hold a certificate from an enterprise PKI or a device
certificate (SPIRE's ``x509pop``, step-ca's X5C, Vault's ``cert`` auth). The request carries

- ``chain``: PEM, the external leaf first, then any intermediates (the root is the role's);
- ``proof``: a compact JWS signed by the leaf's key (:mod:`issuer.attest.jws`), header
  ``{"alg", "typ"?, "kid"?}``, claims ``aud`` (this server's id), ``iat``/``exp`` (at most
  300 s apart), a single-use ``jti`` and ``csr_sha256`` (the new CSR's hash: a stolen proof
  gets no certificate for another key).

:func:`verify_x509pop` checks, in order, each with its code:

1. the chain is 1 to 8 PEM certificates (``x509pop_chain_malformed``, 400);
2. the leaf is valid now (``x509pop_certificate_expired``, ``x509pop_certificate_not_yet_valid``);
3. it is a client certificate: an extended key usage with clientAuth, and digitalSignature
   if it has a key usage (``x509pop_not_client_certificate``);
4. the chain builds to one of the role's trust anchors under RFC 5280 — signatures, every
   certificate's validity, CA constraints, clientAuth — with cryptography's client verifier;
   the leaf may lack a subjectAltName, as device certificates often do (``x509pop_chain_untrusted``);
5. the proof: algorithm and signature by the leaf's key, then the claims
   (``x509pop_proof_invalid``, ``x509pop_proof_expired``, ``x509pop_audience_mismatch``,
   ``x509pop_csr_mismatch``);
6. the new key is not the external one (``x509pop_key_reused``, 400): the certificate we
   issue must not share a key with one another CA can revoke or reissue.

All refusals are ``Unauthorized`` (401) unless said. Pure: ``now`` and the anchors are parameters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from issuer.attest import jws
from issuer.errors import ClientError, Unauthorized

__all__ = ["MAX_CHAIN", "ProvenCertificate", "X509PopProof", "certificate_facts", "verify_x509pop"]

MAX_CHAIN = 8
_HEADER_KEYS = frozenset({"alg", "typ", "kid"})
_REFUSALS: dict[jws.Kind, tuple[str, str]] = {
    "invalid": ("x509pop_proof_invalid", "The proof of possession is not valid."),
    "expired": ("x509pop_proof_expired", "The proof of possession has expired or is not yet valid; make a new one."),
    "audience": ("x509pop_audience_mismatch", "The proof of possession was made for another service."),
    "csr": ("x509pop_csr_mismatch", "The proof of possession was made for another CSR."),
}
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
# Web PKI rules for the leaf, but a subjectAltName may be absent (device certificates).
_LEAF_POLICY = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
)


@dataclass(frozen=True, slots=True)
class X509PopProof:
    """The chain and the proof as a client sent them (nothing in them trusted yet)."""

    chain_pem: str
    proof: str


@dataclass(frozen=True, slots=True)
class ProvenCertificate:
    """An external certificate the caller proved to hold, for this CSR, now."""

    leaf: x509.Certificate
    fingerprint: str  # SHA-256 of the leaf's DER, hex
    jti: str
    replayable_until: datetime


def verify_x509pop(
    submission: X509PopProof,
    *,
    anchors: Sequence[x509.Certificate],
    audience: str,
    csr_sha256_hex: str,
    csr_public_key_sha256_hex: str,
    now: datetime,
) -> ProvenCertificate:
    """Check ``submission`` against the trust ``anchors`` (see the module); what it proves.

    Raises :class:`Unauthorized` or :class:`ClientError` with the codes of the module.
    """
    leaf, intermediates = _chain(submission.chain_pem)
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
    where = f"certificate {fingerprint[:16]}… ({leaf.subject.rfc4514_string()[:200]})"
    if now > leaf.not_valid_after_utc:
        raise _refused("x509pop_certificate_expired", "The certificate has expired.", f"{where} expired")
    if now < leaf.not_valid_before_utc:
        raise _refused("x509pop_certificate_not_yet_valid", "The certificate is not valid yet.", f"{where} not yet")
    _check_client_usage(leaf, where)
    verifier = (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .time(now)
        .max_chain_depth(MAX_CHAIN)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_LEAF_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise _refused(
            "x509pop_chain_untrusted", "The certificate is not trusted for this role.", f"{where}: {exc}"
        ) from None
    try:
        parsed = jws.parse(submission.proof, header_keys=_HEADER_KEYS)
        jws.verify(parsed, leaf.public_key(), algorithms=jws.ALGORITHMS)
        possession = jws.check_claims(parsed.claims, audience=audience, csr_sha256_hex=csr_sha256_hex, now=now)
    except jws.JwsRefused as refused:
        code, detail = _REFUSALS[refused.kind]
        raise _refused(code, detail, f"{where}: {refused.reason}") from None
    if hashlib.sha256(leaf.public_key().public_bytes(*_SPKI)).hexdigest() == csr_public_key_sha256_hex:
        raise ClientError(
            "The new key must not be the external certificate's key; generate a new one.",
            code="x509pop_key_reused",
            reason=f"{where}: the CSR's key is the certificate's",
        )
    return ProvenCertificate(
        leaf=leaf, fingerprint=fingerprint, jti=possession.jti, replayable_until=possession.replayable_until
    )


def _refused(code: str, detail: str, reason: str) -> Unauthorized:
    return Unauthorized(detail, code=code, reason=f"{code}: {reason}")


def _chain(pem: str) -> tuple[x509.Certificate, list[x509.Certificate]]:
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode("ascii"))
        for certificate in certificates:
            # Parsed lazily by cryptography: a malformed name or extension must be a 400 here, not a 500 later.
            certificate.subject.rfc4514_string()
            certificate.issuer.rfc4514_string()
            list(certificate.extensions)
            certificate.public_key()
    except (
        ValueError,
        UnicodeEncodeError,
        UnsupportedAlgorithm,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        raise ClientError(
            "The chain must be PEM certificates, the machine's own first.",
            code="x509pop_chain_malformed",
            reason=f"not usable PEM certificates: {type(exc).__name__}: {str(exc)[:200]}",
        ) from None
    if not 1 <= len(certificates) <= MAX_CHAIN:
        raise ClientError(
            f"The chain must hold 1 to {MAX_CHAIN} certificates.",
            code="x509pop_chain_malformed",
            reason=f"{len(certificates)} certificates",
        )
    return certificates[0], certificates[1:]


def _check_client_usage(leaf: x509.Certificate, where: str) -> None:
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client = ExtendedKeyUsageOID.CLIENT_AUTH in usages
    except x509.ExtensionNotFound:
        client = False
    try:
        key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        signs = key_usage.digital_signature
    except x509.ExtensionNotFound:
        signs = True
    if not (client and signs):
        raise _refused(
            "x509pop_not_client_certificate",
            "The certificate is not for client authentication.",
            f"{where}: extended key usage clientAuth {'present' if client else 'missing'}, "
            f"digitalSignature {'allowed' if signs else 'missing'}",
        )


def certificate_facts(leaf: x509.Certificate) -> dict[str, str]:
    """What the leaf says, as identity attributes (strings).

    Single values (``cn``, ``o``, ``ou``, ``dns_san``, ``uri_san``, ``email_san``, ``issuer_cn``)
    are present only when the certificate has exactly one, so a template never picks one of
    several; ``serial`` (hex) and ``fingerprint`` (SHA-256 hex) always are. Every value of the
    matchable fields is kept as a JSON array (``organizations``, ``organizational_units``,
    ``dns_sans``, ``uri_sans``, ``email_sans``) for the role's matchers.
    """
    subject = leaf.subject
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [name.lower() for name in sans.get_values_for_type(x509.DNSName)]
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        emails = sans.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        dns, uris, emails = [], [], []
    lists = {
        "organizations": _values(subject, NameOID.ORGANIZATION_NAME),
        "organizational_units": _values(subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        "dns_sans": dns,
        "uri_sans": uris,
        "email_sans": emails,
    }
    facts = {
        "serial": format(leaf.serial_number, "x"),
        "fingerprint": leaf.fingerprint(hashes.SHA256()).hex(),
        "subject": subject.rfc4514_string(),
        **{name: json.dumps(values) for name, values in lists.items()},
    }
    singles: Mapping[str, Sequence[str]] = {
        "cn": _values(subject, NameOID.COMMON_NAME),
        "o": lists["organizations"],
        "ou": lists["organizational_units"],
        "dns_san": dns,
        "uri_san": uris,
        "email_san": emails,
        "issuer_cn": _values(leaf.issuer, NameOID.COMMON_NAME),
    }
    facts.update({name: values[0] for name, values in singles.items() if len(values) == 1 and values[0]})
    return facts


def _values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(attribute.value) for attribute in name.get_attributes_for_oid(oid)]
