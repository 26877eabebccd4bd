"""The service's Prometheus metrics: :class:`Metrics`, one per application, fed through the observer seams.

Names and labels (``route`` is the route's path template, ``unmatched`` for 404s)::

    issuer_issuances_total{method,role,outcome,code}        counter    requests that reached the pipeline;
                                                                       outcome issued|refused, code issued|<error code>
    issuer_issuance_duration_seconds{method,outcome}        histogram  pipeline time, reading the body to the answer
    issuer_rate_limited_total{method}                       counter    refused by the per-identity rate limit (429)
    issuer_http_requests_total{route,status}                counter    every HTTP answer
    issuer_http_request_duration_seconds{route}             histogram  every HTTP answer
    issuer_http_in_flight_requests                          gauge      issuance requests being worked on (live workers)
    issuer_http_shed_total{route}                           counter    refused at once with 503 overloaded
    issuer_upstream_request_duration_seconds{service,call,outcome}
                                                            histogram  STS / EC2 calls; outcome ok|refused|error
    issuer_upstream_errors_total{service,call,code}         counter    STS / EC2 calls that could not be made
    issuer_signer_duration_seconds{backend,operation,outcome}
                                                            histogram  signatures by key backend (file, kms, …);
                                                                       operation issue|crl, outcome ok|error
    issuer_signer_errors_total{backend,operation,code}      counter    signatures the backend could not make
    issuer_certificates_expiring_unrenewed{role}            gauge      active certificates past their renewal point,
                                                                       not yet expired (from the database, cached 30 s)
    issuer_ca_expiry_timestamp_seconds{issuer,kind,state,subject}
                                                            gauge      NotAfter of each CA of the registry
    issuer_worker_start_time_seconds                        gauge      one series per live process (``pid`` label
                                                                       with ``--workers``)
    issuer_audit_unsealed_rows                              gauge      audit rows not yet in the hash chain
    issuer_audit_uncheckpointed_rows                        gauge      chain entries after the newest checkpoint
    issuer_events_unpublished                               gauge      with [events]: entries after the relay's cursor
                                                                       (these three: issuer.audit.gauges, cached 15 s)
    process_*                                                          one process only (no ``--workers``)

Multi-process mode (``issuer serve --workers N``): ``PROMETHEUS_MULTIPROC_DIR`` is set by
the CLI before ``prometheus_client`` is imported (:mod:`issuer.observability.multiprocess`),
every worker writes its values to files there, and whichever worker answers
``GET /metrics`` aggregates all of them with ``MultiProcessCollector``: counters and
histograms are summed (a dead worker's counts stay), the in-flight gauge is summed over
live workers, and the database gauge is computed by the answering worker alone.

Every counter and histogram has its series from start-up on, at 0, for each method (with the
roles that allow it), outcome and the codes alerts watch (:meth:`Metrics.prepare`), and the
signer's for its backend once loaded: ``rate()`` over a fresh process is 0, not absent, and an
absence alert means the process is gone, not that nothing happened yet.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from issuer.observability.multiprocess import forget_dead_processes, forget_process
from issuer.observability.seams import SignerOutcome, UpstreamOutcome

__all__ = ["Metrics"]

log = logging.getLogger("issuer.metrics")

# Seconds: from a cached-key signature (milliseconds) to an STS call at its timeout.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Signatures: a key in memory signs in well under a millisecond, KMS in tens of milliseconds.
_SIGNER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Refusal codes alerts watch, present at 0 from the start for every method (503s and the rate limit).
ALERTED_CODES = ("rate_limited", "database_unavailable", "ca_signer_unavailable")
# ... and per method, the upstream it depends on.
_UPSTREAM_CODES = {
    "aws-iam": ("sts_unavailable",),
    "aws-ec2": ("ec2_lookup_unavailable",),
    "aws-ec2-role": ("sts_unavailable", "ec2_lookup_unavailable"),
}
# The calls on a client's behalf and the outcomes each can have.
_UPSTREAM_CALLS = (
    ("sts", "GetCallerIdentity", ("ok", "refused", "error")),
    ("ec2", "DescribeInstances", ("ok", "error")),
)
_SIGNER_OPERATIONS = ("issue", "crl")


class Metrics:
    """Every metric of one application, on a registry of its own (no process-global state).

    Implements :class:`~issuer.observability.seams.IssuanceObserver`, ``UpstreamObserver``
    and ``LoadObserver``. ``multiprocess_dir`` must be the ``PROMETHEUS_MULTIPROC_DIR``
    that was set before ``prometheus_client`` was first imported (see :meth:`for_process`);
    None for a single process.
    """

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self._collectors: list[Collector] = []
        self._series_of: dict[tuple[object, tuple[str, ...]], Any] = {}
        r = self.registry
        self.issuances = Counter(
            "issuer_issuances",
            "Requests that reached the issuance pipeline, by method, role and outcome code.",
            ["method", "role", "outcome", "code"],
            registry=r,
        )
        self.issuance_seconds = Histogram(
            "issuer_issuance_duration_seconds",
            "Time in the issuance pipeline, from reading the body to the answer.",
            ["method", "outcome"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "issuer_rate_limited", "Requests refused by the per-identity rate limit.", ["method"], registry=r
        )
        self.requests = Counter(
            "issuer_http_requests", "HTTP answers, by route template and status.", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "issuer_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.in_flight_requests = Gauge(
            "issuer_http_in_flight_requests",
            "Issuance requests being worked on now (summed over live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.shed_requests = Counter(
            "issuer_http_shed", "Requests refused at once (503 overloaded): too much in flight.", ["route"], registry=r
        )
        self.upstream_seconds = Histogram(
            "issuer_upstream_request_duration_seconds",
            "Calls to AWS on a client's behalf (STS GetCallerIdentity, EC2 DescribeInstances), by outcome.",
            ["service", "call", "outcome"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "issuer_upstream_errors",
            "Calls to AWS that could not be made (timeout, 5xx, throttled, unreachable), by error code.",
            ["service", "call", "code"],
            registry=r,
        )
        self.signer_seconds = Histogram(
            "issuer_signer_duration_seconds",
            "Signatures by the CA (leaves and CRLs), by key backend, operation and outcome.",
            ["backend", "operation", "outcome"],
            buckets=_SIGNER_BUCKETS,
            registry=r,
        )
        self.signer_errors = Counter(
            "issuer_signer_errors",
            "Signatures the key backend could not make (unreachable, throttled, denied), by error code.",
            ["backend", "operation", "code"],
            registry=r,
        )
        self.worker_start = Gauge(
            "issuer_worker_start_time_seconds",
            "When each serving process started (Unix time); one series per live process.",
            registry=r,
            multiprocess_mode="liveall",
        )
        if multiprocess_dir is None:
            ProcessCollector(registry=r)

    @classmethod
    def for_process(cls) -> Metrics:
        """Metrics in the mode ``prometheus_client`` chose at import: multi-process iff ``PROMETHEUS_MULTIPROC_DIR``."""
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        return cls(multiprocess_dir=Path(path) if path else None)

    def _series(self, metric: Counter | Histogram, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: prometheus_client checks the values and takes a lock
        on every call, and each request names the same few series (as many as the metric holds)."""
        key = (metric, values)
        series = self._series_of.get(key)
        if series is None:
            series = self._series_of[key] = metric.labels(*values)
        return series

    # -- sources computed at scrape time ---------------------------------------------------

    def add_source(self, collector: Collector, refresh: Callable[[], Awaitable[None]]) -> None:
        """Serve ``collector`` too; ``refresh()`` is awaited before each scrape (it must not raise)."""
        self.registry.register(collector)
        self._collectors.append(collector)
        self._refreshers.append(refresh)

    async def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for a scrape with this ``Accept`` header, and its content type."""
        for refresh in self._refreshers:
            await refresh()
        registry = self.registry
        if self.multiprocess_dir is not None:
            # Per scrape, as prometheus_client's documentation says: the files of every worker.
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
            for collector in self._collectors:
                registry.register(collector)
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type

    # -- series present from the start -----------------------------------------------------------

    def prepare(self, *, methods: Iterable[str], roles: Iterable[tuple[str, str]], routes: Iterable[str]) -> None:
        """Create, at 0, every series an alert or a ``rate()`` needs before the first request.

        ``methods``: the issuance methods served; ``roles``: (method, role) pairs a certificate can
        be issued for; ``routes``: the issuance routes (path templates) that can be shed.
        """
        for method in methods:
            self.rate_limited.labels(method)
            for outcome in ("issued", "refused"):
                self.issuance_seconds.labels(method, outcome)
            for code in (*ALERTED_CODES, *_UPSTREAM_CODES.get(method, ())):
                self.issuances.labels(method, "", "refused", code)
        for method, role in roles:
            self.issuances.labels(method, role, "issued", "issued")
        for route in routes:
            self.shed_requests.labels(route)
        for service, call, outcomes in _UPSTREAM_CALLS:
            for outcome in outcomes:
                self.upstream_seconds.labels(service, call, outcome)

    # -- process lifecycle -------------------------------------------------------------------

    def started(self) -> None:
        """This process serves from now on; in multi-process mode, forget the live gauges of dead workers."""
        if self.multiprocess_dir is not None:
            dropped = forget_dead_processes(self.multiprocess_dir)
            if dropped:
                log.info("metrics: dropped the live gauges of exited workers %s", dropped)
        self.worker_start.set(time.time())

    def stopped(self) -> None:
        """This process no longer serves: its live gauges leave the aggregate."""
        if self.multiprocess_dir is not None:
            forget_process(self.multiprocess_dir, os.getpid())

    # -- IssuanceObserver ----------------------------------------------------------------------

    def issued(self, method: str, role: str, seconds: float) -> None:
        self._series(self.issuances, method, role, "issued", "issued").inc()
        self._series(self.issuance_seconds, method, "issued").observe(seconds)

    def refused(self, method: str, role: str | None, code: str, seconds: float) -> None:
        self._series(self.issuances, method, role or "", "refused", code).inc()
        self._series(self.issuance_seconds, method, "refused").observe(seconds)
        if code == "rate_limited":
            self.rate_limited.labels(method).inc()

    # -- UpstreamObserver ----------------------------------------------------------------------

    def upstream(self, service: str, call: str, outcome: UpstreamOutcome, seconds: float, code: str | None) -> None:
        self.upstream_seconds.labels(service, call, outcome).observe(seconds)
        if outcome == "error":
            self.upstream_errors.labels(service, call, code or "unknown").inc()

    # -- SignerObserver --------------------------------------------------------------------------

    def signer_loaded(self, backend: str) -> None:
        for operation in _SIGNER_OPERATIONS:
            for outcome in ("ok", "error"):
                self.signer_seconds.labels(backend, operation, outcome)
            self.signer_errors.labels(backend, operation, "ca_signer_unavailable")

    def signed(self, backend: str, operation: str, outcome: SignerOutcome, seconds: float, code: str | None) -> None:
        self._series(self.signer_seconds, backend, operation, outcome).observe(seconds)
        if outcome == "error":
            self.signer_errors.labels(backend, operation, code or "unknown").inc()

    # -- LoadObserver and the HTTP layer --------------------------------------------------------

    def in_flight(self, count: int) -> None:
        self.in_flight_requests.set(count)

    def shed(self, route: str) -> None:
        self.shed_requests.labels(route).inc()

    def answered(self, route: str, status: int, seconds: float) -> None:
        """An HTTP request for ``route`` was answered with ``status`` after ``seconds``."""
        self._series(self.requests, route, str(status)).inc()
        self._series(self.request_seconds, route).observe(seconds)
