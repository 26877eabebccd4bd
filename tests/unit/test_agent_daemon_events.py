"""The daemon on the fake clock: a denied identity stops it (77) instead of re-attesting, an instance
metadata service that is not answering yet does not, and --metrics-file follows every event in the
node_exporter textfile format (parsed back with prometheus_client, an independent reader)."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from clients.agent.bootstrap import Proof, TokenProof
from clients.agent.daemon import Daemon, DaemonSettings
from clients.agent.metrics import MetricsFile, render
from clients.agent.schedule import Backoff
from clients.errors import EX_NOPERM, ImdsUnavailable
from tests.unit.test_agent_daemon import ISSUE, RENEW, FakeTime, Harness, ca, h
from tests.unit.test_agent_fake_issuer import T0

__all__ = ["ca", "h"]  # fixtures, used by name


def daemon(h: Harness, *, proofs: object = None, metrics: Path | None = None) -> Daemon:
    h.time.reason = None
    settings = DaemonSettings(out_dir=h.out, server="https://issuer.test", method="token", backoff=Backoff(5, 300))
    return Daemon(
        settings,
        clock=h.time,
        waiter=h.time,
        rng=lambda: 0.5,
        connect=h.fake.connect,
        proofs=proofs or (lambda: TokenProof(token="t-1")),  # type: ignore[arg-type]
        log=h.logs.append,
        observer=MetricsFile(metrics, out_dir=h.out, log=h.logs.append) if metrics else None,
    )


def test_a_denied_renewal_stops_the_daemon_without_re_attesting(h: Harness) -> None:
    h.fake.tokens.add("t-2")  # a re-attestation would succeed: it must not be tried
    h.time.stop_when = lambda t: t.current > T0 + timedelta(days=3)
    h.fake.refuse_renewals = "identity_denied"
    assert daemon(h).run() == EX_NOPERM
    assert len(h.attempts(ISSUE)) == 1 and len(h.attempts(RENEW)) == 1
    (line,) = h.lines("denies this machine's identity")
    assert "(code identity_denied, HTTP 403" in line and line.endswith("stopping")
    assert (h.out / "denied.json").exists()


def test_a_denied_bootstrap_is_not_retried(h: Harness) -> None:
    h.fake.script[ISSUE] = [(403, "identity_denied", None)]
    h.time.stop_when = lambda t: t.current > T0 + timedelta(hours=1)
    assert daemon(h).run() == EX_NOPERM
    assert len(h.attempts(ISSUE)) == 1 and h.time.waits == []


def test_an_imds_that_is_not_answering_yet_is_waited_for(h: Harness) -> None:
    failures = [ImdsUnavailable("IMDS answered HTTP 503", code="imds_http_error")] * 3

    def proofs() -> Proof:
        if failures:
            raise failures.pop()
        return TokenProof(token="t-1")

    h.time.stop_when = lambda t: (h.out / "cert.pem").exists()
    assert daemon(h, proofs=proofs).run() == 0
    assert len(h.attempts(ISSUE)) == 1 and (h.out / "cert.pem").exists()
    assert len(h.lines("warning: bootstrap failed")) == 3
    assert h.time.waits[:3] == [2.5, 5.0, 10.0]  # backoff with jitter, never a busy loop


def read_metrics(path: Path) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            values[sample.name] = sample.value
    return values


def test_the_metrics_file_follows_every_event(h: Harness, tmp_path: Path) -> None:
    metrics = tmp_path / "textfile" / "issuer-agent.prom"
    metrics.parent.mkdir()
    h.time.stop_when = lambda t: len(h.attempts(RENEW)) == 1
    assert daemon(h, metrics=metrics).run() == 0
    cert_not_after = h.fake.certificates[h.serial()].not_valid_after_utc
    renewed_at = h.attempts(RENEW)[0]
    values = read_metrics(metrics)
    assert values == {
        "issuer_agent_certificate_not_after_seconds": cert_not_after.timestamp(),
        "issuer_agent_certificate_renewal_due_seconds": pytest.approx(
            values["issuer_agent_certificate_renewal_due_seconds"]
        ),
        "issuer_agent_last_renewal_attempt_timestamp_seconds": renewed_at.timestamp(),
        "issuer_agent_last_renewal_success_timestamp_seconds": renewed_at.timestamp(),
        "issuer_agent_renewal_consecutive_failures": 0.0,
    }
    assert renewed_at.timestamp() < values["issuer_agent_certificate_renewal_due_seconds"] < cert_not_after.timestamp()
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644
    assert os.listdir(metrics.parent) == ["issuer-agent.prom"]  # renamed into place: no temporary files left

    # A restarted daemon meets an outage: failures count up; no success since it started, so none is written.
    h.fake.outage = (h.time.current, h.time.current + timedelta(days=2))
    h.time.stop_when = lambda t: len(h.attempts(RENEW)) == 4
    assert daemon(h, metrics=metrics).run() == 0
    values = read_metrics(metrics)
    assert values["issuer_agent_renewal_consecutive_failures"] == 3
    assert "issuer_agent_last_renewal_success_timestamp_seconds" not in values
    assert values["issuer_agent_last_renewal_attempt_timestamp_seconds"] == h.attempts(RENEW)[-1].timestamp()
    assert values["issuer_agent_certificate_not_after_seconds"] == cert_not_after.timestamp()


def test_unknown_times_are_left_out_and_labels_escaped() -> None:
    text = render({"issuer_agent_renewal_consecutive_failures": 2.0}, out_dir=Path('/etc/a "b"\\c'))
    assert text.splitlines() == [
        "# HELP issuer_agent_renewal_consecutive_failures Failed attempts since the last success.",
        "# TYPE issuer_agent_renewal_consecutive_failures gauge",
        'issuer_agent_renewal_consecutive_failures{out="/etc/a \\"b\\"\\\\c"} 2',
    ]


def test_a_metrics_file_that_cannot_be_written_is_a_warning_not_a_stop(h: Harness, tmp_path: Path) -> None:
    h.time.stop_when = lambda t: (h.out / "cert.pem").exists()
    assert daemon(h, metrics=tmp_path / "missing-dir" / "x.prom").run() == 0
    assert len(h.lines("warning: --metrics-file: cannot write")) == 1  # said once, not at every event


def test_fake_time_is_the_daemons_clock() -> None:
    # Guards the tests above: FakeTime moves only when the daemon waits.
    time = FakeTime()
    assert time.now() == T0 and not time.wait(5) and time.now() == T0 + timedelta(seconds=5)
