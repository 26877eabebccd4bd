"""The IMDS client follows the service's rules, against a stand-in that misbehaves as EC2's does:
a token that expires (401 once), 503 once, 503 always, and a token reply lost beyond the PUT
response hop limit. Waiting is on a fake clock; the HTTP is real."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clients.agent.cli import main
from clients.errors import EX_FAILURE, EX_TEMPFAIL, ImdsError, ImdsUnavailable
from clients.imds import DOCUMENT_PATH, RSA2048_PATH, TOKEN_PATH, ImdsClient, ImdsPatience
from tests.support.fake_imds import SAMPLE_DOCUMENT, SAMPLE_RSA2048, FakeImds, ImdsConfig, fake_imds

TOKEN_HEADER = "X-aws-ec2-metadata-token"


@dataclass
class FakeTime:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


def client(imds: FakeImds | str, clock: FakeTime, *, logs: list[str] | None = None, **kwargs: object) -> ImdsClient:
    endpoint = imds if isinstance(imds, str) else imds.url
    return ImdsClient(
        endpoint,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        jitter=lambda: 1.0,  # the top of each backoff window, so the waits are predictable
        log=(logs if logs is not None else []).append,
        **kwargs,  # type: ignore[arg-type]
    )


def trail(imds: FakeImds) -> list[tuple[str, str, int, bool]]:
    """(method, path, status, sent a token) of every request, in order."""
    return [(r.method, r.path, r.status, TOKEN_HEADER in r.headers) for r in imds.requests]


def test_a_token_that_expired_is_replaced_once(clock: FakeTime) -> None:
    logs: list[str] = []
    with fake_imds(ImdsConfig(expire_first_token=True)) as imds:
        identity = client(imds, clock, logs=logs).instance_identity()
        first, second = imds.requests[0], imds.requests[2]
        assert trail(imds) == [
            ("PUT", TOKEN_PATH, 200, False),
            ("GET", DOCUMENT_PATH, 401, True),  # the token expired
            ("PUT", TOKEN_PATH, 200, False),  # a new one
            ("GET", DOCUMENT_PATH, 200, True),
            ("GET", RSA2048_PATH, 200, True),
        ]
        used = [r.headers[TOKEN_HEADER] for r in imds.requests if r.method == "GET"]
    assert identity.document == SAMPLE_DOCUMENT and identity.rsa2048 == SAMPLE_RSA2048
    assert used[0] != used[1] == used[2]  # the new token for both GETs after it
    assert first.status == second.status == 200
    assert clock.sleeps == []  # no waiting: a new token is all it takes
    assert any("session token was rejected" in line for line in logs)


def test_a_token_refused_even_when_new_is_a_refusal_not_a_retry_loop(clock: FakeTime) -> None:
    with fake_imds() as imds:
        imds_client = client(imds, clock)
        with pytest.raises(ImdsError) as err:
            imds_client.get(DOCUMENT_PATH, token="never-issued")
    assert err.value.code == "imds_token_rejected" and err.value.exit_status == EX_FAILURE


def test_503_once_is_retried_after_a_backoff(clock: FakeTime) -> None:
    logs: list[str] = []
    with fake_imds(ImdsConfig(unavailable=1)) as imds:
        identity = client(imds, clock, logs=logs).instance_identity()
        statuses = [status for _, _, status, _ in trail(imds)]
    assert identity.document == SAMPLE_DOCUMENT
    assert statuses == [503, 200, 200, 200]
    assert clock.sleeps == [0.5]
    assert any("HTTP 503" in line and "trying again in 0.5s" in line for line in logs)


def test_503_always_ends_as_a_temporary_failure_within_the_limit(clock: FakeTime) -> None:
    with fake_imds(ImdsConfig(unavailable=-1)) as imds:
        with pytest.raises(ImdsUnavailable) as err:
            client(imds, clock).instance_identity()
        tries = len(imds.requests)
    # Exponential, capped at 10 s; the next wait would have passed the two minutes.
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, *[10.0] * 10]
    assert sum(clock.sleeps) <= 120 < sum(clock.sleeps) + 10
    assert tries == len(clock.sleeps) + 1
    assert err.value.exit_status == EX_TEMPFAIL  # never 1: schedulers retry 75
    assert (
        "answered HTTP 503" in err.value.message and f"still failing after {tries} tries in 120s" in err.value.message
    )


def test_full_jitter_spreads_the_waits(clock: FakeTime) -> None:
    draws = iter([0.25, 0.5, 0.0])
    with fake_imds(ImdsConfig(unavailable=3)) as imds:
        imds_client = ImdsClient(imds.url, sleep=clock.sleep, monotonic=clock.monotonic, jitter=lambda: next(draws))
        imds_client.instance_identity()
    assert clock.sleeps == [0.125, 0.5, 0.05]  # uniform in [0, ceiling], at least 50 ms


def test_the_limit_is_configurable(clock: FakeTime) -> None:
    with fake_imds(ImdsConfig(unavailable=-1)) as imds, pytest.raises(ImdsUnavailable) as err:
        client(imds, clock, patience=ImdsPatience(max_wait=3)).instance_identity()
    assert clock.sleeps == [0.5, 1.0]
    assert "in 3s" in err.value.message


def test_a_refused_connection_is_retried_then_temporary(clock: FakeTime) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        with pytest.raises(ImdsUnavailable) as err:
            client(endpoint, clock, patience=ImdsPatience(max_wait=10)).instance_identity()
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert err.value.code == "imds_unreachable" and err.value.exit_status == EX_TEMPFAIL


def test_a_token_reply_lost_beyond_the_hop_limit_is_explained(clock: FakeTime) -> None:
    # tokens required; the agent is in a container two hops away; the instance's limit is 1
    with fake_imds(ImdsConfig(hops=2, hop_limit=1)) as imds:
        with pytest.raises(ImdsUnavailable) as err:
            client(imds, clock, timeout=0.3, patience=ImdsPatience(max_wait=0)).instance_identity()
        answered = [(r.method, r.path, r.status) for r in imds.requests]
    assert err.value.code == "imds_hop_limit" and err.value.exit_status == EX_TEMPFAIL
    assert "--http-put-response-hop-limit 2" in err.value.message
    assert "never arrives" in err.value.message
    assert answered == [("GET", DOCUMENT_PATH, 401)]  # the probe; the PUT never got its answer out


def test_within_the_hop_limit_the_same_container_gets_its_token(clock: FakeTime) -> None:
    with fake_imds(ImdsConfig(hops=2, hop_limit=2)) as imds:
        client(imds, clock, timeout=0.3).instance_identity()
        assert trail(imds)[0] == ("PUT", TOKEN_PATH, 200, False)


def test_beyond_the_hop_limit_with_optional_tokens_it_reads_without_a_token(clock: FakeTime) -> None:
    logs: list[str] = []
    with fake_imds(ImdsConfig(mode="optional", hops=2, hop_limit=1)) as imds:
        identity = client(imds, clock, logs=logs, timeout=0.3).instance_identity()
        gets = [r for r in imds.requests if r.method == "GET"]
    assert identity.document == SAMPLE_DOCUMENT
    assert all(TOKEN_HEADER not in g.headers for g in gets)
    assert any(line.startswith("warning:") and "IMDSv1" in line and "hop-limit 2" in line for line in logs)


def test_the_imdsv1_fallback_can_be_forbidden(clock: FakeTime) -> None:
    with fake_imds(ImdsConfig(mode="optional", hops=2, hop_limit=1)) as imds, pytest.raises(ImdsError) as err:
        client(imds, clock, timeout=0.3, allow_v1_fallback=False).instance_identity()
    assert err.value.code == "imds_hop_limit" and "AWS_EC2_METADATA_V1_DISABLED" in err.value.message


@pytest.fixture
def always_503() -> Iterator[FakeImds]:
    with fake_imds(ImdsConfig(unavailable=-1)) as imds:
        yield imds


@pytest.mark.parametrize("command", [["bootstrap"], ["run", "--once"]])
def test_bootstrap_exits_75_when_imds_stays_unavailable(
    command: list[str], always_503: FakeImds, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        *command, "--method", "aws-ec2", "--server", "http://127.0.0.1:9", "--out", str(tmp_path / "out"),
        "--imds-endpoint", always_503.url, "--imds-max-wait", "0.6",
    ]  # fmt: skip
    assert main(argv) == EX_TEMPFAIL
    err = capsys.readouterr().err
    assert "HTTP 503" in err and "(code imds_http_error)" in err
    assert "trying again in" in err  # progress while it waits
    assert len(always_503.requests) >= 2
