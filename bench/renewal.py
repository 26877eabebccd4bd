"""The ``renew`` workload: renewals by proof-of-possession token (``POST /v1/renew``), as the agent sends them.

Certificates to renew must exist first, with their keys: :func:`issue_for_renewal` issues
them over HTTP through the token path (join tokens of their own role, so their rows are
told apart from the ``token`` run's), untimed, before the renew run. Then
:func:`renew_workload` builds one renewal per certificate the way the agent does
(:mod:`clients.agent.renewal`): a fresh P-256 key's CSR, and a JWS signed by the old key with
the old certificate in ``x5c``, the CSR's hash and a fresh ``jti``
(:func:`clients.agent.pop.renewal_token`), sent as ``Authorization: Bearer``.

The agent's tokens live ``POP_TOKEN_LIFETIME`` (120 s) and the issuer allows 60 s of clock
skew beyond: so the bodies are built just before the run, and a warm-up plus timed window
longer than about 180 s would see ``renew_token_expired``.

A renewal's certificate row keeps the identity's method (``token``) and the role, and has
``renewed_from`` set: that is how the benchmark counts the renew run's rows.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench import BenchError
from bench.load import Workload, error_code
from bench.workload import RENEW_PATH, TOKEN_PATH, insert_join_tokens, make_keyed_csrs
from clients.agent.pop import renewal_token

__all__ = ["Held", "issue_for_renewal", "renew_workload"]


@dataclass(frozen=True, slots=True)
class Held:
    """A certificate the benchmark holds with its private key, as an agent does."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


async def issue_for_renewal(
    database_url: str, base_url: str, *, role: str, count: int, now: datetime, concurrency: int
) -> list[Held]:
    """``count`` certificates of ``role`` issued over HTTP through the token path, with their keys.

    Raises :class:`BenchError` ``setup_failed`` unless every one is answered 201.
    """
    tokens = await insert_join_tokens(database_url, role=role, count=count, now=now, prefix="bench-renew")
    keyed = await asyncio.to_thread(make_keyed_csrs, count, prefix="bench-held")
    pending = iter(range(count))
    held: list[Held | None] = [None] * count
    failures: Counter[str] = Counter()

    async def connection(session: aiohttp.ClientSession) -> None:
        for i in pending:
            key, csr = keyed[i]
            body = {"csr": csr.public_bytes(serialization.Encoding.PEM).decode(), "token": tokens[i]}
            async with session.post(base_url.rstrip("/") + TOKEN_PATH, json=body) as resp:
                payload = await resp.read()
                if resp.status != 201:
                    failures[f"{resp.status} {error_code(payload)}"] += 1
                    continue
            certificate = x509.load_pem_x509_certificate(json.loads(payload)["certificate"].encode())
            held[i] = Held(key=key, certificate=certificate)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(connection(session) for _ in range(max(1, min(concurrency, count)))))
    out = [h for h in held if h is not None]
    if len(out) != count:
        raise BenchError(
            f"renew: issuing the certificates to renew got {len(out)} of {count}; refused: {dict(failures)}",
            code="setup_failed",
        )
    return out


def renew_workload(held: Sequence[Held], *, audience: str, warmup: int, now: datetime) -> Workload:
    """One renewal per held certificate (the first ``warmup`` for the warm-up), tokens made at ``now``."""
    bodies: list[bytes] = []
    authorizations: list[str] = []
    for (_new_key, csr), current in zip(make_keyed_csrs(len(held), prefix="bench-renewed"), held, strict=True):
        token = renewal_token(
            key=current.key,
            certificate=current.certificate,
            audience=audience,
            csr_der=csr.public_bytes(serialization.Encoding.DER),
            now=now,
        )
        pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        bodies.append(json.dumps({"csr": pem}, separators=(",", ":")).encode())
        authorizations.append(f"Bearer {token}")
    return Workload(
        name="renew",
        path=RENEW_PATH,
        success_status=201,
        bodies=bodies[warmup:],
        warmup=bodies[:warmup],
        authorizations=authorizations[warmup:],
        warmup_authorizations=authorizations[:warmup],
    )
