"""Readiness: whether the database answers, and whether the active issuing CA can sign now.

The database is asked through the store (:func:`issuer.store.engine.ping`). Every
:class:`~ca.signer.Signer` declares a ``health()`` check: a key held in memory is healthy once
loaded; the KMS signer asks KMS (one bounded ``GetPublicKey``, cached while healthy); the AWS
Private CA signer asks Private CA (``DescribeCertificateAuthority``: the CA must be ACTIVE, cached
likewise). It is awaited here under a short timeout of our own too.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from ca.signer import Signer
from issuer.store.engine import ping

__all__ = ["SIGNER_CHECK_TIMEOUT", "database_status", "signer_status"]

log = logging.getLogger("issuer.http")

# Well below a load balancer's health-check timeout (ALB: 5 s by default).
SIGNER_CHECK_TIMEOUT = 2.0


async def signer_status(signer: Signer, *, limit: float = SIGNER_CHECK_TIMEOUT) -> str:
    """``"ok"``, or ``"unavailable"`` when the signer's health is not ok or took longer than ``limit`` seconds.

    Never raises; a failure is logged in one line with its code.
    """
    try:
        async with asyncio.timeout(limit):
            health = await signer.health()
    except TimeoutError:
        log.warning("readiness: the signer did not answer its health check within %gs", limit)
        return "unavailable"
    except Exception as exc:  # a health() that raises is a bug, but readiness must still answer
        log.warning("readiness: signer health check raised %s: %s", type(exc).__name__, str(exc)[:300])
        return "unavailable"
    if health.ok:
        return "ok"
    detail = (health.detail or "").splitlines()[0][:300] if health.detail else ""
    log.warning("readiness: signer check failed: %s: %s", health.code, detail)
    return "unavailable"


async def database_status(engine: AsyncEngine) -> str:
    """``"ok"``, or ``"unavailable"`` when the database did not answer (the pool's own timeout bounds it).

    Never raises; a failure is logged in one line.
    """
    try:
        await ping(engine)
    except Exception as exc:
        log.warning(
            "readiness: database check failed: %s: %s", type(exc).__name__, (str(exc).splitlines() or [""])[0][:200]
        )
        return "unavailable"
    return "ok"
