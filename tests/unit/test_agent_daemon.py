"""The daemon loop on a fake clock against the in-process fake issuer: several certificate
lifetimes in milliseconds. Real files, real keys, real JWS verification; only time is fake."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from clients.agent.daemon import Daemon, DaemonSettings
from clients.agent.files import prepare_out_dir
from clients.agent.hooks import ChangeEvent
from clients.agent.proofs import TokenSource
from clients.agent.schedule import Backoff
from clients.errors import TransportError
from clients.wire import RENEWAL_REFUSALS, AuthMode
from tests.unit.test_agent_fake_issuer import T0, FakeIssuer, TestCA

LIFETIME = timedelta(hours=24)
TOTAL = LIFETIME + timedelta(seconds=60)  # the fake backdates not_before by 60 s
RENEW = "/v1/renew"
ISSUE = "/v1/issue/token"


@dataclass
class FakeTime:
    """Clock and waiter in one: waiting moves the clock; ``stop_when`` ends the run."""

    current: datetime = T0
    stop_when: Callable[[FakeTime], bool] = lambda t: False
    waits: list[float] = field(default_factory=list)
    reason: str | None = None

    def now(self) -> datetime:
        return self.current

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def wait(self, seconds: float) -> bool:
        assert seconds >= 0
        self.waits.append(seconds)
        self.current += timedelta(seconds=seconds)
        if self.stop_when(self):
            self.reason = "test"
        return self.stopped


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


@dataclass
class Harness:
    fake: FakeIssuer
    time: FakeTime
    out: Path
    token_file: Path
    logs: list[str] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)
    hook_result: str | None = None
    # After every change, an operator puts a fresh token in the file (for re-attestation).
    refill_token: bool = False

    def daemon(self, *, rng: Callable[[], float] = lambda: 0.5, once: bool = False, auth: AuthMode = "token",
               server_id: str | None = None) -> Daemon:  # fmt: skip
        self.time.reason = None
        settings = DaemonSettings(
            out_dir=self.out, server="https://issuer.test", method="token", server_id=server_id, auth=auth,
            once=once, backoff=Backoff(base=5, cap=300),
        )  # fmt: skip
        return Daemon(
            settings, clock=self.time, waiter=self.time, rng=rng, connect=self.fake.connect,
            proofs=TokenSource(file=self.token_file), hook=self._hook, log=self.logs.append,
        )  # fmt: skip

    def _hook(self, event: ChangeEvent) -> str | None:
        self.events.append(event)
        if self.refill_token:
            token = f"t-refill-{len(self.events)}"
            self.fake.tokens.add(token)
            self.token_file.write_text(token)
        return self.hook_result

    def attempts(self, path: str) -> list[datetime]:
        return [s.at for s in self.fake.seen if s.path == path]

    def serial(self) -> str:
        return format(x509.load_pem_x509_certificate((self.out / "cert.pem").read_bytes()).serial_number, "x")

    def lines(self, text: str) -> list[str]:
        return [line for line in self.logs if text in line]


@pytest.fixture
def h(ca: TestCA, tmp_path: Path) -> Iterator[Harness]:
    time = FakeTime()
    fake = FakeIssuer(ca=ca, now=time.now, lifetime=LIFETIME, tokens={"t-1"})
    token_file = tmp_path / "token"
    token_file.write_text("t-1\n")
    return Harness(fake=fake, time=time, out=prepare_out_dir(tmp_path / "out"), token_file=token_file)


def due_after_issue(issued_at: datetime, jitter: float) -> datetime:
    not_before = issued_at - timedelta(seconds=60)
    return not_before + TOTAL * 2 / 3 - TOTAL * 0.1 * jitter


# --- the schedule -------------------------------------------------------------------------------


def test_bootstrap_then_renewal_at_the_jittered_time_over_five_lifetimes(h: Harness) -> None:
    h.time.stop_when = lambda t: len(h.fake.certificates) == 6
    assert h.daemon(rng=lambda: 0.5).run() == 0

    assert h.attempts(ISSUE) == [T0]
    renewed_at = h.attempts(RENEW)
    assert len(renewed_at) == 5
    previous = T0
    for at in renewed_at:
        assert at == due_after_issue(previous, 0.5)
        previous = at
    assert max(h.time.waits) <= 600  # it wakes up to re-read the clock
    assert [e.kind for e in h.events] == ["bootstrap"] + ["renew"] * 5
    assert h.events[-1].serial == h.serial()
    assert list(h.fake.status.values()) == ["superseded"] * 5 + ["active"]
    renewed = h.lines("renewed: serial ")
    assert len(renewed) == 5 and all("next renewal at 20" in line for line in renewed)
    assert h.logs[-1].endswith("stopping (test)")
    # One line per event: the schedule is announced once per certificate, not at every wake-up.
    assert len(h.lines("renewal due at")) == 6


@pytest.mark.parametrize("jitter", [0.0, 0.999])
def test_jitter_stays_within_a_tenth_of_the_lifetime(h: Harness, jitter: float) -> None:
    h.time.stop_when = lambda t: len(h.attempts(RENEW)) == 1
    assert h.daemon(rng=lambda: jitter).run() == 0
    (at,) = h.attempts(RENEW)
    two_thirds = due_after_issue(T0, 0.0)
    assert two_thirds - TOTAL / 10 <= at <= two_thirds
    assert at == due_after_issue(T0, jitter)


# --- retries --------------------------------------------------------------------------------------


def test_transient_failures_back_off_exponentially_to_the_cap_and_reset_after_success(h: Harness) -> None:
    refused = TransportError("connection refused", code="server_unreachable")
    h.fake.script[RENEW] = [refused] * 9 + [None, refused]
    h.time.stop_when = lambda t: len(h.attempts(RENEW)) == 12
    assert h.daemon(rng=lambda: 0.999).run() == 0

    attempts = h.attempts(RENEW)
    gaps = [(b - a).total_seconds() for a, b in zip(attempts, attempts[1:])]
    assert gaps[:9] == pytest.approx([c * 0.999 for c in (5, 10, 20, 40, 80, 160, 300, 300, 300)])
    assert gaps[10] == pytest.approx(5 * 0.999)  # a success resets the backoff
    assert len(h.lines("warning: renew failed (9 in a row): connection refused (code server_unreachable)")) == 1
    assert len(h.lines("renewed: serial")) == 2
    assert h.attempts(ISSUE) == [T0]  # transient failures never cost a re-attestation


def test_retry_after_is_honoured(h: Harness) -> None:
    h.fake.script[RENEW] = [(503, "signer_unavailable", "120"), (429, "rate_limited", "Fri, 01 Jan 2100 00:00:00 GMT")]
    h.time.stop_when = lambda t: len(h.attempts(RENEW)) == 3
    assert h.daemon(rng=lambda: 0.5).run() == 0
    first, second, third = h.attempts(RENEW)
    assert (second - first).total_seconds() == 120  # not the 2.5 s of the backoff
    assert (third - second).total_seconds() == 3600  # a date far away is honoured up to an hour
    assert h.lines("(code signer_unavailable, HTTP 503, request unknown, retry after 120s)")


def test_an_outage_past_expiry_gets_a_last_try_then_re_attestation(h: Harness) -> None:
    back = T0 + timedelta(days=3)
    h.fake.outage = (T0 + timedelta(seconds=1), back)
    h.fake.tokens.add("t-2")

    def operator(t: FakeTime) -> bool:
        if t.current > T0 + timedelta(days=2):
            h.token_file.write_text("t-2")  # the on-call engineer brings a new token
        return len(h.events) == 2

    h.time.stop_when = operator
    assert h.daemon(rng=lambda: 0.999).run() == 0

    not_after = h.fake.certificates[h.events[0].serial].not_valid_after_utc
    renew_tries = h.attempts(RENEW)
    assert renew_tries[0] == due_after_issue(T0, 0.999)
    assert all(t < not_after for t in renew_tries)  # once expired, renewal is pointless
    assert any(not_after - timedelta(seconds=60) <= t < not_after for t in renew_tries)  # the last chance
    gaps = [(b - a).total_seconds() for a, b in zip(renew_tries, renew_tries[1:])]
    assert max(gaps) <= 300
    reattest_tries = h.attempts(ISSUE)[1:]
    assert reattest_tries[0] >= not_after and reattest_tries[-1] >= back
    # Before the new token arrived: the spent one is not sent again, and people are told.
    assert h.lines("error: reattest failed") and h.lines("was used already; put a new one there (code token_spent)")
    assert [e.kind for e in h.events] == ["bootstrap", "reattest"]
    assert h.lines("re-attested: serial")


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(RENEWAL_REFUSALS))
def test_each_refusal_falls_back_to_re_attestation_at_once(h: Harness, code: str) -> None:
    h.refill_token = True
    h.fake.refuse_renewals = code
    h.time.stop_when = lambda t: len(h.events) == 2
    assert h.daemon().run() == 0

    (renewed_at,) = h.attempts(RENEW)
    assert h.attempts(ISSUE) == [T0, renewed_at]  # no waiting in between
    assert [e.kind for e in h.events] == ["bootstrap", "reattest"]
    (line,) = h.lines("refused")
    assert f"renewal of {h.events[0].serial} refused:" in line
    assert f"(code {code}, HTTP 403" in line and line.endswith("proving this machine's identity again (token)")


def test_a_revoked_certificate_is_replaced_by_re_attestation(h: Harness) -> None:
    h.refill_token = True
    assert h.daemon(once=True).run() == 0
    h.fake.status[h.serial()] = "revoked"
    h.time.current = due_after_issue(T0, 0.5)
    assert h.daemon(once=True).run() == 0
    assert h.lines("(code certificate_revoked, HTTP 403")
    assert [e.kind for e in h.events] == ["bootstrap", "reattest"]
    assert h.fake.status[h.serial()] == "active"


def test_a_failed_re_attestation_keeps_trying_and_alerts(h: Harness) -> None:
    h.fake.refuse_renewals = "certificate_superseded"
    h.token_file.write_text("t-1")
    h.time.stop_when = lambda t: len(h.lines("error: reattest failed")) == 3
    assert h.daemon(rng=lambda: 0.999).run() == 0
    assert len(h.attempts(RENEW)) == 1  # refused once: no more renewal attempts for that serial
    assert h.lines("error: reattest failed (3 in a row): the join token in --token-file")


# --- exit statuses --------------------------------------------------------------------------------


def test_the_first_bootstrap_refused_ends_the_daemon_with_1(h: Harness) -> None:
    h.token_file.write_text("not-a-token")
    assert h.daemon().run() == 1
    assert h.lines("error: bootstrap failed: token_invalid (code token_invalid, HTTP 401")


def test_no_token_for_the_first_bootstrap_is_a_configuration_error(h: Harness) -> None:
    h.token_file.write_text("\n")
    assert h.daemon().run() == 78
    assert h.fake.seen == []


def test_the_first_bootstrap_is_retried_when_the_issuer_is_away(h: Harness) -> None:
    h.fake.script[ISSUE] = [TransportError("connection refused", code="server_unreachable")] * 2
    h.time.stop_when = lambda t: len(h.events) == 1
    assert h.daemon(rng=lambda: 0.999).run() == 0
    assert len(h.attempts(ISSUE)) == 3


def test_an_unknown_audience_after_bootstrap_is_a_usage_error(h: Harness) -> None:
    h.fake.announce_server_id = False
    assert h.daemon().run() == 64
    assert h.lines("(code server_id_missing)")
    assert h.attempts(RENEW) == []


def test_once(h: Harness) -> None:
    assert h.daemon(once=True).run() == 0  # bootstrapped
    assert [e.kind for e in h.events] == ["bootstrap"]
    assert h.daemon(once=True).run() == 0  # not due
    assert h.logs[-1].endswith(f"renewal due at {due_after_issue(T0, 0.5):%Y-%m-%dT%H:%M:%SZ}")
    h.time.current = due_after_issue(T0, 0.5)
    h.fake.script[RENEW] = [(502, "bad_gateway", None)]
    assert h.daemon(once=True).run() == 75
    assert h.daemon(once=True).run() == 0  # renewed
    assert [e.kind for e in h.events] == ["bootstrap", "renew"]
    h.time.current += LIFETIME  # expired: re-attestation; t-1 was spent at bootstrap, the issuer says so
    assert h.daemon(once=True).run() == 1
    assert h.lines("error: reattest failed: token_invalid (code token_invalid, HTTP 401")
    h.token_file.write_text("")
    assert h.daemon(once=True).run() == 78
    h.token_file.write_text("t-3")
    h.fake.tokens.add("t-3")
    assert h.daemon(once=True).run() == 0
    assert [e.kind for e in h.events] == ["bootstrap", "renew", "reattest"]


# --- mTLS and the hook ----------------------------------------------------------------------------


def test_mtls_renewal_presents_the_current_certificate(h: Harness) -> None:
    h.time.stop_when = lambda t: len(h.attempts(RENEW)) == 2
    assert h.daemon(auth="mtls").run() == 0
    renewals = [s for s in h.fake.seen if s.path == RENEW]
    assert [format(s.client_cert.serial_number, "x") for s in renewals if s.client_cert] == [
        e.serial for e in h.events[:2]
    ]
    assert all("Authorization" not in s.headers for s in renewals)


def test_a_failing_hook_is_logged_and_the_daemon_carries_on(h: Harness) -> None:
    h.hook_result = "reload-app exited with status 3"
    h.time.stop_when = lambda t: len(h.events) == 3
    assert h.daemon().run() == 0
    assert (
        len(h.lines("error: on-change command failed: reload-app exited with status 3 (the new files are installed)"))
        == 3
    )
    assert len(h.lines("renewed: serial")) == 2


def test_a_successful_hook_is_logged(h: Harness) -> None:
    h.time.stop_when = lambda t: len(h.events) == 1
    assert h.daemon().run() == 0
    assert h.lines(f"on-change command done for {h.events[0].serial}")


def test_stopping_during_a_wait_exits_0(h: Harness) -> None:
    h.time.stop_when = lambda t: True
    assert h.daemon().run() == 0
    assert h.logs[-1].endswith("stopping (test)")
    assert h.serial() == h.events[0].serial  # the bootstrap before the first wait is complete
