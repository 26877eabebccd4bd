"""``create_app(settings)``: the aiohttp application, its middleware, routes and resources.

No globals and no environment: everything the app needs comes from ``settings``
and the keyword arguments (tests pass their own clock, signer loader, AWS
certificates, instance lookups or STS caller). Every resource (engine, registry,
outbound HTTP session, background tasks) is opened and closed in ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.attest.ec2_certs import AwsCertStore, load_extra_certs
from issuer.attest.ec2_instance import LookupFactory
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.attest.sts_response import StsCaller
from issuer.aws.ec2 import Boto3Lookups
from issuer.aws.sts import AiohttpStsCaller
from issuer.events.publisher import EventsClient
from issuer.http.admin import ADMIN, AdminApi, add_admin_routes
from issuer.http.keys import (
    AUDIT,
    BODY_TIMEOUT,
    CRLS,
    ENGINE,
    METHODS,
    PIPELINE,
    REGISTRY,
    REVOCATION_LISTS,
    SETTINGS,
    WIRE_AUDIT,
)
from issuer.http.metrics import METRICS, request_metrics
from issuer.http.overload import InFlightLimit
from issuer.http.problems import problem_middleware
from issuer.http.routes import add_routes
from issuer.http.server_protocol import PROTOCOL_REFUSALS
from issuer.http.wire_audit import WireAudit, issuance_method
from issuer.observability.ca_expiry import CaExpiry, CaExpiryCollector
from issuer.observability.expiring import ExpiringCertificates
from issuer.observability.metrics import Metrics
from issuer.observability.refusals import RefusalTally
from issuer.observability.seams import IssuanceObservers
from issuer.policy.ratelimit import RateLimiter, TokenBucketLimiter
from issuer.service.admin.signin import OperatorSignIn
from issuer.service.audit_trail import AuditTrail
from issuer.service.ca.observed import observed_loader
from issuer.service.ca.register import register_file_ca
from issuer.service.ca.registry import IssuerRegistry, SignerLoader
from issuer.service.ca.setup import read_passphrase
from issuer.service.ca.signers import KeySigners
from issuer.service.issuance.catalogue import MethodTable
from issuer.service.issuance.entry import Resources
from issuer.service.issuance.guards import ReplayGuards
from issuer.service.issuance.model import Clock
from issuer.service.issuance.pipeline import Pipeline
from issuer.service.janitor import Janitor
from issuer.service.revocation.bundle import CrlBundles
from issuer.service.revocation.lists import RevocationLists
from issuer.service.revocation.pca_crl import PcaCrls
from issuer.service.revocation.root_crls import RootCrls, RootSignerLoader
from issuer.settings import Settings
from issuer.store.engine import close_sessions, make_engine, make_session_factory

__all__ = ["create_app", "utc_now"]

log = logging.getLogger("issuer.app")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _ca_expiries(registry: IssuerRegistry) -> list[CaExpiry]:
    """Every issuing CA of the registry and every active root, for the expiry gauge."""
    try:
        snapshot = registry.snapshot
    except RuntimeError:
        return []
    issuers = [
        CaExpiry(v.record.fingerprint_sha256, "issuing", v.record.state, v.record.subject, v.record.not_after)
        for v in snapshot.issuers
    ]
    roots = [
        CaExpiry(
            root.fingerprint(hashes.SHA256()).hex(),
            "root",
            "active",
            root.subject.rfc4514_string(),
            root.not_valid_after_utc,
        )
        for root in snapshot.roots
    ]
    return issuers + roots


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    signer_loader: SignerLoader | None = None,
    aws_certs: AwsCertStore | None = None,
    instance_lookups: LookupFactory | None = None,
    sts_caller: StsCaller | None = None,
    body_timeout: float = 30.0,
    pool_size: int = 10,
    janitor_every: float = 300.0,
    max_in_flight: int = 64,
    rate_limiter: RateLimiter | None = None,
    metrics: Metrics | None = None,
    root_signer_loader: RootSignerLoader | None = None,
    crls_every: float | None = 60.0,
    events_client: EventsClient | None = None,
    seal_every: float | None = 1.0,
) -> web.Application:
    """The issuer's web application for ``settings``.

    ``signer_loader`` defaults to the key backends of :class:`KeySigners` (file keys
    decrypted with the CA passphrase from ``settings``); ``aws_certs`` to the shipped
    AWS certificates plus ``[aws.ec2] extra_certs``; ``instance_lookups`` to boto3
    (``[aws.ec2] endpoint_overrides``); ``sts_caller`` to an aiohttp client on one
    keep-alive session (``[aws.sts]``). At start-up a CA made on disk is registered
    when the registry is empty, and the active issuer's key is loaded: a missing or
    locked key fails start-up with one line.

    ``root_signer_loader`` gives a root's key for its CRL (default: :meth:`KeySigners.root`, file
    keys in the CA directory and KMS keys); ``crls_every`` is how often, in seconds, the background
    task keeps every CRL current (``GET /v1/crls``; None: no background task, CRLs are signed when
    asked for — tests that count CRL numbers).

    ``max_in_flight`` bounds the issuance requests this process works on at once (more get
    503 ``overloaded``); ``rate_limiter`` defaults to a token bucket per identity from
    ``[issuer] rate_limit``; ``metrics`` to :meth:`Metrics.for_process`.

    Every process seals the audit trail every ``seal_every`` seconds (None: only on shutdown, for a
    test that seals by hand) and signs its checkpoints
    (:mod:`issuer.audit`); with ``[events] bus_arn`` it also relays events to EventBridge
    (``events_client`` overrides the boto3 client).
    """
    metrics = metrics or Metrics.for_process()
    shedder = InFlightLimit(max_in_flight, observer=metrics)
    app = web.Application(
        middlewares=[request_metrics(metrics), problem_middleware, shedder.middleware()],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[BODY_TIMEOUT] = body_timeout

    async def resources(app: web.Application) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, pool_size=pool_size)
        app[ENGINE] = engine
        http: aiohttp.ClientSession | None = None
        tasks: list[asyncio.Task[None]] = []
        wire_audit: WireAudit | None = None
        audit: AuditTrail | None = None
        sessions: async_sessionmaker[AsyncSession] | None = None
        try:
            sessions = make_session_factory(engine)
            wire_audit = WireAudit(sessions, clock=clock)
            app[WIRE_AUDIT] = wire_audit
            app[PROTOCOL_REFUSALS] = wire_audit
            if (settings.ca_dir / "issuing.pem").exists():
                registered = await register_file_ca(sessions, ca_dir=settings.ca_dir, now=clock())
                if registered is not None:
                    log.info("registered the CA in %s as the active issuer (%s)", settings.ca_dir, registered.subject)
            key_signers = KeySigners(ca_dir=settings.ca_dir, passphrase=lambda: read_passphrase(settings))
            load_signer = observed_loader(signer_loader or key_signers, metrics)
            registry = IssuerRegistry(
                sessions,
                load_signer=load_signer,
                clock=clock,
                refresh_every=settings.registry_refresh.total_seconds(),
            )
            trust = await registry.load()
            app[REGISTRY] = registry
            lists = RevocationLists(
                sessions, registry=registry, load_signer=load_signer, clock=clock, upstream_crls=PcaCrls(clock=clock)
            )
            app[REVOCATION_LISTS] = lists
            root_crls = RootCrls(sessions, load_signer=root_signer_loader or key_signers.root, clock=clock)
            app[CRLS] = CrlBundles(sessions, registry=registry, lists=lists, roots=root_crls, clock=clock)
            limiter = rate_limiter
            if limiter is None and settings.rate_limit is not None:
                limiter = TokenBucketLimiter(settings.rate_limit)
            refusals = RefusalTally()
            pipeline = Pipeline(
                settings=settings,
                sessions=sessions,
                registry=registry,
                clock=clock,
                observer=IssuanceObservers(metrics, refusals),
                limiter=limiter,
            )
            app[PIPELINE] = pipeline
            caller = sts_caller
            if caller is None:
                http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), trust_env=False)
                caller = AiohttpStsCaller(
                    session=http,
                    endpoint_overrides=settings.sts.endpoint_overrides,
                    timeout=settings.sts.timeout.total_seconds(),
                    observer=metrics,
                )
            hosts = StsHostAllowlist.from_botocore(settings.sts.partitions)
            guards = ReplayGuards(sessions)
            app[METHODS] = MethodTable(
                Resources(
                    settings=settings,
                    sessions=sessions,
                    registry=registry,
                    roles=pipeline.roles,
                    guards=guards,
                    aws_certs=aws_certs or AwsCertStore.builtin(load_extra_certs(settings.ec2.extra_certs)),
                    instance_lookups=instance_lookups
                    or Boto3Lookups(dict(settings.ec2.endpoint_overrides), observer=metrics),
                    sts_caller=caller,
                    sts_hosts=hosts,
                )
            )
            if settings.admins:
                sign_in = OperatorSignIn(
                    grants=settings.admins, hosts=hosts, caller=caller, server_id=settings.audience, guards=guards
                )
                app[ADMIN] = AdminApi(sign_in=sign_in, sessions=sessions, settings=settings, clock=clock)
            expiring = ExpiringCertificates(
                sessions,
                clock=clock,
                renew_fraction=settings.renew_fraction,
                roles=[role.name for role in settings.roles],
            )
            metrics.add_source(expiring, expiring.refresh)
            ca_expiry = CaExpiryCollector(lambda: _ca_expiries(registry))
            metrics.add_source(ca_expiry, ca_expiry.refresh)
            table: MethodTable = app[METHODS]
            methods: list[str] = [str(name) for name in table]
            metrics.prepare(
                methods=methods,
                roles=[(m, r.name) for r in settings.roles for m in methods if m in r.methods or m == "renew"],
                routes=[
                    route.resource.canonical
                    for route in app.router.routes()
                    if route.method == "POST" and route.resource and issuance_method(route.resource.canonical)
                ],
            )
            janitor = Janitor(sessions, clock=clock, refusals=refusals.counts, every=janitor_every)
            audit = AuditTrail(
                settings,
                sessions,
                clock=clock,
                passphrase=lambda: read_passphrase(settings),
                events=events_client,
                seal_every=seal_every,
            )
            app[AUDIT] = audit
            await audit.prepare()
            metrics.add_source(audit.gauges, audit.gauges.refresh)
            tasks = [asyncio.create_task(registry.watch()), asyncio.create_task(janitor.run())]
            tasks += [asyncio.create_task(loop) for loop in audit.tasks()]
            if crls_every is not None:
                tasks.append(asyncio.create_task(app[CRLS].keep_current(every=crls_every)))
            log.info(
                "ready: issuing CA %s (valid until %s), %d role(s), database %s",
                trust.active.certificate.subject.rfc4514_string(),
                trust.active.certificate.not_valid_after_utc.isoformat(),
                len(settings.roles),
                engine.url.render_as_string(hide_password=True),
            )
            metrics.started()
            yield
        finally:
            metrics.stopped()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if audit is not None:
                await audit.close()
            if http is not None:
                await http.close()
            if wire_audit is not None:
                await wire_audit.close()
            if sessions is not None:
                await close_sessions(sessions)
            await engine.dispose()

    app.cleanup_ctx.append(resources)
    add_routes(app)
    if settings.admins:  # no [[admins]]: the admin API does not exist (404)
        add_admin_routes(app)
    return app
