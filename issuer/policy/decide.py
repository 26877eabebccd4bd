"""The pure issuance decision: verified identity + role (+ the certificate being renewed) → what to sign.

Names come only from the verified identity through the role's templates, never
from the CSR (step-ca's rule): the CSR contributes its public key and nothing else.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ca.csr import CheckedCSR
from ca.profile import LeafTemplate
from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ClientError, Forbidden
from issuer.policy.renewal import PriorCertificate, check_renewal
from issuer.policy.roles import Role
from issuer.policy.templates import render

__all__ = ["BACKDATE", "decide"]

# NotBefore is backdated so a client whose clock is a little behind accepts the certificate.
BACKDATE = timedelta(seconds=60)
_CN_MAX = 64  # ub-common-name (RFC 5280)


def decide(
    identity: VerifiedIdentity,
    role: Role,
    csr: CheckedCSR,
    prior: PriorCertificate | None,
    now: datetime,
    *,
    trust_domain: str,
    requested_ttl: timedelta | None = None,
) -> LeafTemplate:
    """Apply ``role`` to ``identity`` and return the leaf to sign for ``csr``'s key.

    ``prior`` is the certificate being renewed (None on a first issuance). Raises
    :class:`Forbidden` (``method_not_allowed``, ``key_type_not_allowed``,
    ``binding_mismatch``, ``instance_too_old``, ``template_variable_missing``,
    ``renewal_chain_too_old``), :class:`ClientError` (``ttl_too_long``, ``renew_same_key``,
    ``renew_key_reused``) or the renewal refusals of :func:`issuer.policy.renewal.check_renewal`.
    """
    if identity.method not in role.methods:
        raise Forbidden(
            "The role does not allow this attestation method.",
            code="method_not_allowed",
            reason=f"role {role.name} does not allow {identity.method}",
        )
    if csr.key_type not in role.key_types:
        raise Forbidden(
            f"The role does not allow {csr.key_type} keys; allowed: {', '.join(role.key_types)}.",
            code="key_type_not_allowed",
        )
    if prior is not None:
        check_renewal(prior, role, public_key_sha256=csr.public_key_sha256_hex, now=now)
    role.options_of(identity.method).check(identity, role=role.name, now=now, renewing=prior is not None)
    ttl = role.ttl
    if requested_ttl is not None:
        if requested_ttl > role.max_ttl:
            raise ClientError(
                f"The requested ttl is longer than the role's max_ttl ({role.max_ttl}).", code="ttl_too_long"
            )
        ttl = requested_ttl
    variables = identity.template_vars()
    variables["trust_domain"] = trust_domain
    variables["role"] = role.name
    uri = render(role.uri_san_template(identity.method), variables, escape=True, role=role.name)
    common_name = render(role.common_name_template(identity.method), variables, escape=False, role=role.name)
    dns = tuple(render(t, variables, escape=True, role=role.name) for t in role.dns_sans)
    return LeafTemplate(
        common_name=common_name[:_CN_MAX],
        organizational_unit=role.name,
        uri_sans=(uri,),
        dns_sans=dns,
        not_before=now - BACKDATE,
        not_after=now + ttl,
    )
