"""CRLs signed by the issuing CA: contents, signature, and openssl's opinion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID

from ca import CAHierarchy, RevokedEntry, create_hierarchy
from tests.support.x509_check import OpenSSLCheckError, openssl_verify_crl, pem

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def hierarchy() -> CAHierarchy:
    return create_hierarchy(now=NOW - timedelta(days=30))


@pytest.fixture(scope="module")
def other_hierarchy() -> CAHierarchy:
    return create_hierarchy(now=NOW - timedelta(days=30))


ENTRIES = (
    RevokedEntry(
        serial=0x1111_2222_3333_4444_5555, revoked_at=NOW - timedelta(hours=3), reason=x509.ReasonFlags.key_compromise
    ),
    RevokedEntry(serial=0x6666_7777_8888_9999_AAAA, revoked_at=NOW - timedelta(hours=2), reason=None),
    RevokedEntry(
        serial=0xBBBB_CCCC_DDDD_EEEE_FFFF, revoked_at=NOW - timedelta(hours=1), reason=x509.ReasonFlags.superseded
    ),
    RevokedEntry(serial=0x1234, revoked_at=NOW - timedelta(minutes=5), reason=x509.ReasonFlags.unspecified),
)


async def _crl(hierarchy: CAHierarchy, entries: tuple[RevokedEntry, ...] = ENTRIES) -> x509.CertificateRevocationList:
    return await hierarchy.signer().sign_crl(entries, now=NOW, next_update=NOW + timedelta(hours=12), crl_number=42)


def _reason(revoked: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


async def test_crl_is_signed_by_the_issuing_ca(hierarchy: CAHierarchy, other_hierarchy: CAHierarchy) -> None:
    crl = await _crl(hierarchy)
    assert crl.is_signature_valid(hierarchy.issuing.certificate.public_key())  # type: ignore[arg-type]
    assert not crl.is_signature_valid(other_hierarchy.issuing.certificate.public_key())  # type: ignore[arg-type]
    assert not crl.is_signature_valid(hierarchy.root.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == hierarchy.issuing.certificate.subject
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)


async def test_crl_lists_every_entry_with_its_reason(hierarchy: CAHierarchy) -> None:
    crl = await _crl(hierarchy)
    assert len(crl) == len(ENTRIES)
    for entry in ENTRIES:
        revoked = crl.get_revoked_certificate_by_serial_number(entry.serial)
        assert revoked is not None
        assert revoked.revocation_date_utc == entry.revoked_at
        if entry.reason is x509.ReasonFlags.unspecified:
            # RFC 5280 §5.3.1: leave the extension out rather than say "unspecified".
            assert _reason(revoked) is None
        else:
            assert _reason(revoked) == entry.reason
        for ext in revoked.extensions:
            assert ext.critical is False
    assert crl.get_revoked_certificate_by_serial_number(0x9999) is None


async def test_crl_number_aki_and_times(hierarchy: CAHierarchy) -> None:
    crl = await _crl(hierarchy)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber)
    assert (number.critical, number.value.crl_number) == (False, 42)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    issuer_ski = hierarchy.issuing.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert (aki.critical, aki.value.key_identifier) == (False, issuer_ski.value.digest)
    assert {e.oid for e in crl.extensions} == {ExtensionOID.CRL_NUMBER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER}
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + timedelta(hours=12)


async def test_openssl_accepts_the_crl_and_rejects_it_for_another_ca(
    hierarchy: CAHierarchy, other_hierarchy: CAHierarchy
) -> None:
    crl = await _crl(hierarchy)
    openssl_verify_crl(crl, pem([hierarchy.issuing.certificate, hierarchy.root.certificate]))
    with pytest.raises(OpenSSLCheckError):
        openssl_verify_crl(crl, pem([other_hierarchy.issuing.certificate, other_hierarchy.root.certificate]))


async def test_an_empty_crl_is_valid(hierarchy: CAHierarchy) -> None:
    crl = await _crl(hierarchy, ())
    assert len(crl) == 0
    openssl_verify_crl(crl, pem([hierarchy.issuing.certificate]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"next_update": NOW}, "after now"),
        ({"crl_number": -1}, "crl_number"),
        ({"crl_number": 2**159}, "crl_number"),
        ({"revoked": (ENTRIES[0], ENTRIES[0])}, "twice"),
        ({"revoked": (RevokedEntry(1, NOW, x509.ReasonFlags.remove_from_crl),)}, "delta"),
        ({"revoked": (RevokedEntry(1, NOW.replace(tzinfo=None)),)}, "timezone-aware"),
        ({"now": NOW.replace(tzinfo=None)}, "timezone-aware"),
    ],
)
async def test_crl_inputs_are_checked(hierarchy: CAHierarchy, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "revoked": (),
        "now": NOW,
        "next_update": NOW + timedelta(hours=1),
        "crl_number": 1,
    }
    args.update(kwargs)
    revoked = args.pop("revoked")
    with pytest.raises(ValueError, match=message):
        await hierarchy.signer().sign_crl(revoked, **args)  # type: ignore[arg-type]
