"""The table of methods: every way to get a certificate, each declared by its own module.

============ ========================== =============================== =============================
method       route (POST)               proof                           role rules
============ ========================== =============================== =============================
token        ``/v1/issue/token``        ``token``                       :mod:`issuer.policy.token`
aws-ec2      ``/v1/issue/aws-ec2``      ``document`` + a signature      :mod:`issuer.policy.ec2`
aws-ec2-role ``/v1/issue/aws-ec2-role`` ``sts_request`` (instance role) :mod:`issuer.policy.ec2_role`
aws-iam      ``/v1/issue/aws-iam``      ``sts_request`` (or Vault's)    :mod:`issuer.policy.iam`
x509pop      ``/v1/issue/x509pop``      ``chain`` + ``proof`` (JWS)     :mod:`issuer.policy.x509pop`
renew        ``/v1/renew``              the current certificate         (none: keeps the role it had)
============ ========================== =============================== =============================

Each row is a :class:`~issuer.service.issuance.entry.MethodEntry`: the route, the wire
schema of the proof, the role rules, and how to build the method's steps
(:class:`~issuer.service.issuance.phases.IssuanceMethod`: ``verify`` → ``identify`` →
``check_upstream`` → ``claim_in_transaction``) from the app's
:class:`~issuer.service.issuance.entry.Resources`. The routes, the handlers, the app's
method table and the audit trail's method names all come from here; role parsing reads
the rules through :data:`issuer.policy.methods.ROLE_RULES`.

How to add a method, say ``acme``:

1. ``issuer/attest/acme.py``: verify the proof, pure (bytes, values and ``now`` in; a
   verified value out or an ``Unauthorized`` with stable ``acme_*`` codes).
2. ``issuer/policy/acme.py``: its :class:`~issuer.policy.rules.RoleRules` (fields with their
   kinds, an options dataclass whose defaults are the fields' and whose ``check`` applies them
   to a verified identity, the template variables and default name templates); add it to
   ``ROLE_RULES`` in :mod:`issuer.policy.methods` (one line).
3. ``issuer/service/issuance/acme.py``: its steps, its ``read_proof`` (with
   :mod:`issuer.service.issuance.wire`), and ``METHOD = MethodEntry(...)``; add it to
   :data:`CATALOGUE` below (one line). A method that needs a new outbound client adds it to
   ``Resources`` and to ``create_app``.
4. Tests (unit for the pure parts both ways, integration over HTTP on Postgres), and its
   README sections (method, role fields, API). The agent (``clients/``) speaks the wire on
   its own: its method list and proof live in ``clients/wire.py`` and ``clients/agent``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from issuer.service.issuance import ec2, ec2_role, iam, renew, token, x509pop
from issuer.service.issuance.entry import MethodEntry, Resources
from issuer.service.issuance.phases import IssuanceMethod

__all__ = ["CATALOGUE", "MethodTable"]

CATALOGUE: tuple[MethodEntry[Any], ...] = (
    token.METHOD,
    ec2.METHOD,
    ec2_role.METHOD,
    iam.METHOD,
    x509pop.METHOD,
    renew.METHOD,
)


class MethodTable(Mapping[str, IssuanceMethod[Any, Any]]):
    """Every method of the catalogue, built once per app from its resources, by name."""

    def __init__(self, resources: Resources, *, entries: tuple[MethodEntry[Any], ...] = CATALOGUE) -> None:
        self._methods = {entry.name: entry.build(resources) for entry in entries}

    def __getitem__(self, name: str) -> IssuanceMethod[Any, Any]:
        return self._methods[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)

    def __len__(self) -> int:
        return len(self._methods)
