"""Pure lifecycle decisions: trust on first use for EC2 instances, and whether a certificate may renew."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from issuer.errors import ClientError, Forbidden, Unauthorized
from issuer.hashing import hash_secret
from issuer.policy import BoundInstance, PriorCertificate, Role, check_renewal, decide_binding

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
BOUND = BoundInstance(nonce_hash=hash_secret("kept-nonce-0123456789"), pending_time=T0, bound_at=T0)


def binding(bound: BoundInstance | None, *, pending: datetime = T0, nonce: str | None = None, migrate: bool = False):
    return decide_binding(
        bound,
        instance_id="i-0abc",
        pending_time=pending,
        given_nonce=nonce,
        allow_migration=migrate,
        fresh_nonce="fresh-nonce-from-the-caller",
    )


def test_first_sight_binds_the_given_nonce_or_returns_a_fresh_one_once() -> None:
    mine = binding(None, nonce="client-nonce-0123456789")
    assert (mine.create, mine.nonce_hash, mine.returned_nonce) == (True, hash_secret("client-nonce-0123456789"), None)
    ours = binding(None)
    assert (ours.create, ours.returned_nonce) == (True, "fresh-nonce-from-the-caller")
    assert ours.nonce_hash == hash_secret("fresh-nonce-from-the-caller")


def test_the_kept_nonce_re_attests_and_keeps_the_binding() -> None:
    again = binding(BOUND, nonce="kept-nonce-0123456789", pending=T0 + timedelta(days=1))
    assert (again.create, again.nonce_hash, again.returned_nonce) == (False, BOUND.nonce_hash, None)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({}, "ec2_nonce_required"),
        ({"nonce": "wrong-nonce-0123456789"}, "ec2_nonce_mismatch"),
        # Same pendingTime: a copy of the document, not a restart, even where migration is allowed.
        ({"migrate": True}, "ec2_nonce_required"),
        # An older document is refused even with the right nonce.
        ({"nonce": "kept-nonce-0123456789", "pending": T0 - timedelta(seconds=1)}, "ec2_pending_time_older"),
    ],
)
def test_replays_are_refused(kwargs: dict[str, object], code: str) -> None:
    with pytest.raises(Unauthorized) as err:
        binding(BOUND, **kwargs)  # type: ignore[arg-type]
    assert err.value.code == code


def test_a_restarted_instance_migrates_only_where_allowed() -> None:
    later = T0 + timedelta(hours=5)
    moved = binding(BOUND, pending=later, migrate=True)
    assert (moved.create, moved.returned_nonce) == (False, "fresh-nonce-from-the-caller")
    with pytest.raises(Unauthorized):
        binding(BOUND, pending=later, migrate=False)


PRIOR = PriorCertificate(
    id=7,
    serial="5d60",
    role="edge",
    status="active",
    not_after=NOW + timedelta(hours=1),
    chain_started_at=NOW - timedelta(days=3),
    public_key_sha256="a" * 64,
)


def test_an_active_unexpired_certificate_renews_for_a_new_key() -> None:
    check_renewal(PRIOR, Role(name="edge", methods=("token",)), public_key_sha256="b" * 64, now=NOW)


def test_the_same_key_is_refused() -> None:
    with pytest.raises(ClientError) as err:
        check_renewal(PRIOR, Role(name="edge", methods=("token",)), public_key_sha256="a" * 64, now=NOW)
    assert err.value.code == "renew_same_key"


def test_a_key_this_identity_had_before_is_refused_and_others_are_not() -> None:
    prior = PriorCertificate(**{**_fields(PRIOR), "earlier_keys": frozenset({"c" * 64})})  # type: ignore[arg-type]
    role = Role(name="edge", methods=("token",))
    with pytest.raises(ClientError) as err:
        check_renewal(prior, role, public_key_sha256="c" * 64, now=NOW)
    assert (err.value.code, err.value.status_hint) == ("renew_key_reused", 400)
    check_renewal(prior, role, public_key_sha256="d" * 64, now=NOW)


def _fields(prior: PriorCertificate) -> dict[str, object]:
    return {f: getattr(prior, f) for f in PriorCertificate.__dataclass_fields__}


def _prior(**changes: object) -> PriorCertificate:
    values = {f: getattr(PRIOR, f) for f in PriorCertificate.__dataclass_fields__}
    values.update(changes)
    return PriorCertificate(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prior", "role", "error", "code"),
    [
        (_prior(status="revoked"), Role(name="e", methods=("token",)), Unauthorized, "certificate_revoked"),
        (_prior(status="superseded"), Role(name="e", methods=("token",)), Unauthorized, "certificate_superseded"),
        (
            _prior(not_after=NOW - timedelta(seconds=1)),
            Role(name="e", methods=("token",)),
            Unauthorized,
            "certificate_expired",
        ),
        (
            _prior(not_after=NOW - timedelta(minutes=11)),
            Role(name="e", methods=("token",), renew_grace=timedelta(minutes=10)),
            Unauthorized,
            "certificate_expired",
        ),
        (
            _prior(),
            Role(name="e", methods=("token",), max_renewal_age=timedelta(days=2)),
            Forbidden,
            "renewal_chain_too_old",
        ),
    ],
)
def test_certificates_that_may_not_renew(prior: PriorCertificate, role: Role, error: type, code: str) -> None:
    with pytest.raises(error) as err:
        check_renewal(prior, role, public_key_sha256="b" * 64, now=NOW)
    assert err.value.code == code


def test_renew_grace_and_renewal_age_allow_what_they_say() -> None:
    lenient = Role(name="e", methods=("token",), renew_grace=timedelta(minutes=10), max_renewal_age=timedelta(days=4))
    check_renewal(_prior(not_after=NOW - timedelta(minutes=9)), lenient, public_key_sha256="b" * 64, now=NOW)
