"""The agent's daemon against the running service's rate limit: a 429 ``rate_limited`` is transient, the
daemon waits what ``Retry-After`` says (not its own shorter backoff), and the retry succeeds.

The daemon's time and the service's rate-limit clock are one fake clock that moves only when the
daemon waits, so the test runs in milliseconds and asserts what the daemon asked to wait.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clients.agent.daemon import Daemon, DaemonSettings
from clients.agent.http import ClientCertificate, IssuerClient
from clients.agent.proofs import TokenSource
from issuer.policy.ratelimit import RateLimit, TokenBucketLimiter
from tests.support.harness import new_csr, running_issuer


class FakeTime:
    """The daemon's clock and waiter, and the service's rate-limit clock: all move on ``wait``."""

    def __init__(self, *, stop_after: int) -> None:
        self.start = datetime.now(UTC)
        self.elapsed = 0.0
        self.waits: list[float] = []
        self._stop_after = stop_after
        self.stopped = False
        self.reason: str | None = None

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        if len(self.waits) >= self._stop_after:
            self.stopped, self.reason = True, "the test is done"
            return True
        self.elapsed += seconds
        return False


async def test_the_daemon_waits_what_retry_after_says_then_gets_its_certificate(tmp_path: Path, pg_url: str) -> None:
    time = FakeTime(stop_after=2)  # 1: the wait after the 429; 2: the wait for renewal (stop there)
    limiter = TokenBucketLimiter(RateLimit(1, timedelta(minutes=1)), clock=time.monotonic)
    async with running_issuer(tmp_path, pg_url, rate_limiter=limiter) as h:
        # Another certificate for the same machine name has just used its bucket.
        status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name="edge")})
        assert status == 201, body
        server = str(h.client.make_url("")).rstrip("/")
        logs: list[str] = []

        def connect(certificate: ClientCertificate | None) -> IssuerClient:
            return IssuerClient(server, allow_insecure_http=True, client_certificate=certificate, timeout=30)

        daemon = Daemon(
            DaemonSettings(out_dir=tmp_path / "agent", server=server, method="token"),
            clock=time,
            waiter=time,
            rng=lambda: 0.0,  # its own backoff would be 1 s
            connect=connect,
            proofs=TokenSource(file=None, inline=await h.token(name="edge")),
            log=logs.append,
        )
        (tmp_path / "agent").mkdir(mode=0o700)
        code = await asyncio.to_thread(daemon.run)

        assert code == 0, logs
        assert any("rate_limited" in line for line in logs), logs
        assert 60 <= time.waits[0] <= 61, time.waits  # Retry-After: one request a minute comes back in 60 s
        assert (tmp_path / "agent" / "cert.pem").exists()
        outcomes = [(a.outcome, a.code, a.principal) for a in await h.attestations()]
        assert outcomes == [
            ("success", None, "edge"),
            ("failure", "rate_limited", "edge"),
            ("success", None, "edge"),
        ]
