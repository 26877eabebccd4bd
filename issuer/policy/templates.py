"""Name templates (``uri_san``, ``common_name``, ``dns_sans``, x509pop's ``principal``): checked and rendered.

Variables come only from a verified identity (and the trust domain and role), never
from the CSR. A template is checked at start-up against the variables its method
provides; rendering refuses an identity that lacks one.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from urllib.parse import quote

from issuer.errors import ConfigError, Forbidden

__all__ = ["check_template", "render"]


def check_template(template: str, allowed: frozenset[str], *, where: str) -> None:
    """Raise :class:`ConfigError` naming ``where`` for a malformed template or an unknown variable."""
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for name in names:
        if name not in allowed:
            raise ConfigError(f"{where}: unknown variable {{{name}}} (available: {', '.join(sorted(allowed))})")


def render(template: str, variables: Mapping[str, str], *, escape: bool, role: str) -> str:
    """``template`` with its variables filled in; percent-encoded when ``escape`` (URIs, DNS names).

    Raises :class:`Forbidden` ``template_variable_missing`` when the identity lacks a variable.
    """
    out: list[str] = []
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if field is None:
            continue
        value = variables.get(field)
        if not value:
            raise Forbidden(
                "The role's name template needs a fact this identity does not have.",
                code="template_variable_missing",
                reason=f"role {role}: no {{{field}}} for {variables.get('principal')}",
            )
        # Values come from AWS, an operator or a trusted CA, but still never let one add path segments or schemes.
        out.append(quote(value, safe="-._~@=,:") if escape and field != "trust_domain" else value)
    return "".join(out)
