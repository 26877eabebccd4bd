"""The method table is the one list: routes, wire fields, role rules and the agent's wire agree with it."""

from __future__ import annotations

from typing import get_args

from clients import wire
from issuer.policy.methods import METHOD_NAMES, ROLE_RULES
from issuer.service.issuance.catalogue import CATALOGUE
from issuer.service.issuance.wire import COMMON_FIELDS


def test_every_role_method_is_in_the_catalogue_and_nothing_else() -> None:
    role_methods = [entry.rules for entry in CATALOGUE if entry.rules is not None]
    assert role_methods == list(ROLE_RULES)
    assert [entry.name for entry in CATALOGUE if entry.rules is not None] == list(METHOD_NAMES)
    for entry in CATALOGUE:
        assert entry.rules is None or entry.rules.method == entry.name


def test_routes_names_and_fields_do_not_collide() -> None:
    assert len({entry.route for entry in CATALOGUE}) == len(CATALOGUE)
    assert len({entry.name for entry in CATALOGUE}) == len(CATALOGUE)
    for entry in CATALOGUE:
        assert entry.route.startswith("/v1/")
        assert not entry.fields & COMMON_FIELDS, entry.name


def test_the_agent_speaks_every_attestation_method_at_its_route() -> None:
    """The agent owns its copy of the wire (it ships without the service); it must match the table."""
    attestation = {entry.name: entry.route for entry in CATALOGUE if entry.rules is not None}
    assert set(get_args(wire.Method)) == set(attestation)
    assert attestation == wire.ISSUE_PATHS
    renew = next(entry for entry in CATALOGUE if entry.rules is None)
    assert renew.route == wire.RENEW_PATH
    x509pop = next(entry for entry in CATALOGUE if entry.name == "x509pop")
    assert x509pop.fields == {wire.Field.CHAIN, wire.Field.PROOF}
