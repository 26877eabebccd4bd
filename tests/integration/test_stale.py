"""Which certificates are stale: measured from each one's own renewal point, on Postgres and SQLite alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from issuer.service.admin import operations as admin
from tests.support.harness import new_csr, running_issuer

CONFIG = """
[issuer]
trust_domain = "test.example"

[[roles]]
name = "short"
methods = ["token"]
ttl = "3m"

[[roles]]
name = "long"
methods = ["token"]
ttl = "30d"
max_ttl = "30d"
"""


async def test_each_certificate_is_late_by_its_own_clock(tmp_path: Path, db_url: str) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    clock = [start]
    async with running_issuer(tmp_path, db_url, config=CONFIG, clock=lambda: clock[0]) as h:
        serials = {}
        for name, role in (("short-1", "short"), ("long-1", "long")):
            token = await h.token(role=role, name=name)
            status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": token})
            assert status == 201, body
            serials[name] = body["serial"]

        async def stale(at: timedelta, *, late: timedelta = timedelta(0), expired: bool = False) -> list[str]:
            rows = await admin.stale_certificates(
                h.service.sessions,
                now=start + at,
                late_by=late,
                renew_fraction=h.settings.renew_fraction,
                include_expired=expired,
            )
            return [c.serial for c, _ in rows]

        # The 3-minute certificate is due at 2 minutes, the 30-day one at 20 days.
        assert await stale(timedelta(seconds=100)) == []  # both expire within 2h, both are healthy
        assert await stale(timedelta(seconds=130)) == [serials["short-1"]]
        assert await stale(timedelta(seconds=130), late=timedelta(minutes=1)) == []
        assert await stale(timedelta(minutes=4)) == []  # expired: no longer a rotation to make ...
        assert await stale(timedelta(minutes=4), expired=True) == [serials["short-1"]]  # ... unless asked
        assert await stale(timedelta(days=19)) == []
        assert await stale(timedelta(days=21)) == [serials["long-1"]]
