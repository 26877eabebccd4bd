"""``issuer audit verify``: walk the whole chain of a database and say what, if anything, is wrong.

Reads in batches (the pure judgement is :class:`issuer.audit.verify.ChainWalker`), then:

- every checkpoint's signature, with a key trusted from *outside* the database: an issuing
  certificate (``x509:``) must chain to a root you give (``--roots``; by default the CA
  directory's ``root.pem``, else — said in the report — the database's own roots), and a KMS
  key (``kms:``) must be one you name (``[audit] checkpoint_kms_key``, ``--kms-key``);
- every ``attestations`` row older than the seal window is in the chain (``inserted`` when the
  sealer's rule refuses it, ``unsealed`` when it simply was not sealed yet: no sealer ran);
- the rows sealed after the last checkpoint are younger than the checkpoint grace
  (``uncheckpointed``: checkpoints deleted, or the checkpoint key failing);
- with anchors (S3), the database's checkpoints are the anchored ones (``anchor``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.audit import chain_store as store
from issuer.audit.canonical import iso_utc
from issuer.audit.chain import DEFAULT_LATE_WINDOW, admission
from issuer.audit.chain_store import CheckpointRecord
from issuer.audit.checkpoints import KmsSource, signature_valid
from issuer.audit.verify import ChainWalker, Finding
from issuer.store import issuers as registry

__all__ = ["KeyTrust", "VerifyOptions", "VerifyReport", "verify_chain"]

_BATCH = 1000


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    from_seq: int = 1
    seal_window: timedelta = timedelta(seconds=30)
    late_window: timedelta = DEFAULT_LATE_WINDOW
    checkpoint_grace: timedelta = timedelta(minutes=10)
    max_findings: int = 20


@dataclass(frozen=True, slots=True)
class VerifyReport:
    findings: tuple[Finding, ...]
    from_seq: int
    chain_end: int
    walked: int
    checkpoints: int
    last_checkpoint: int | None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "from_seq": self.from_seq,
            "chain_end": self.chain_end,
            "entries_checked": self.walked,
            "checkpoints_checked": self.checkpoints,
            "last_checkpoint": self.last_checkpoint,
            "first_bad_row": self.findings[0].attestation_id if self.findings else None,
            "findings": [f.to_json() for f in self.findings],
            "notes": list(self.notes),
        }


@dataclass(slots=True)
class KeyTrust:
    """Which checkpoint keys to believe: roots for ``x509:`` keys, named KMS keys for ``kms:`` keys.

    ``roots`` None: the database's own roots (weaker: said in :attr:`notes`).
    """

    roots: tuple[x509.Certificate, ...] | None
    kms_keys: frozenset[str] = frozenset()
    roots_source: str = "--roots"  # where ``roots`` came from, for the findings
    kms: KmsSource | None = None
    notes: list[str] = field(default_factory=list)
    _cache: dict[str, object] = field(default_factory=dict)

    async def public_key(self, session: AsyncSession, key_ref: str) -> tuple[object | None, str]:
        """The public key ``key_ref`` names if trusted, else None and why not."""
        if key_ref in self._cache:
            return self._cache[key_ref], ""
        scheme, _, name = key_ref.partition(":")
        if scheme == "x509":
            key, why = await self._issuer_key(session, name)
        elif scheme == "kms":
            key, why = await self._kms_key(name)
        else:
            key, why = None, f"unknown key reference {key_ref!r}"
        if key is not None:
            self._cache[key_ref] = key
        return key, why

    async def _issuer_key(self, session: AsyncSession, fingerprint: str) -> tuple[object | None, str]:
        issuer = next((i for i in await registry.list_issuers(session) if i.fingerprint_sha256 == fingerprint), None)
        if issuer is None:
            return None, f"no issuing CA with certificate SHA-256 {fingerprint} is registered"
        certificate = x509.load_pem_x509_certificate(issuer.certificate_pem.encode())
        intermediates = tuple(x509.load_pem_x509_certificates(issuer.chain_pem.encode())) if issuer.chain_pem else ()
        roots = self.roots
        if roots is None:
            roots = tuple(
                x509.load_pem_x509_certificate(r.certificate_pem.encode()) for r in await registry.list_roots(session)
            )
            note = (
                "checkpoint keys were trusted through the database's own roots; "
                "pass --roots FILE to check them against yours"
            )
            if note not in self.notes:
                self.notes.append(note)
        if not chains_to(certificate, intermediates, roots):
            where = "the database's roots" if self.roots is None else self.roots_source
            return None, (
                f"the issuing CA {issuer.subject} does not chain to a trusted root (trusted: {where}; after a root "
                "rotation, give every root you trust with --roots)"
            )
        return certificate.public_key(), ""

    async def _kms_key(self, arn: str) -> tuple[object | None, str]:
        if arn not in self.kms_keys:
            return None, f"signed by KMS key {arn}, which you did not name ([audit] checkpoint_kms_key or --kms-key)"
        from ca.kms_client import kms_public_key

        if self.kms is None:
            from issuer.aws.kms import KmsClients

            self.kms = KmsClients()
        key = await asyncio.to_thread(kms_public_key, self.kms.for_key(arn), arn)
        return key.public_key, ""


def chains_to(
    certificate: x509.Certificate, intermediates: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
) -> bool:
    """Whether ``certificate`` is a root or is signed, through ``intermediates``, by one (at most 4 links)."""
    current = certificate
    for _ in range(5):
        if current in roots:
            return True
        issuer = next(
            (c for c in (*roots, *intermediates) if c.subject == current.issuer and _signed(current, c)), None
        )
        if issuer is None:
            return False
        if issuer in roots:
            return True
        current = issuer
    return False


def _signed(certificate: x509.Certificate, by: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(by)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


async def verify_chain(
    sessions: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    trust: KeyTrust,
    options: VerifyOptions = VerifyOptions(),
    anchors: Mapping[int, CheckpointRecord] | None = None,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Check the chain from ``options.from_seq`` to its end (see the module docstring)."""
    findings: list[Finding] = []
    async with sessions() as session:
        recorded = await store.checkpoints(session, from_seq=max(0, options.from_seq - 1))
        trusted: dict[int, str] = {}
        for checkpoint in recorded:
            key, why = await trust.public_key(session, checkpoint.key_ref)
            if key is None:
                findings.append(Finding("checkpoint", None, checkpoint.seq, f"checkpoint {checkpoint.seq}: {why}"))
            elif not signature_valid(key, checkpoint):
                findings.append(
                    Finding(
                        "checkpoint",
                        None,
                        checkpoint.seq,
                        f"checkpoint {checkpoint.seq}: its signature does not verify with {checkpoint.key_ref}",
                    )
                )
            else:
                trusted[checkpoint.seq] = checkpoint.head_hash
        start = await store.tail_before(session, options.from_seq)
        walker = ChainWalker(
            start=start,
            checkpoints=trusted,
            late_window=options.late_window,
            max_findings=options.max_findings,
            adopted_at=await store.first_sealed_at(session),
        )
        if start.seq in trusted and trusted[start.seq] != start.row_hash:
            findings.append(
                Finding("checkpoint", None, start.seq, f"the chain's hash at seq {start.seq} is not the signed head")
            )
        end = await store.chain_end(session)
        after = start.seq
        while not walker.full:
            batch = await store.entries_after(session, after_seq=after, limit=_BATCH)
            if not batch:
                break
            walker.walk(batch)
            after = batch[-1][0].seq
            if progress is not None and walker.walked % 100_000 < len(batch):
                progress(f"checked {walker.walked} entries (seq {after} of {end})")
        walker.finish(chain_end=end)
        row_findings = list(walker.findings)
        row_findings += await _unsealed(session, walker, now=now, options=options)
        unchecked = walker.first_unchecked
        if not walker.full and unchecked is not None and unchecked.sealed_at < now - options.checkpoint_grace:
            last = walker.good_checkpoint
            row_findings.append(
                Finding(
                    "uncheckpointed",
                    unchecked.attestation_id,
                    unchecked.seq,
                    f"sealed at {iso_utc(unchecked.sealed_at)}, yet no checkpoint covers it "
                    f"(last good checkpoint: {last if last is not None else 'none'}): checkpoints were deleted, or "
                    "the checkpoint key is failing (`issuer audit seal --checkpoint` signs one)",
                )
            )
    if anchors is not None:
        findings += _compare_anchors(anchors, {c.seq: c for c in recorded}, from_seq=options.from_seq)
    last_checkpoint = max(trusted) if trusted else None
    return VerifyReport(
        findings=tuple((row_findings + findings)[: options.max_findings]),
        from_seq=options.from_seq,
        chain_end=end,
        walked=walker.walked,
        checkpoints=len(trusted),
        last_checkpoint=last_checkpoint,
        notes=tuple(trust.notes),
    )


async def _unsealed(
    session: AsyncSession, walker: ChainWalker, *, now: datetime, options: VerifyOptions
) -> list[Finding]:
    rows = await store.unsealed_older_than(session, cutoff=now - options.seal_window, limit=options.max_findings)
    out: list[Finding] = []
    for row in rows:
        why = admission(int(row["id"]), row["created_at"], walker.tail, now=now, late_window=options.late_window)
        if why is None:
            detail = (
                f"created at {iso_utc(row['created_at'])} and not sealed yet: no sealer has run since "
                "(is `issuer serve` running? `issuer audit seal` seals it)"
            )
            out.append(Finding("unsealed", int(row["id"]), None, detail))
        else:
            out.append(
                Finding("inserted", int(row["id"]), None, f"it is not in the chain, and the sealer refuses it: {why}")
            )
    return out


def _compare_anchors(
    anchored: Mapping[int, CheckpointRecord], recorded: Mapping[int, CheckpointRecord], *, from_seq: int
) -> list[Finding]:
    out: list[Finding] = []
    for seq in sorted(anchored):
        if seq < from_seq - 1:
            continue
        mine = recorded.get(seq)
        if mine is None:
            out.append(Finding("anchor", None, seq, f"checkpoint {seq} is anchored but missing from the database"))
        elif mine != anchored[seq]:
            out.append(Finding("anchor", None, seq, f"checkpoint {seq} in the database differs from the anchored one"))
    return out
