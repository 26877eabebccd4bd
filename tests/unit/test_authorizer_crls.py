"""The authorizer enforces signed CRLs (issue 20 §1): genuine ones allow a good certificate and deny a
revoked one; a tampered, foreign, expired or rolled-back CRL is refused, ridden out for the grace,
and then the authorizer fails closed — every Deny naming why in its context.

The CRLs and truststore are served over real HTTP on 127.0.0.1; time is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from tests.support.authorizer_pki import CrlServer, Pki, crl, crl_server, make_pki, pem_of, tampered
from tests.unit.test_authorizer import Harness, allowed, http_event, rest_event

Clock = Callable[[float], datetime]


@pytest.fixture
def at() -> Clock:
    """Seconds from the test's start (leaves are valid from a minute before they are made)."""
    start = datetime.now(UTC)
    return lambda seconds: start + timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture
def revoked(pki: Pki) -> x509.Certificate:
    return pki.leaf()


@pytest.fixture
def server(pki: Pki, revoked: x509.Certificate) -> Iterator[CrlServer]:
    genuine = (crl(pki.issuing, revoked=[revoked.serial_number], number=5), crl(pki.root, number=2))
    with crl_server(pki, *genuine) as srv:
        yield srv


def deny_context(response: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = response["context"]
    assert context["reason"] and context["detail"], "every Deny says why"
    return context


@pytest.mark.parametrize("shape", ["rest", "http"])
def test_genuine_crls_allow_a_good_certificate_and_deny_a_revoked_one(
    server: CrlServer, pki: Pki, revoked: x509.Certificate, shape: str
) -> None:
    make = rest_event if shape == "rest" else http_event
    authz = Harness(server.env())
    assert allowed(authz(make(pki.leaf())))
    assert authz.last["revocation"] == "fresh"
    assert authz.last["crls"] == [f"CN={pki.issuing.cert.subject.rfc4514_string()[3:]} #5", "CN=Test Root CA #2"]
    response = authz(make(revoked))
    assert not allowed(response)
    context = deny_context(response)
    assert context["reason"] == "revoked" and f"{revoked.serial_number:x}" in context["detail"]
    assert server.requests == {"crls": 1, "truststore": 1}


def test_with_crls_the_json_list_is_not_needed_and_is_ignored_when_set(server: CrlServer, pki: Pki) -> None:
    authz = Harness(server.env(ISSUER_REVOKED_URL="http://127.0.0.1:9/v1/revoked"))
    assert allowed(authz(rest_event(pki.leaf())))
    assert authz.events("setting_ignored")[0]["setting"] == "ISSUER_REVOKED_URL"
    authz(rest_event(pki.leaf()))
    assert len(authz.events("setting_ignored")) == 1  # once per environment


def test_a_tampered_crl_is_refused_and_fails_closed(server: CrlServer, pki: Pki, revoked: x509.Certificate) -> None:
    genuine = crl(pki.issuing, revoked=[revoked.serial_number], number=5)
    server.crls = tampered(genuine, revoked.serial_number) + pem_of(crl(pki.root))
    authz = Harness(server.env())
    response = authz(rest_event(revoked))  # its serial was edited out of the CRL
    assert not allowed(response)
    assert deny_context(response)["reason"] == "crl_signature_invalid"
    assert authz.events("crl_refused")[0]["code"] == "crl_signature_invalid"
    assert not allowed(authz(rest_event(pki.leaf())))  # no CRL of its issuer: fail closed


@pytest.mark.parametrize("kind", ["same-name-other-key", "unknown-issuer"])
def test_a_foreign_crl_is_refused(server: CrlServer, pki: Pki, revoked: x509.Certificate, kind: str) -> None:
    impostor = make_pki("Test") if kind == "same-name-other-key" else make_pki("Other")
    server.crls = pem_of(crl(impostor.issuing)) + pem_of(crl(pki.root))
    authz = Harness(server.env())
    response = authz(rest_event(revoked))
    assert not allowed(response)
    refused = authz.events("crl_refused")[0]["code"]
    assert refused == ("crl_signature_invalid" if kind == "same-name-other-key" else "crl_issuer_unknown")
    assert deny_context(response)["reason"] in ("crl_signature_invalid", "crl_missing")


def test_a_rolled_back_crl_is_refused_served_stale_for_the_grace_then_denied(
    server: CrlServer, pki: Pki, revoked: x509.Certificate, at: Clock
) -> None:
    authz = Harness(server.env(ISSUER_CRLS_TTL="60", ISSUER_CRLS_MAX_STALE="600"))
    good = pki.leaf()
    assert not allowed(authz(rest_event(revoked), now=at(0)))
    # An older CRL (number 3, before the revocation) is served again, e.g. an old copy in the bucket.
    server.crls = pem_of(crl(pki.issuing, number=3)) + pem_of(crl(pki.root, number=2))
    assert not allowed(authz(rest_event(revoked), now=at(61)))  # still revoked: CRL 5 is kept
    assert authz.last["reason"] == "revoked" and authz.last["revocation"] == "stale"
    assert authz.events("crl_refused")[0]["code"] == "crl_rolled_back"
    assert allowed(authz(rest_event(good), now=at(600)))
    response = authz(rest_event(good), now=at(602))
    assert not allowed(response)
    context = deny_context(response)
    assert context["reason"] == "crl_rolled_back" and "lower than 5" in context["detail"]


def test_an_expired_crl_is_used_within_the_grace_then_refused(server: CrlServer, pki: Pki, at: Clock) -> None:
    good = pki.leaf()
    expired = crl(pki.issuing, this_update=at(-3600), next_update=at(-100))
    server.crls = pem_of(expired) + pem_of(crl(pki.root))
    authz = Harness(server.env(ISSUER_CRLS_TTL="60", ISSUER_CRLS_MAX_STALE="300"))
    assert allowed(authz(rest_event(good), now=at(0)))
    assert authz.last["revocation"] == "stale"  # past nextUpdate, within the grace
    assert allowed(authz(rest_event(good), now=at(199)))
    response = authz(rest_event(good), now=at(201))
    assert deny_context(response)["reason"] == "crl_expired"
    fresh = Harness(server.env(ISSUER_CRLS_TTL="60", ISSUER_CRLS_MAX_STALE="60"))
    assert deny_context(fresh(rest_event(good), now=at(0)))["reason"] == "crl_expired"  # refused on arrival


def test_a_failing_source_is_ridden_out_for_the_grace_then_denied(server: CrlServer, pki: Pki, at: Clock) -> None:
    good = pki.leaf()
    authz = Harness(server.env(ISSUER_CRLS_TTL="60", ISSUER_CRLS_MAX_STALE="300"))
    assert allowed(authz(rest_event(good), now=at(0)))
    server.failing = {"crls"}
    assert allowed(authz(rest_event(good), now=at(299)))
    assert authz.last["revocation"] == "stale"
    response = authz(rest_event(good), now=at(301))
    context = deny_context(response)
    assert context["reason"] == "crl_source_unavailable" and "answered 503" in context["detail"]
    server.failing = set()  # recovers: a 304 confirms what was kept
    assert allowed(authz(rest_event(good), now=at(400)))
    assert server.not_modified["crls"] == 1
    server.failing = {"truststore"}
    assert allowed(authz(rest_event(good), now=at(700)))
    response = authz(rest_event(good), now=at(1000))
    assert deny_context(response)["reason"] == "truststore_unavailable"


def test_the_crl_of_the_root_is_needed_and_revokes_an_issuing_ca(server: CrlServer, pki: Pki) -> None:
    good = pki.leaf()
    server.crls = pem_of(crl(pki.issuing))
    authz = Harness(server.env())
    response = authz(rest_event(good))
    assert deny_context(response)["reason"] == "crl_missing" and "Root CA" in response["context"]["detail"]

    server.crls = pem_of(crl(pki.issuing)) + pem_of(crl(pki.root, revoked=[pki.issuing.cert.serial_number], number=9))
    authz = Harness(server.env())
    response = authz(rest_event(good))
    assert deny_context(response)["reason"] == "issuer_revoked"


def test_a_certificate_from_a_ca_outside_the_truststore_is_denied(server: CrlServer) -> None:
    stranger = make_pki("Stranger").leaf()
    response = Harness(server.env())(rest_event(stranger))
    assert deny_context(response)["reason"] == "issuer_unknown"


@pytest.mark.parametrize(
    ("extension", "critical", "code"),
    [
        (x509.DeltaCRLIndicator(4), True, "crl_unsupported"),
        (
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),
            True,
            "crl_unsupported",
        ),
        (
            x509.IssuingDistributionPoint(None, None, False, True, None, False, False),  # CA certificates only
            True,
            "crl_missing",
        ),
    ],
    ids=["delta", "unknown-critical", "only-ca-certs"],
)
def test_incomplete_crls_do_not_count(
    server: CrlServer, pki: Pki, extension: x509.ExtensionType, critical: bool, code: str
) -> None:
    server.crls = pem_of(crl(pki.issuing, extensions=[(extension, critical)])) + pem_of(crl(pki.root))
    response = Harness(server.env())(rest_event(pki.leaf()))
    assert deny_context(response)["reason"] == code


def test_an_unreachable_truststore_fails_closed(server: CrlServer, pki: Pki) -> None:
    env = server.env(ISSUER_TRUSTSTORE_URL=f"{server.url}/v1/nothing-here")
    response = Harness(env)(rest_event(pki.leaf()))
    assert deny_context(response)["reason"] == "truststore_unavailable"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "holds no CRL"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "'CERTIFICATE' block"),
        (b"-----BEGIN X509 CRL-----\n!!!\n-----END X509 CRL-----\n", "malformed"),
    ],
)
def test_a_bundle_that_is_not_crls_is_a_bad_source(server: CrlServer, pki: Pki, body: bytes, error: str) -> None:
    server.crls = body
    authz = Harness(server.env())
    response = authz(rest_event(pki.leaf()))
    assert deny_context(response)["reason"] == "crl_source_unavailable"
    assert error in authz.events("crl_source_failed")[0]["error"]


def test_a_garbage_crl_beside_good_ones_is_refused_alone(server: CrlServer, pki: Pki) -> None:
    server.crls += b"-----BEGIN X509 CRL-----\nMAMCAQA=\n-----END X509 CRL-----\n"
    authz = Harness(server.env())
    assert allowed(authz(rest_event(pki.leaf())))
    assert authz.events("crl_refused")[0]["code"] == "crl_malformed"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ISSUER_TRUSTSTORE_URL": ""}, "ISSUER_TRUSTSTORE_URL is not set"),
        ({"ISSUER_FAIL_CLOSED": "false"}, "signed CRLs fail closed"),
        ({"ISSUER_CRLS_URL": "http://issuer.example.org/v1/crls"}, "loopback"),
        ({"ISSUER_TRUSTSTORE_URL": "ftp://x/truststore.pem"}, "ISSUER_TRUSTSTORE_URL"),
        ({"ISSUER_CRLS_TTL": "60", "ISSUER_CRLS_MAX_STALE": "10"}, "ISSUER_CRLS_MAX_STALE"),
        ({"ISSUER_CRLS_URL": "s3://bucket/crls.pem"}, "AWS_REGION"),
    ],
)
def test_invalid_crl_settings_deny_everything(server: CrlServer, pki: Pki, env: dict[str, str], message: str) -> None:
    authz = Harness(server.env() | env)
    response = authz(rest_event(pki.leaf()))
    assert deny_context(response)["reason"] == "settings_invalid" and message in response["context"]["detail"]
    assert server.requests == {"crls": 0, "truststore": 0}


def test_decision_log_names_the_crls_used(server: CrlServer, pki: Pki) -> None:
    authz = Harness(server.env())
    authz(rest_event(pki.leaf()))
    line = json.dumps(authz.last)
    assert "#5" in line and "#2" in line
