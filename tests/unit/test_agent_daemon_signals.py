"""SIGTERM/SIGINT: real signals, to this process (the daemon on a fake clock) and to a real
``issuer-agent run`` process. A stop while idle is immediate; a stop during an exchange lets
it finish and install; a second signal stops at once; the files are always a complete set."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from clients.agent.bootstrap import IssuerTransport
from clients.agent.daemon import Daemon, DaemonSettings
from clients.agent.files import prepare_out_dir
from clients.agent.http import ClientCertificate
from clients.agent.installed import read_current
from clients.agent.proofs import TokenSource
from clients.agent.stop import StopSwitch
from tests.support.fake_imds import serve_in_thread
from tests.unit.test_agent_fake_issuer import T0, FakeIssuer, TestCA

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


@dataclass
class SignalledClock:
    """A fake clock whose stop state is the real :class:`StopSwitch` (so real signals stop it)."""

    switch: StopSwitch
    current: datetime = T0
    waits: int = 0
    signal_on_wait: int | None = None

    def now(self) -> datetime:
        return self.current

    @property
    def stopped(self) -> bool:
        return self.switch.stopped

    @property
    def reason(self) -> str | None:
        return self.switch.reason

    def wait(self, seconds: float) -> bool:
        self.waits += 1
        self.current += timedelta(seconds=seconds)
        if self.waits == self.signal_on_wait:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next bytecode
        return self.switch.wait(0)


@dataclass
class Setup:
    fake: FakeIssuer
    clock: SignalledClock
    out: Path
    logs: list[str] = field(default_factory=list)
    signals_during_renewal: int = 0

    def connect(self, certificate: ClientCertificate | None) -> IssuerTransport:
        inner = self.fake.connect(certificate)
        setup = self

        class Signalling:
            def post_json(
                self, path: str, body: Mapping[str, object], *, headers: Mapping[str, str] | None = None
            ) -> Mapping[str, object]:
                if path == "/v1/renew":
                    for _ in range(setup.signals_during_renewal):
                        os.kill(os.getpid(), signal.SIGTERM)
                return inner.post_json(path, body, headers=headers)

        return Signalling()

    def run(self) -> int:
        settings = DaemonSettings(out_dir=self.out, server="https://issuer.test", method="token")
        daemon = Daemon(
            settings, clock=self.clock, waiter=self.clock, rng=lambda: 0.5, connect=self.connect,
            proofs=TokenSource(file=None, inline="t-1"), log=self.logs.append,
        )  # fmt: skip
        with self.clock.switch.signals_installed():
            return daemon.run()


@pytest.fixture
def setup(ca: TestCA, tmp_path: Path) -> Iterator[Setup]:
    clock = SignalledClock(StopSwitch())
    fake = FakeIssuer(ca=ca, now=clock.now, tokens={"t-1"})
    previous = signal.getsignal(signal.SIGTERM)
    yield Setup(fake=fake, clock=clock, out=prepare_out_dir(tmp_path / "out"))
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored


def test_sigterm_while_waiting_exits_0_at_once(setup: Setup) -> None:
    setup.clock.signal_on_wait = 3
    assert setup.run() == 0
    assert setup.clock.waits == 3
    assert setup.logs[-1].endswith("stopping (SIGTERM)")
    assert read_current(setup.out) is not None


def test_sigterm_during_a_renewal_lets_it_finish_and_install(setup: Setup) -> None:
    setup.signals_during_renewal = 1
    assert setup.run() == 0
    (old, new) = setup.fake.status
    assert setup.fake.status == {old: "superseded", new: "active"}
    current = read_current(setup.out)  # a complete, matching set: the new one
    assert current is not None and current.serial == new
    assert f"renewed: serial {new}" in setup.logs[-2]
    assert setup.logs[-1].endswith("stopping (SIGTERM)")


def test_a_second_signal_stops_at_once_and_keeps_the_old_set(setup: Setup) -> None:
    setup.signals_during_renewal = 2
    assert setup.run() == 0
    (only,) = setup.fake.status  # the renewal never reached the issuer
    current = read_current(setup.out)
    assert current is not None and current.serial == only
    assert setup.logs[-1].endswith("stopping at once (SIGTERM)")
    generations = [p for p in setup.out.iterdir() if p.name.startswith(".gen-")]
    assert generations == [current.client_certificate.key.parent]


# --- a real process ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_running_agent_stops_cleanly_on_a_signal(ca: TestCA, tmp_path: Path, signum: signal.Signals) -> None:
    fake = FakeIssuer(ca=ca, now=lambda: datetime.now(timezone.utc), tokens={"t-1"})
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ISSUER_"))}
    env["ISSUER_JOIN_TOKEN"] = "t-1"
    with serve_in_thread(fake.http_app()) as url:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from clients.agent.cli import main; sys.exit(main())",
             "run", "--method", "token", "--server", url, "--out", str(out)],
            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr or ()], daemon=True)
        reader.start()
        seen: list[str] = []
        try:
            while not any("renewal due at" in line for line in seen):
                seen.append(lines.get(timeout=30))  # a safety net, not a speed assertion
            process.send_signal(signum)
            status = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        reader.join(timeout=5)
        while not lines.empty():
            seen.append(lines.get())
    assert status == 0, seen
    assert seen[-1].rstrip().endswith(f"stopping ({signum.name})"), seen
    assert any("bootstrapped: serial" in line for line in seen)
    current = read_current(out)
    assert current is not None and current.state is not None and current.state.server == url
