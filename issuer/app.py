"""``create_app(settings)``: the aiohttp application, its middleware, routes and resources.

No globals: everything a handler needs hangs off typed ``AppKey``s, and every
resource (engine, signer, outbound HTTP session) is opened and closed in
``cleanup_ctx``. Tests pass their own clock or signer through the keyword arguments.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization

from ca.files import load_local_signer
from ca.signer import Signer
from issuer.attest.ec2_certs import AwsCertStore, load_extra_certs
from issuer.attest.sts_client import AiohttpStsCaller, StsCaller
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.ca_setup import read_passphrase
from issuer.ec2_issuance import Boto3Lookups, Ec2Issuance, LookupFactory
from issuer.http.keys import BUNDLE_PEM, EC2, ENGINE, IAM, SERVICE, SETTINGS
from issuer.http.problems import problem_middleware
from issuer.http.routes import add_routes
from issuer.iam_issuance import IamIssuance
from issuer.service import Clock, IssuerService
from issuer.settings import Settings
from issuer.store import repo
from issuer.store.engine import make_engine, make_session_factory

log = logging.getLogger("issuer.app")


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    signer: Signer | None = None,
    aws_certs: AwsCertStore | None = None,
    instance_lookups: LookupFactory | None = None,
    sts_caller: StsCaller | None = None,
) -> web.Application:
    """The issuer's web application for ``settings``.

    ``signer`` defaults to the local-file CA in ``settings.ca_dir`` (loaded at start-up);
    ``aws_certs`` to the shipped AWS certificates plus ``[aws.ec2] extra_certs``;
    ``instance_lookups`` to boto3 (``[aws.ec2] endpoint_overrides``); ``sts_caller`` to an
    aiohttp client on one keep-alive session (``[aws.sts]``).
    """
    app = web.Application(middlewares=[problem_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        app[ENGINE] = engine
        http: aiohttp.ClientSession | None = None
        try:
            the_signer = signer or load_local_signer(settings.ca_dir, passphrase=read_passphrase(settings))
            sessions = make_session_factory(engine)
            issuer_cert = the_signer.issuer_certificate
            now = clock()
            async with sessions() as session, session.begin():
                issuer_row = await repo.ensure_issuer(
                    session,
                    fingerprint_sha256=issuer_cert.fingerprint(hashes.SHA256()).hex(),
                    subject=issuer_cert.subject.rfc4514_string(),
                    serial=format(issuer_cert.serial_number, "x"),
                    certificate_pem=issuer_cert.public_bytes(serialization.Encoding.PEM).decode(),
                    key_ref=f"file:{settings.ca_dir / 'issuing.key.pem'}",
                    not_before=issuer_cert.not_valid_before_utc,
                    not_after=issuer_cert.not_valid_after_utc,
                    now=now,
                )
            app[SERVICE] = IssuerService(
                settings=settings, sessions=sessions, signer=the_signer, issuer_id=issuer_row.id, clock=clock
            )
            service = app[SERVICE]
            certs = aws_certs or AwsCertStore.builtin(load_extra_certs(settings.ec2.extra_certs))
            app[EC2] = Ec2Issuance(
                service, certs=certs, lookups=instance_lookups or Boto3Lookups(dict(settings.ec2.endpoint_overrides))
            )
            if settings.server_id is not None:
                caller = sts_caller
                if caller is None:
                    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), trust_env=False)
                    caller = AiohttpStsCaller(
                        session=http,
                        endpoint_overrides=settings.sts.endpoint_overrides,
                        timeout=settings.sts.timeout.total_seconds(),
                    )
                app[IAM] = IamIssuance(
                    service,
                    hosts=StsHostAllowlist.from_botocore(settings.sts.partitions),
                    caller=caller,
                    server_id=settings.server_id,
                )
            app[BUNDLE_PEM] = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in the_signer.roots)
            log.info(
                "ready: issuing CA %s (valid until %s), %d role(s), database %s",
                issuer_cert.subject.rfc4514_string(),
                issuer_cert.not_valid_after_utc.isoformat(),
                len(settings.roles),
                engine.url.render_as_string(hide_password=True),
            )
            yield
        finally:
            if http is not None:
                await http.close()
            await engine.dispose()

    app.cleanup_ctx.append(resources)
    add_routes(app)
    return app
