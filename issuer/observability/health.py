"""Readiness: whether the database answers, and whether the active issuing key can sign now.

The database is asked through the store (:func:`issuer.store.engine.ping`). A signer with
an async ``check()`` (the KMS signer: one bounded ``GetPublicKey``, cached while healthy)
is asked under a short timeout; one without (a key held in memory, ``LocalFileSigner``)
is ready whenever it is loaded.
"""

from __future__ import annotations

import asyncio
import inspect
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from issuer.store.engine import ping

__all__ = ["SIGNER_CHECK_TIMEOUT", "database_status", "signer_status"]

log = logging.getLogger("issuer.http")

# Well below a load balancer's health-check timeout (ALB: 5 s by default).
SIGNER_CHECK_TIMEOUT = 2.0


async def signer_status(signer: object, *, limit: float = SIGNER_CHECK_TIMEOUT) -> str:
    """``"ok"``, or ``"unavailable"`` when the signer's ``check()`` raised or took longer than ``limit`` seconds.

    Never raises; a failure is logged in one line with its code.
    """
    check = getattr(signer, "check", None)
    if check is None or not inspect.iscoroutinefunction(check):
        return "ok"
    try:
        async with asyncio.timeout(limit):
            await check()
    except TimeoutError:
        log.warning("readiness: the signer did not answer its health check within %gs", limit)
        return "unavailable"
    except Exception as exc:
        code = getattr(exc, "code", type(exc).__name__)
        reason = getattr(exc, "reason", None) or str(exc)
        log.warning("readiness: signer check failed: %s: %s", code, str(reason).splitlines()[0][:300] if reason else "")
        return "unavailable"
    return "ok"


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
