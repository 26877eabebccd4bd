"""A revocation source that answers with hostile JSON is a bad source — stale fallback and backoff —
never an internal error on every request (issue 20 §1).

Before: ``json.loads`` raised RecursionError on a deeply nested document, which escaped the cache,
became ``internal_error`` and was refetched on every request.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from clients.authorizer import SourceError, parse_revocation_document
from tests.unit.test_authorizer import Harness, ListServer, allowed, env_for, rest_event, revoked_doc, server
from tests.unit.test_authorizer_cert import Ca, make_ca, make_leaf

__all__ = ["server"]  # the fixture, used by name

NESTED = b"[" * 50_000 + b"]" * 50_000  # under the container cap: the decoder's depth limit refuses it
MANY = b"[" + b",".join([b"{}"] * 150_000) + b"]"
HUGE = json.dumps({"version": 1, "pad": "x" * (5 * 1024 * 1024)}).encode()


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


@pytest.fixture
def leaf(ca: Ca) -> x509.Certificate:
    return make_leaf(ca)


@pytest.mark.parametrize(
    ("body", "error"),
    [(NESTED, "nested too deeply"), (MANY, "more than 100000"), (HUGE, "larger than 4194304 bytes")],
    ids=["nested", "many-containers", "huge"],
)
def test_hostile_json_is_a_bad_source_not_a_crash(
    server: ListServer, leaf: x509.Certificate, body: bytes, error: str
) -> None:
    server.body = body
    authz = Harness(env_for(server.url, ISSUER_REVOKED_TTL="60"))
    t0 = datetime.now(UTC)
    assert not allowed(authz(rest_event(leaf), now=t0))
    assert authz.last["reason"] == "revocation_list_unavailable"
    assert not authz.events("authorizer_bug")
    failure = authz.events("revocation_source_failed")[0]
    assert error in failure["error"]
    # Backoff: the next requests do not refetch the bad document.
    for seconds in (1, 2, 4):
        assert not allowed(authz(rest_event(leaf), now=t0 + timedelta(seconds=seconds)))
    assert server.requests == 1


def test_a_good_list_is_served_stale_while_the_source_answers_hostile_json(
    server: ListServer, ca: Ca, leaf: x509.Certificate
) -> None:
    bad = make_leaf(ca)
    server.body = revoked_doc(format(bad.serial_number, "x"))
    authz = Harness(env_for(server.url, ISSUER_REVOKED_TTL="60", ISSUER_REVOKED_MAX_STALE="300"))
    t0 = datetime.now(UTC)
    assert allowed(authz(rest_event(leaf), now=t0))
    server.publish(NESTED)
    assert allowed(authz(rest_event(leaf), now=t0 + timedelta(seconds=61)))
    assert authz.last["revocation"] == "stale"
    assert not allowed(authz(rest_event(bad), now=t0 + timedelta(seconds=62)))
    assert authz.last["reason"] == "revoked"
    assert authz.events("revocation_source_failed")[0]["code"] == "revocation_document_invalid"
    assert not allowed(authz(rest_event(leaf), now=t0 + timedelta(seconds=301)))
    assert authz.last["reason"] == "revocation_list_unavailable"


def test_retries_back_off_exponentially_up_to_the_ttl(server: ListServer, leaf: x509.Certificate) -> None:
    server.mode = "error"
    authz = Harness(env_for(server.url, ISSUER_REVOKED_TTL="30", ISSUER_REVOKED_MAX_STALE="300"))
    t0 = datetime.now(UTC)
    fetched_at = []
    for second in range(0, 120):
        before = server.requests
        authz(rest_event(leaf), now=t0 + timedelta(seconds=second))
        if server.requests > before:
            fetched_at.append(second)
    assert fetched_at == [0, 5, 15, 35, 65, 95]  # 5, 10, 20, then at most the TTL (30) apart


@pytest.mark.parametrize("body", [NESTED, MANY], ids=["nested", "many-containers"])
def test_the_parser_refuses_hostile_shapes_with_its_code(body: bytes) -> None:
    with pytest.raises(SourceError) as info:
        parse_revocation_document(body)
    assert info.value.code == "revocation_document_invalid"
