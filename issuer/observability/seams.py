"""The protocols the service reports through, and a :class:`NullObserver` that ignores everything.

Each is a seam passed in through a constructor (``Pipeline(observer=...)``,
``AiohttpStsCaller(observer=...)``, ...). Nothing here imports ``prometheus_client``:
the pipeline and the AWS clients stay free of it, and tests can pass their own.
Every method is called on the event loop (or a worker thread, for boto3 calls), must
be cheap and must never raise.
"""

from __future__ import annotations

from typing import Literal, Protocol

__all__ = [
    "IssuanceObserver",
    "IssuanceObservers",
    "LoadObserver",
    "NullObserver",
    "SignerObserver",
    "SignerOutcome",
    "UpstreamObserver",
    "UpstreamOutcome",
]

# ok: the peer answered; refused: it answered "no" (bad credentials: the client's fault);
# error: it could not be asked (timeout, 5xx, throttled, unreachable, denied to us).
UpstreamOutcome = Literal["ok", "refused", "error"]
# ok: signed; error: the backend could not sign (unreachable, throttled, denied, a key that will not load).
SignerOutcome = Literal["ok", "error"]


class IssuanceObserver(Protocol):
    """Told the outcome of every request that reached the issuance pipeline."""

    def issued(self, method: str, role: str, seconds: float) -> None:
        """A certificate was recorded and is being returned, ``seconds`` after the request began."""
        ...

    def refused(self, method: str, role: str | None, code: str, seconds: float) -> None:
        """The request failed with error ``code`` (and was audited); ``role`` when it was known."""
        ...


class IssuanceObservers:
    """Several :class:`IssuanceObserver` s as one (the metrics, the janitor's tally, ...), told in order."""

    def __init__(self, *observers: IssuanceObserver) -> None:
        self._observers = observers

    def issued(self, method: str, role: str, seconds: float) -> None:
        for observer in self._observers:
            observer.issued(method, role, seconds)

    def refused(self, method: str, role: str | None, code: str, seconds: float) -> None:
        for observer in self._observers:
            observer.refused(method, role, code, seconds)


class UpstreamObserver(Protocol):
    """Told about every call the service makes to AWS on a client's behalf (STS, EC2)."""

    def upstream(self, service: str, call: str, outcome: UpstreamOutcome, seconds: float, code: str | None) -> None:
        """``service`` (``sts``, ``ec2``) answered ``call`` with ``outcome``; ``code`` names an error."""
        ...


class SignerObserver(Protocol):
    """Told about every signature the CA makes (leaves and CRLs), by key backend."""

    def signer_loaded(self, backend: str) -> None:
        """A signer of ``backend`` (``file``, ``kms``, ``pca``, …: the key reference's scheme) is in use."""
        ...

    def signed(self, backend: str, operation: str, outcome: SignerOutcome, seconds: float, code: str | None) -> None:
        """``backend`` did ``operation`` (``issue``, ``crl``) with ``outcome``; ``code`` names an error."""
        ...


class LoadObserver(Protocol):
    """Told how much work a process has in flight, and what it turned away."""

    def in_flight(self, count: int) -> None:
        """The number of requests being worked on now changed to ``count``."""
        ...

    def shed(self, route: str) -> None:
        """A request for ``route`` was refused at once because the process was at its limit."""
        ...


class NullObserver:
    """Every observer protocol, doing nothing: the default where nobody is watching."""

    def issued(self, method: str, role: str, seconds: float) -> None:
        pass

    def refused(self, method: str, role: str | None, code: str, seconds: float) -> None:
        pass

    def upstream(self, service: str, call: str, outcome: UpstreamOutcome, seconds: float, code: str | None) -> None:
        pass

    def signer_loaded(self, backend: str) -> None:
        pass

    def signed(self, backend: str, operation: str, outcome: SignerOutcome, seconds: float, code: str | None) -> None:
        pass

    def in_flight(self, count: int) -> None:
        pass

    def shed(self, route: str) -> None:
        pass
