"""The pure parts of revocation: reason names, the /v1/revoked document, CRL digests, ETags, issuer selection."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from ca.files import init_ca
from clients.authorizer import parse_revocation_document
from issuer.errors import ClientError, NotFound
from issuer.http.revocation_handlers import etag_matches
from issuer.service.ca.registry import ActiveIssuer, IssuerView, TrustSnapshot
from issuer.service.revocation.lists import (
    RevocationLists,
    entries_digest,
    revocation_document,
    select_issuer,
    strong_etag,
)
from issuer.service.revocation.revoke import REASONS, RevocationTarget, parse_reason, reason_flag
from issuer.store.records import IssuerRecord
from issuer.store.revocations import RevokedRow

NOW = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
FINGERPRINT = "ab" * 32


def row(serial: str, *, reason: str = "keyCompromise", revoked_at: datetime = NOW) -> RevokedRow:
    return RevokedRow(
        serial=serial,
        issuer_id=1,
        issuer_fingerprint=FINGERPRINT,
        revoked_at=revoked_at,
        reason=reason,
        not_after=NOW + timedelta(hours=24),
    )


# -- reasons ----------------------------------------------------------------------------


def test_the_nine_rfc_5280_reasons_and_their_crl_flags() -> None:
    assert list(REASONS) == [
        "unspecified",
        "keyCompromise",
        "cACompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "certificateHold",
        "privilegeWithdrawn",
        "aACompromise",
    ]
    for name, flag in REASONS.items():
        assert flag.value == name and reason_flag(name) is flag
    assert reason_flag("removeFromCRL") is None and reason_flag(None) is None


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("keyCompromise", "keyCompromise"),
        ("keycompromise", "keyCompromise"),
        ("KEY_COMPROMISE", "keyCompromise"),
        ("key-compromise", "keyCompromise"),
        ("ca-compromise", "cACompromise"),
        ("CA_COMPROMISE", "cACompromise"),
        ("aa-compromise", "aACompromise"),
        ("cessation-of-operation", "cessationOfOperation"),
        ("Certificate_Hold", "certificateHold"),
        ("privilege withdrawn", "privilegeWithdrawn"),
        ("affiliation-changed", "affiliationChanged"),
        ("SUPERSEDED", "superseded"),
        ("unspecified", "unspecified"),
    ],
)
def test_reasons_are_accepted_in_any_case_and_with_separators(given: str, canonical: str) -> None:
    assert parse_reason(given) == canonical


@pytest.mark.parametrize("given", ["", "removeFromCRL", "remove-from-crl", "compromised", "key.compromise", "7"])
def test_other_reasons_are_refused_naming_the_accepted_ones(given: str) -> None:
    with pytest.raises(ClientError) as refused:
        parse_reason(given)
    assert refused.value.code == "reason_invalid"
    assert "keyCompromise" in refused.value.detail and "aACompromise" in refused.value.detail


def test_an_empty_target_is_refused() -> None:
    with pytest.raises(ClientError) as refused:
        RevocationTarget("principal", "  ")
    assert refused.value.code == "principal_invalid"
    assert RevocationTarget("serial", "0a").value == "0a"


# -- the /v1/revoked document ----------------------------------------------------------------


def test_the_revoked_document_is_what_the_authorizer_parses() -> None:
    body = revocation_document([row("1f"), row("a0b1")], generated_at=NOW)
    parsed = parse_revocation_document(body)
    assert parsed.serials == frozenset({"1f", "a0b1"}) and parsed.generated_at == "2026-11-30T12:00:00+00:00"
    document = json.loads(body)
    assert document == {
        "version": 1,
        "generated_at": "2026-11-30T12:00:00+00:00",
        "serials": ["1f", "a0b1"],
        "entries": [
            {
                "serial": s,
                "issuer_fingerprint": FINGERPRINT,
                "revoked_at": "2026-11-30T12:00:00+00:00",
                "reason": "keyCompromise",
                "not_after": "2026-12-01T12:00:00+00:00",
            }
            for s in ("1f", "a0b1")
        ],
    }
    # The same rows give the same bytes, so the same strong ETag on every replica.
    assert revocation_document([row("1f"), row("a0b1")], generated_at=NOW) == body
    assert strong_etag(body) == strong_etag(bytes(body)) and strong_etag(body).startswith('"')
    assert strong_etag(revocation_document([row("1f")], generated_at=NOW)) != strong_etag(body)
    empty = parse_revocation_document(revocation_document([], generated_at=NOW))
    assert empty.serials == frozenset()


def test_the_crl_digest_changes_with_what_the_crl_would_list() -> None:
    base = entries_digest([row("1f"), row("2e")])
    assert entries_digest([row("1f"), row("2e")]) == base
    assert entries_digest([row("1f")]) != base
    assert entries_digest([row("1f", reason="superseded"), row("2e")]) != base
    assert entries_digest([row("1f", revoked_at=NOW + timedelta(seconds=1)), row("2e")]) != base
    # Sub-second differences are not on a CRL (it keeps whole seconds), so they do not count.
    assert entries_digest([row("1f", revoked_at=NOW.replace(microsecond=0)), row("2e")]) == base


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", False),
        ("", False),
        (None, False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert etag_matches(header, '"abc"') is matches


def test_the_crl_refresh_must_be_shorter_than_the_validity() -> None:
    for refresh, validity in ((timedelta(hours=24), timedelta(hours=24)), (timedelta(0), timedelta(hours=1))):
        with pytest.raises(ValueError):
            RevocationLists(
                None,  # type: ignore[arg-type]
                registry=None,  # type: ignore[arg-type]
                load_signer=None,  # type: ignore[arg-type]
                clock=lambda: NOW,
                crl_refresh=refresh,
                crl_validity=validity,
            )


# -- which issuer's CRL ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> TrustSnapshot:
    directory = tmp_path_factory.mktemp("ca") / "ca"
    init_ca(directory, passphrase=b"unit-test-passphrase-0123456789", now=NOW)
    certificate = x509.load_pem_x509_certificate((directory / "issuing.pem").read_bytes())
    record = IssuerRecord(
        id=1,
        fingerprint_sha256="abcd" + "1" * 60,
        subject="CN=one",
        serial="1",
        certificate_pem="",
        chain_pem="",
        key_ref="file:issuing.key.pem",
        state="active",
        not_before=NOW,
        not_after=NOW,
        created_at=NOW,
        updated_at=NOW,
        activated_at=NOW,
        retired_at=None,
    )
    views = tuple(
        IssuerView(record=replace(record, **changes), certificate=certificate, chain=(certificate,))
        for changes in (
            dict[str, Any](),
            {"id": 2, "fingerprint_sha256": "abcd" + "2" * 60, "state": "prepared"},
            {"id": 3, "fingerprint_sha256": "ef01" + "3" * 60, "state": "retired"},
        )
    )
    signer: Any = object()
    return TrustSnapshot(
        active=ActiveIssuer(id=1, certificate=certificate, chain=(certificate,), signer=signer),
        issuers=views,
        roots=(),
        bundle_pem=b"",
        truststore_pem=b"",
        truststore_etag='""',
        version=(),
    )


def test_the_active_issuer_is_the_default_and_others_are_named_by_fingerprint(snapshot: TrustSnapshot) -> None:
    assert select_issuer(snapshot, None).id == 1
    assert select_issuer(snapshot, "ef01").id == 3  # a retired issuer's leaves may still be live
    assert select_issuer(snapshot, "ABCD2222").id == 2
    assert select_issuer(snapshot, "ab:cd:11:11").id == 1  # as openssl prints fingerprints


@pytest.mark.parametrize(
    ("prefix", "error", "code"),
    [
        ("abcd", ClientError, "issuer_ambiguous"),
        ("abc", ClientError, "issuer_invalid"),
        ("xyz1", ClientError, "issuer_invalid"),
        ("a" * 65, ClientError, "issuer_invalid"),
        ("0000", NotFound, "issuer_not_found"),
    ],
)
def test_issuer_prefixes_that_name_no_single_issuer(
    snapshot: TrustSnapshot, prefix: str, error: type[Exception], code: str
) -> None:
    with pytest.raises(error) as refused:
        select_issuer(snapshot, prefix)
    assert getattr(refused.value, "code", None) == code
