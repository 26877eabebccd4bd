"""When renewal is due and when a failed attempt is retried: pure functions, exact values."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from clients.agent.schedule import RETRY_AFTER_MAX, Backoff, next_attempt, renewal_due, retry_after_seconds

NB = datetime(2031, 1, 1, tzinfo=timezone.utc)
NA = NB + timedelta(hours=24)


def test_due_at_two_thirds_of_the_lifetime_without_jitter() -> None:
    assert renewal_due(not_before=NB, not_after=NA, issuer_renew_after=None, jitter=0.0) == NB + timedelta(hours=16)


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.999999])
def test_jitter_brings_it_forward_by_at_most_a_tenth_of_the_lifetime(jitter: float) -> None:
    due = renewal_due(not_before=NB, not_after=NA, issuer_renew_after=None, jitter=jitter)
    assert NB + timedelta(hours=16) - timedelta(hours=2.4) < due <= NB + timedelta(hours=16)
    assert due == NB + timedelta(hours=16) - timedelta(hours=2.4) * jitter


def test_the_issuers_renew_after_wins_when_it_is_inside_the_lifetime() -> None:
    stored = NB + timedelta(hours=20)
    assert renewal_due(not_before=NB, not_after=NA, issuer_renew_after=stored, jitter=0.5) == stored - timedelta(
        hours=1.2
    )


@pytest.mark.parametrize("stored", [NB - timedelta(seconds=1), NA, NA + timedelta(days=3)])
def test_a_renew_after_outside_the_lifetime_is_ignored(stored: datetime) -> None:
    assert renewal_due(not_before=NB, not_after=NA, issuer_renew_after=stored, jitter=0.0) == NB + timedelta(hours=16)


def test_a_bogus_jitter_is_clamped_so_it_is_never_after_expiry() -> None:
    assert renewal_due(not_before=NB, not_after=NA, issuer_renew_after=None, jitter=-5) == NB + timedelta(hours=16)
    assert renewal_due(not_before=NB, not_after=NA, issuer_renew_after=None, jitter=7) == NB + timedelta(hours=13.6)
    assert renewal_due(not_before=NA, not_after=NB, issuer_renew_after=None, jitter=0.5) == NA


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(base=5, cap=300)
    assert [backoff.ceiling(n) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert backoff.ceiling(10_000) == 300


@pytest.mark.parametrize("failures", [0, 3, 6, 50])
def test_backoff_is_full_jitter_between_one_second_and_the_ceiling(failures: int) -> None:
    backoff = Backoff(base=5, cap=300)
    ceiling = backoff.ceiling(failures)
    assert backoff.delay(failures, jitter=0.0) == 1.0
    assert backoff.delay(failures, jitter=0.5) == max(1.0, ceiling / 2)
    assert backoff.delay(failures, jitter=0.999) == pytest.approx(ceiling * 0.999)


def test_retry_after_is_honoured_up_to_an_hour() -> None:
    backoff = Backoff(base=5, cap=300)
    assert backoff.delay(0, jitter=0.5, retry_after=120) == 120
    assert backoff.delay(6, jitter=0.5, retry_after=2) == 150  # the backoff is longer: keep it
    assert backoff.delay(0, jitter=0.5, retry_after=10**9) == RETRY_AFTER_MAX


def test_retry_after_header_forms() -> None:
    now = datetime(2031, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("30", now=now) == 30
    assert retry_after_seconds(" 7 ", now=now) == 7
    assert retry_after_seconds("Wed, 01 Jan 2031 12:01:30 GMT", now=now) == 90
    assert retry_after_seconds("Wed, 01 Jan 2031 11:00:00 GMT", now=now) == 0  # in the past: now
    for unusable in (None, "", "soon", "-5", "1.5"):
        assert retry_after_seconds(unusable, now=now) is None


def test_a_retry_is_pulled_in_so_the_certificate_gets_a_last_try_before_expiry() -> None:
    now = NA - timedelta(minutes=10)
    assert next_attempt(now, 30, not_after=NA) == now + timedelta(seconds=30)  # well before: unchanged
    assert next_attempt(now, 3600, not_after=NA) == NA - timedelta(seconds=60)
    close = NA - timedelta(seconds=40)
    assert next_attempt(close, 3600, not_after=NA) == NA - timedelta(seconds=20)  # halfway there
    closer = NA - timedelta(seconds=15)
    assert next_attempt(closer, 3600, not_after=NA) == NA - timedelta(seconds=10)
    assert next_attempt(NA - timedelta(seconds=5), 300, not_after=NA) == NA + timedelta(seconds=295)  # last try done
    assert next_attempt(NA + timedelta(hours=1), 300, not_after=NA) == NA + timedelta(hours=1, seconds=300)
    assert next_attempt(now, 3600, not_after=None) == now + timedelta(hours=1)
