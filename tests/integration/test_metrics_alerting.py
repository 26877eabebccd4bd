"""The metrics the alert rules in ``deploy/prometheus/alerts.yml`` read: present at 0 from the start,
the CA expiry of every registered CA, and signer latency and errors by key backend.

Real app on a migrated Postgres, scraped through ``GET /metrics`` and read with prometheus_client's
own parser. The KMS backend's label is checked in ``test_kms_issuer.py`` (moto's KMS).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from issuer.service.ca.rotation import rotate_issuer
from issuer.store.engine import make_engine, make_session_factory
from tests.support.harness import PASSPHRASE, Harness, new_csr, running_issuer
from tests.support.metrics_scrape import Scrape
from tests.support.scripted_signer import ScriptedSigner

CONFIG = """
[issuer]
trust_domain = "test.example"
server_id = "issuer.test.example"
registry_refresh = "1s"

[[roles]]
name = "onprem"
methods = ["token"]

[[roles]]
name = "fleet"
methods = ["aws-ec2"]
allow_unbounded_documents = true
"""
METHODS = ("token", "aws-ec2", "aws-iam", "renew")
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


async def scrape(h: Harness) -> Scrape:
    resp = await h.client.get("/metrics")
    assert resp.status == 200
    return Scrape.parse(await resp.text())


def has(scrape: Scrape, name: str, **labels: str) -> bool:
    return any(labels.items() <= series.items() for series in scrape.series(name))


async def test_every_counter_is_there_at_zero_before_the_first_request(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        s = await scrape(h)
    for method in METHODS:
        assert has(s, "issuer_rate_limited_total", method=method)
        for outcome in ("issued", "refused"):
            assert has(s, "issuer_issuance_duration_seconds_count", method=method, outcome=outcome)
        for code in ("rate_limited", "database_unavailable", "ca_signer_unavailable"):
            assert has(s, "issuer_issuances_total", method=method, outcome="refused", code=code), (method, code)
    assert has(s, "issuer_issuances_total", method="aws-iam", outcome="refused", code="sts_unavailable")
    assert has(s, "issuer_issuances_total", method="aws-ec2", outcome="refused", code="ec2_lookup_unavailable")
    # Issued, for each role that allows the method (renewal keeps any role).
    issued = {(x["method"], x["role"]) for x in s.series("issuer_issuances_total") if x["outcome"] == "issued"}
    assert issued == {("token", "onprem"), ("aws-ec2", "fleet"), ("renew", "onprem"), ("renew", "fleet")}
    for route in ("/v1/issue/token", "/v1/issue/aws-ec2", "/v1/issue/aws-iam", "/v1/renew"):
        assert has(s, "issuer_http_shed_total", route=route)
    for outcome in ("ok", "refused", "error"):
        assert has(s, "issuer_upstream_request_duration_seconds_count", service="sts", outcome=outcome)
    for operation in ("issue", "crl"):
        for outcome in ("ok", "error"):
            assert has(s, "issuer_signer_duration_seconds_count", backend="file", operation=operation, outcome=outcome)
    assert has(s, "issuer_certificates_expiring_unrenewed", role="fleet")
    # ... and all of it at 0.
    counted = ("issuer_issuances_total", "issuer_rate_limited_total", "issuer_http_shed_total")
    assert sum(s.total(name) for name in counted) == 0


async def test_the_ca_expiry_gauge_follows_the_registry(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        trust = h.service.registry.snapshot
        active, (root,) = trust.active.certificate, trust.roots
        s = await scrape(h)
        series = s.series("issuer_ca_expiry_timestamp_seconds")
        assert sorted((x["kind"], x["state"]) for x in series) == [("issuing", "active"), ("root", "active")]
        issuing = {"issuer": active.fingerprint(hashes.SHA256()).hex()[:16], "kind": "issuing", "state": "active"}
        assert s.total("issuer_ca_expiry_timestamp_seconds", **issuing) == active.not_valid_after_utc.timestamp()
        root_fp = root.fingerprint(hashes.SHA256()).hex()[:16]
        assert s.total("issuer_ca_expiry_timestamp_seconds", issuer=root_fp, kind="root") == (
            root.not_valid_after_utc.timestamp()
        )

        # A rotation prepares a second issuing CA: it appears once the replica has re-read the registry.
        engine = make_engine(pg_url, pool_size=1)
        try:
            prepared = await rotate_issuer(
                make_session_factory(engine),
                ca_dir=tmp_path / "state" / "ca",
                passphrase=lambda: PASSPHRASE.encode(),
                now=datetime.now(UTC),
                validity=timedelta(days=90),
                min_validity=timedelta(days=3),
                trust_domain="test.example",
            )
        finally:
            await engine.dispose()
        await h.service.registry.refresh()
        s = await scrape(h)
        new = x509.load_pem_x509_certificate(prepared.issuer.certificate_pem.encode())
        fingerprint = new.fingerprint(hashes.SHA256()).hex()[:16]
        assert s.total("issuer_ca_expiry_timestamp_seconds", issuer=fingerprint, state="prepared") == (
            new.not_valid_after_utc.timestamp()
        )


async def test_signer_latency_and_errors_by_backend(tmp_path: Path, pg_url: str) -> None:
    signer = ScriptedSigner.for_state(tmp_path)
    async with running_issuer(tmp_path, pg_url, config=CONFIG, signer=signer) as h:
        status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name="a")})
        assert status == 201, body
        signer.down = True
        status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name="b")})
        assert (status, body["code"]) == (503, "ca_signer_unavailable")
        s = await scrape(h)
    # The registry's key_ref is file:…: the backend label says so.
    ok = {"backend": "file", "operation": "issue", "outcome": "ok"}
    assert s.total("issuer_signer_duration_seconds_count", **ok) == 1
    assert s.total("issuer_signer_duration_seconds_sum", **ok) > 0
    assert s.total("issuer_signer_duration_seconds_count", backend="file", operation="issue", outcome="error") == 1
    assert s.total("issuer_signer_errors_total", backend="file", operation="issue", code="ca_signer_unavailable") == 1
    assert s.total("issuer_issuances_total", method="token", code="ca_signer_unavailable") == 1


async def test_every_metric_the_alert_rules_read_is_one_the_service_exports(tmp_path: Path, pg_url: str) -> None:
    expressions, inside = [], False
    for line in RULES.read_text().splitlines():  # the expr: blocks only (annotations name metrics too)
        key = line.strip().split(":", 1)[0]
        if key == "expr":
            inside, indent = True, len(line) - len(line.lstrip())
            expressions.append(line.split(":", 1)[1])
        elif inside and line.strip() and len(line) - len(line.lstrip()) > indent:
            expressions.append(line)
        else:
            inside = False
    read = set(re.findall(r"\b(issuer_[a-z_]+)\b", "\n".join(expressions)))
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        s = await scrape(h)
    exported = {name for name, _ in s.samples}
    assert read and read <= exported, sorted(read - exported)
