"""``issuer-agent run``: keep a valid certificate in the output directory, forever (or ``--once``).

One loop, every outside thing injected (clock, waiting, randomness, the issuer
transport, the attestation proof, the on-change hook, the log), so that tests
drive several certificate lifetimes in milliseconds against a fake issuer:

1. No certificate yet: bootstrap with the configured method.
2. Not due yet (see :func:`clients.agent.schedule.renewal_due`): sleep until it is.
3. Due: renew (the current certificate vouches for a new key).
4. Renewal refused (401/403: revoked, superseded, unknown, ...) or the certificate
   already expired: prove who the machine is again with the original method.
5. Transient failure: retry after exponential backoff with full jitter, honouring
   ``Retry-After``, never letting the certificate expire without another try. An
   instance metadata service that is not answering yet (at boot) is one of these.
6. After every change, run the on-change hook (its failure is logged, not fatal).
7. The issuer denies this machine's identity (403 ``identity_denied``): stop, exit 77.
   Proving the same identity again cannot help until an operator lifts the denial.

Exit status: 0 when stopped by SIGTERM/SIGINT (or ``--once`` done); 77 when the
issuer denies the identity; with no certificate yet, a failure that is not
transient ends the daemon with its status (1 refused, 64 usage, 78 configuration);
with ``--once``, any failure does (75 transient). Once the machine has a
certificate, failures are logged and retried, and only a usage error (which cannot
fix itself) or a denial ends the loop. An :class:`Observer` (the metrics file)
hears of every attempt, success, failure and installed certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Literal, Protocol

from clients.agent.bootstrap import IssuerTransport, Proof, bootstrap
from clients.agent.denial import record_denial
from clients.agent.hooks import ChangeEvent, ChangeHook, EventKind
from clients.agent.http import ClientCertificate
from clients.agent.installed import CurrentCredentials, read_current
from clients.agent.issued import IssuedCertificate
from clients.agent.remembered import Remembered
from clients.agent.renewal import renew, renewal_key_type
from clients.agent.schedule import Backoff, next_attempt, renewal_due, retry_after_seconds
from clients.agent.state import AgentState
from clients.agent.stop import Interrupted
from clients.errors import EX_NOPERM, EX_USAGE, AgentError, ServerProblem
from clients.wire import DEFAULT_KEY_TYPE, AuthMode, KeyType, Method

__all__ = ["Clock", "Connect", "Daemon", "DaemonSettings", "Observer", "ProofSource", "Step", "Waiter", "when"]

Step = Literal["bootstrap", "renew", "reattest"]
_PAST: Final[dict[Step, str]] = {"bootstrap": "bootstrapped", "renew": "renewed", "reattest": "re-attested"}


class Clock(Protocol):
    def now(self) -> datetime: ...


class Waiter(Protocol):
    @property
    def stopped(self) -> bool: ...

    @property
    def reason(self) -> str | None:
        """Why it stopped (e.g. ``SIGTERM``), for the log."""
        ...

    def wait(self, seconds: float) -> bool:
        """Block up to ``seconds``; return True (at once) when asked to stop."""
        ...


class Connect(Protocol):
    def __call__(self, client_certificate: ClientCertificate | None) -> IssuerTransport:
        """A transport to the issuer, presenting ``client_certificate`` over mTLS when given."""
        ...


# Builds the attestation proof for one attempt (credentials and tokens are read afresh each time).
ProofSource = Callable[[], Proof]


class Observer(Protocol):
    """Hears what the daemon does (the ``--metrics-file`` writer); must not raise."""

    def attempted(self, step: Step, at: datetime) -> None: ...

    def succeeded(self, step: Step, at: datetime) -> None: ...

    def failed(self, step: Step, at: datetime) -> None: ...

    def installed(self, *, not_after: datetime, due: datetime) -> None:
        """The certificate in force now, and when its renewal is due."""
        ...


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class DaemonSettings:
    out_dir: Path
    server: str
    method: Method
    server_id: str | None = None
    auth: AuthMode = "token"
    role: str | None = None
    key_type: KeyType | None = None  # None: the current key's type (bootstrap: the default)
    common_name: str | None = None
    once: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    max_nap: float = 600.0  # wake up at least this often to re-read the clock and the files
    remembered: Remembered = field(default_factory=Remembered)  # written into issuer.json at every issuance


@dataclass(frozen=True)
class _Change:
    kind: EventKind
    issued: IssuedCertificate
    state: AgentState


class Daemon:
    def __init__(
        self,
        settings: DaemonSettings,
        *,
        clock: Clock,
        waiter: Waiter,
        rng: Callable[[], float],
        connect: Connect,
        proofs: ProofSource,
        hook: ChangeHook | None = None,
        log: Callable[[str], None],
        observer: Observer | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._waiter = waiter
        self._rng = rng
        self._connect = connect
        self._proofs = proofs
        self._hook = hook
        self._log_line = log
        self._observer = observer
        self._jitter: tuple[str, float] | None = None  # (serial, fraction) of the current certificate

    def run(self) -> int:
        """Run until stopped (or one pass with ``once``); return the exit status (see the module docstring)."""
        s = self._settings
        self._log(f"watching {s.out_dir} (method {s.method}, renewal by {s.auth})")
        try:
            return self._loop()
        except Interrupted as exc:
            self._log(f"stopping at once ({exc})")
            return 0

    def _loop(self) -> int:
        once = self._settings.once
        failures = 0
        refused: str | None = None  # serial whose renewal the issuer refused: re-attest instead
        announced: str | None = None
        while not self._waiter.stopped:
            try:
                current = read_current(self._settings.out_dir)
            except AgentError as exc:
                self._log(f"error: {exc.one_line()}")
                return exc.exit_status
            now = self._clock.now()
            step: Step
            if current is None:
                step = "bootstrap"
            else:
                due = self._due(current.serial, current.not_before, current.not_after, current.renew_after)
                if self._observer is not None:
                    self._observer.installed(not_after=current.not_after, due=due)
                if now < due:
                    valid = f"certificate {current.serial} valid until {when(current.not_after)}"
                    line = f"{valid}; renewal due at {when(due)}"
                    if once:
                        self._log(line)
                        return 0
                    if line != announced:
                        self._log(line)
                        announced = line
                    if self._waiter.wait(min((due - now).total_seconds(), self._settings.max_nap)):
                        break
                    continue
                step = "reattest" if now >= current.not_after or refused == current.serial else "renew"
            if self._observer is not None:
                self._observer.attempted(step, now)
            try:
                change = self._step(step, current)
            except AgentError as exc:
                if self._observer is not None:
                    self._observer.failed(step, self._clock.now())
                if isinstance(exc, ServerProblem) and exc.denied:
                    record_denial(
                        self._settings.out_dir, exc, serial=current.serial if current else None, now=self._clock.now()
                    )
                    self._log(
                        f"error: {step} refused: {exc.one_line()}; the issuer denies this machine's identity, "
                        f"so proving it again cannot help until an operator lifts the denial: stopping"
                    )
                    return EX_NOPERM
                if step == "renew" and isinstance(exc, ServerProblem) and exc.refused and current is not None:
                    refused = current.serial
                    self._log(
                        f"renewal of {current.serial} refused: {exc.one_line()}; "
                        f"proving this machine's identity again ({self._settings.method})"
                    )
                    continue
                if once or (current is None and not exc.transient) or exc.exit_status == EX_USAGE:
                    self._log(f"error: {step} failed: {exc.one_line()}")
                    return exc.exit_status
                now = self._clock.now()  # the attempt itself took time (up to --timeout)
                wake = self._retry_at(exc, failures, now, current)
                failures += 1
                level = "warning" if exc.transient else "error"
                self._log(f"{level}: {step} failed ({failures} in a row): {exc.one_line()}; next try at {when(wake)}")
                announced = None
                if self._waiter.wait((wake - now).total_seconds()):
                    break
                continue
            failures, refused, announced = 0, None, None
            issued = change.issued
            due = self._due(issued.serial, issued.not_before, issued.not_after, issued.renew_after)
            if self._observer is not None:
                self._observer.succeeded(step, self._clock.now())
                self._observer.installed(not_after=issued.not_after, due=due)
            self._log(
                f"{_PAST[step]}: serial {issued.serial}, not after {when(issued.not_after)}; "
                f"next renewal at {when(due)}"
            )
            self._run_hook(change)
            if once:
                return 0
        self._log(f"stopping ({self._waiter.reason or 'asked to'})")
        return 0

    def _step(self, step: Step, current: CurrentCredentials | None) -> _Change:
        s = self._settings
        if step == "renew":
            assert current is not None
            renewed = renew(
                current,
                transport=self._connect(current.client_certificate if s.auth == "mtls" else None),
                out_dir=s.out_dir,
                auth=s.auth,
                server=s.server,
                server_id=s.server_id or (current.state.server_id if current.state else None),
                now=self._clock.now,
                key_type=s.key_type,
                common_name=s.common_name,
                settings=s.remembered,
            )
            return _Change("renew", renewed.issued, renewed.state)
        key_type = renewal_key_type(current, s.key_type) if current else (s.key_type or DEFAULT_KEY_TYPE)
        previous_id = current.state.server_id if current and current.state else None
        result = bootstrap(
            self._proofs(),
            transport=self._connect(None),
            out_dir=s.out_dir,
            role=s.role,
            key_type=key_type,
            common_name=s.common_name,
            server=s.server,
            server_id=s.server_id or previous_id,
            settings=s.remembered,
        )
        return _Change("bootstrap" if current is None else "reattest", result.issued, result.state)

    def _due(self, serial: str, not_before: datetime, not_after: datetime, renew_after: datetime | None) -> datetime:
        # One jitter per certificate, so that waking up early to re-read the clock does not move the target.
        if self._jitter is None or self._jitter[0] != serial:
            self._jitter = (serial, self._rng())
        jitter = self._jitter[1]
        return renewal_due(not_before=not_before, not_after=not_after, issuer_renew_after=renew_after, jitter=jitter)

    def _retry_at(self, exc: AgentError, failures: int, now: datetime, current: CurrentCredentials | None) -> datetime:
        retry_after = retry_after_seconds(exc.retry_after, now=now) if isinstance(exc, ServerProblem) else None
        delay = self._settings.backoff.delay(failures, jitter=self._rng(), retry_after=retry_after)
        return next_attempt(now, delay, not_after=current.not_after if current else None)

    def _run_hook(self, change: _Change) -> None:
        if self._hook is None:
            return
        issued = change.issued
        problem = self._hook(ChangeEvent(change.kind, issued.serial, issued.not_after, self._settings.out_dir))
        if problem is None:
            self._log(f"on-change command done for {issued.serial}")
        else:
            self._log(f"error: on-change command failed: {problem} (the new files are installed)")

    def _log(self, message: str) -> None:
        self._log_line(f"{when(self._clock.now())} {message}")
