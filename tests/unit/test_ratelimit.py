"""The per-identity token bucket and the ``[issuer] rate_limit`` setting, with a clock the test moves."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from issuer.errors import ConfigError
from issuer.policy.ratelimit import RateLimit, RateLimited, TokenBucketLimiter, parse_rate_limit
from issuer.settings import load_settings


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "count", "seconds"),
    [
        ("10/min", 10, 60),
        ("10/m", 10, 60),
        (" 3 / second ", 3, 1),
        ("100/h", 100, 3600),
        ("100/hour", 100, 3600),
        ("5/30s", 5, 30),
        ("1/1d", 1, 86400),
        ("2/DAY", 2, 86400),
    ],
)
def test_rates_parse(text: str, count: int, seconds: int) -> None:
    assert parse_rate_limit(text) == RateLimit(count=count, per=timedelta(seconds=seconds))


@pytest.mark.parametrize("text", ["off", "OFF", "none", "unlimited"])
def test_off_means_no_limit(text: str) -> None:
    assert parse_rate_limit(text) is None


@pytest.mark.parametrize("text", ["", "10", "0/min", "-1/min", "ten/min", "10/fortnight", "10/0s", "10 per min", 10])
def test_bad_rates_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match=r"rate|count|duration|string"):
        parse_rate_limit(text)


def test_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "issuer.toml"
    env = {"ISSUER_STATE_DIR": str(tmp_path)}
    path.write_text("[issuer]\n")
    assert load_settings(path, env=env).rate_limit == RateLimit(10, timedelta(minutes=1))  # the default
    path.write_text('[issuer]\nrate_limit = "3/h"\n')
    assert load_settings(path, env=env).rate_limit == RateLimit(3, timedelta(hours=1))
    path.write_text('[issuer]\nrate_limit = "off"\n')
    assert load_settings(path, env=env).rate_limit is None
    path.write_text('[issuer]\nrate_limit = "lots"\n')
    with pytest.raises(ConfigError, match=r"\[issuer\] rate_limit: 'lots' is not a rate"):
        load_settings(path, env=env)


def test_a_burst_of_count_then_one_per_interval() -> None:
    clock = Ticker()
    limiter = TokenBucketLimiter(RateLimit(3, timedelta(minutes=1)), clock=clock)
    for _ in range(3):
        limiter.take("token", "edge-1")
    with pytest.raises(RateLimited) as refused:
        limiter.take("token", "edge-1")
    error = refused.value
    assert (error.status_hint, error.code, error.retry_after, error.principal) == (429, "rate_limited", 20, "edge-1")
    assert "edge-1" in error.reason and "3/1m" in error.reason
    assert "edge-1" not in error.detail  # the public text names nobody
    # Others are not affected, nor is the same name through another method.
    limiter.take("token", "edge-2")
    limiter.take("aws-ec2", "edge-1")
    # A refused request takes nothing: after 19 s still refused, with 1 s to wait.
    clock.now += 19
    with pytest.raises(RateLimited) as again:
        limiter.take("token", "edge-1")
    assert again.value.retry_after == 1
    clock.now += 1
    limiter.take("token", "edge-1")
    with pytest.raises(RateLimited):
        limiter.take("token", "edge-1")


def test_retry_after_is_at_least_one_second() -> None:
    clock = Ticker()
    limiter = TokenBucketLimiter(RateLimit(100, timedelta(seconds=1)), clock=clock)
    for _ in range(100):
        limiter.take("renew", "i-0abc")
    with pytest.raises(RateLimited) as refused:
        limiter.take("renew", "i-0abc")
    assert refused.value.retry_after == 1


def test_a_clock_that_steps_back_drains_nothing() -> None:
    clock = Ticker()
    limiter = TokenBucketLimiter(RateLimit(1, timedelta(minutes=1)), clock=clock)
    limiter.take("token", "a")
    clock.now -= 3600
    with pytest.raises(RateLimited):
        limiter.take("token", "a")
    clock.now += 3600 + 60
    limiter.take("token", "a")


def test_full_buckets_are_forgotten() -> None:
    clock = Ticker()
    limiter = TokenBucketLimiter(RateLimit(2, timedelta(minutes=1)), clock=clock, prune_every=4)
    for name in ("a", "b", "c"):
        limiter.take("token", name)
    assert len(limiter) == 3
    clock.now += 60  # every bucket refilled
    limiter.take("token", "d")  # the fourth request prunes, then charges d
    assert len(limiter) == 1
    # An emptied bucket is remembered through a prune.
    limiter.take("token", "d")
    for name in ("e", "f", "g"):
        limiter.take("token", name)
    with pytest.raises(RateLimited):
        limiter.take("token", "d")


def test_the_tasks_of_one_role_each_have_a_bucket_of_their_own() -> None:
    from types import MappingProxyType

    from issuer.attest.identity import VerifiedIdentity
    from issuer.service.issuance.pipeline import rate_key

    def task(session: str | None) -> VerifiedIdentity:
        attributes = {"session_name": session} if session else {}
        return VerifiedIdentity(
            method="aws-iam",
            principal="arn:aws:iam::123456789012:role/ecs-task-web",
            account_id="123456789012",
            attributes=MappingProxyType(attributes),
        )

    # Every task of an ECS service is the same role ARN; a fleet starting together is not one caller.
    assert rate_key(task("task-1")) != rate_key(task("task-2"))
    assert rate_key(task("task-1")) == rate_key(task("task-1"))
    assert rate_key(task(None)) == "arn:aws:iam::123456789012:role/ecs-task-web"
    limiter = TokenBucketLimiter(parse_rate_limit("1/min"), clock=lambda: 0.0)
    limiter.take("aws-iam", rate_key(task("task-1")))
    limiter.take("aws-iam", rate_key(task("task-2")))  # its own bucket: not limited
