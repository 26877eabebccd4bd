"""The x509pop method's part of a role: the external CAs it trusts, matchers on their certificates, the principal.

Role fields (only ``trust_bundle`` is required)::

    trust_bundle = "external-cas.pem"        # PEM CA certificates, relative to the configuration file
    allowed_common_names = ["web-*"]          # patterns: exact, or * for any run of characters
    allowed_organizations = ["Example Corp"]
    allowed_organizational_units = ["Servers"]
    allowed_dns_sans = ["*.corp.example.org"]
    allowed_uri_sans = ["spiffe://corp.example.org/*"]
    allowed_email_sans = []
    allowed_fingerprints = ["ab12…"]          # SHA-256 of the external leaf's DER (colons and case ignored)
    principal = "{cn}"                        # the identity's name, from the certificate's facts

An empty list allows any value. A subject field or SAN list matches when the certificate
has at least one value of it and one of its values matches a pattern; the common name must
be the certificate's only one. With only ``trust_bundle``, any client certificate chaining
to it is accepted and the principal is its subject's CN.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from cryptography import x509

from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ConfigError
from issuer.policy.arn import wildcard_matches
from issuer.policy.bindings import mismatch
from issuer.policy.rules import FieldKind, FieldValues, RoleRules
from issuer.policy.templates import check_template, render

__all__ = ["X509POP", "X509PopOptions"]

METHOD = "x509pop"
# Template variables from the external certificate (issuer.attest.x509pop.certificate_facts).
_FACTS = frozenset({"cn", "o", "ou", "dns_san", "uri_san", "email_san", "issuer_cn", "serial", "fingerprint"})
DEFAULT_PRINCIPAL = "{cn}"
_MAX_PRINCIPAL = 2048
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
# allowed_* field → the identity attribute it matches (a JSON array, or the single cn).
_MATCHED = {
    "allowed_common_names": "cn",
    "allowed_organizations": "organizations",
    "allowed_organizational_units": "organizational_units",
    "allowed_dns_sans": "dns_sans",
    "allowed_uri_sans": "uri_sans",
    "allowed_email_sans": "email_sans",
}


@dataclass(frozen=True, slots=True)
class X509PopOptions:
    trust_bundle: Path | None = None
    trust_anchors: tuple[x509.Certificate, ...] = ()
    allowed_common_names: tuple[str, ...] = ()
    allowed_organizations: tuple[str, ...] = ()
    allowed_organizational_units: tuple[str, ...] = ()
    allowed_dns_sans: tuple[str, ...] = ()
    allowed_uri_sans: tuple[str, ...] = ()
    allowed_email_sans: tuple[str, ...] = ()
    allowed_fingerprints: tuple[str, ...] = ()
    principal: str = DEFAULT_PRINCIPAL

    def check(self, identity: VerifiedIdentity, *, role: str, now: datetime, renewing: bool) -> None:
        """Every matcher against the certificate's facts (kept with the identity, so renewals are checked too)."""
        attrs = identity.attributes
        for field, attribute in _MATCHED.items():
            patterns: tuple[str, ...] = getattr(self, field)
            if not patterns:
                continue
            values = [attrs[attribute]] if attribute == "cn" and "cn" in attrs else _list(attrs.get(attribute))
            if not any(wildcard_matches(p, v) for p in patterns for v in values):
                raise mismatch(role, f"{field}: none of {values[:5]} matches")
        fingerprint = attrs.get("fingerprint")
        if self.allowed_fingerprints and fingerprint not in self.allowed_fingerprints:
            raise mismatch(role, f"allowed_fingerprints does not include {fingerprint}")

    def identity(self, facts: Mapping[str, str], *, role: str) -> VerifiedIdentity:
        """The identity the certificate's ``facts`` make under this role: the principal from its template.

        Raises ``Forbidden`` ``template_variable_missing`` when the certificate lacks a fact it names.
        """
        principal = render(self.principal, facts, escape=False, role=role)[:_MAX_PRINCIPAL]
        return VerifiedIdentity(method=METHOD, principal=principal, attributes=MappingProxyType(dict(facts)))


def _list(value: str | None) -> list[str]:
    if value is None:
        return []
    parsed = json.loads(value)
    return [v for v in parsed if isinstance(v, str)] if isinstance(parsed, list) else []


def load_trust_bundle(path: Path, *, where: str) -> tuple[x509.Certificate, ...]:
    """The CA certificates in the PEM file ``path``; :class:`ConfigError` naming ``where`` otherwise."""
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{where}: {path} holds no PEM certificates") from None
    for certificate in certificates:
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ConfigError(f"{where}: {certificate.subject.rfc4514_string()} in {path} is not a CA certificate")
    return tuple(certificates)


_FIELDS: dict[str, FieldKind] = {
    "trust_bundle": "path",
    **{field: "strs" for field in _MATCHED},
    "allowed_fingerprints": "strs",
    "principal": "str",
}


def _parse(fields: FieldValues) -> X509PopOptions:
    values = dict(fields.values)
    bundle = values.get("trust_bundle")
    if not isinstance(bundle, Path):
        raise ConfigError(f"{fields.where}, field 'trust_bundle': required for x509pop, e.g. \"external-cas.pem\"")
    values["trust_anchors"] = load_trust_bundle(bundle, where=f"{fields.where}, field 'trust_bundle'")
    values["allowed_fingerprints"] = _fingerprints(values.get("allowed_fingerprints", ()), where=fields.where)
    if "allowed_dns_sans" in values:
        values["allowed_dns_sans"] = tuple(p.lower() for p in values["allowed_dns_sans"])
    check_template(values.get("principal", DEFAULT_PRINCIPAL), _FACTS, where=f"{fields.where}, field 'principal'")
    return X509PopOptions(**values)


def _fingerprints(items: Sequence[str], *, where: str) -> tuple[str, ...]:
    out = []
    for item in items:
        compact = item.replace(":", "").lower()
        if not _FINGERPRINT.fullmatch(compact):
            raise ConfigError(f"{where}, field 'allowed_fingerprints': {item!r} is not a hex SHA-256")
        out.append(compact)
    return tuple(out)


X509POP = RoleRules(
    method=METHOD,
    kind=X509PopOptions,
    fields=_FIELDS,
    parse=_parse,
    template_vars=_FACTS,
    default_uri_san="spiffe://{trust_domain}/x509pop/{principal}",
    default_common_name="{principal}",
)
