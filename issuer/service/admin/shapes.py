"""The JSON shapes of operator results: what the admin API answers and what ``issuer … --json`` prints.

One shape per kind of thing, used by both, so a command prints the same whether it ran here or
through ``--server``. Times are ISO 8601 with their UTC offset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from issuer.service.ca.status import CAStatus
from issuer.service.revocation.revoke import Revocation, RevokedCertificate
from issuer.store.denials import DenialRecord
from issuer.store.operator_audit import AuditRecord
from issuer.store.records import BindingRecord, CertificateRecord, IdentityRecord, TokenRecord

__all__ = [
    "audit_entry",
    "binding",
    "ca_status",
    "certificate",
    "denial",
    "history_entry",
    "iso",
    "revocation",
    "token",
]


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def token(t: TokenRecord) -> dict[str, Any]:
    return {
        "name": t.name,
        "role": t.role,
        "created_at": iso(t.created_at),
        "expires_at": iso(t.expires_at),
        "used_at": iso(t.used_at),
        "revoked_at": iso(t.revoked_at),
        "certificate_serial": t.certificate_serial,
    }


def certificate(cert: CertificateRecord, ident: IdentityRecord) -> dict[str, Any]:
    return {
        "serial": cert.serial,
        "status": cert.status,
        "method": cert.method,
        "role": cert.role,
        "principal": ident.principal,
        "account_id": ident.account_id,
        "subject": cert.subject,
        "sans": list(cert.sans),
        "key_type": cert.key_type,
        "public_key_sha256": cert.public_key_sha256,
        "not_before": iso(cert.not_before),
        "not_after": iso(cert.not_after),
        "chain_started_at": iso(cert.chain_started_at),
        "revoked_at": iso(cert.revoked_at),
        "revocation_reason": cert.revocation_reason,
        "fingerprint_sha256": cert.fingerprint_sha256,
        "created_at": iso(cert.created_at),
        "request_id": cert.request_id,
    }


def history_entry(cert: CertificateRecord, renewed: str | None) -> dict[str, Any]:
    return {
        "serial": cert.serial,
        "status": cert.status,
        "method": cert.method,
        "role": cert.role,
        "renewed_from": renewed,
        "not_before": iso(cert.not_before),
        "not_after": iso(cert.not_after),
        "chain_started_at": iso(cert.chain_started_at),
        "revoked_at": iso(cert.revoked_at),
        "created_at": iso(cert.created_at),
    }


def binding(b: BindingRecord) -> dict[str, Any]:
    return {
        "instance_id": b.instance_id,
        "account_id": b.account_id,
        "region": b.region,
        "role": b.role,
        "pending_time": iso(b.pending_time),
        "bound_at": iso(b.created_at),
        "updated_at": iso(b.updated_at),
    }


def revocation(done: Revocation) -> dict[str, Any]:
    def cert(c: RevokedCertificate) -> dict[str, Any]:
        return {
            "serial": c.serial,
            "principal": c.principal,
            "method": c.method,
            "role": c.role,
            "status": c.status,
            "not_after": iso(c.not_after),
            "revoked_at": iso(c.revoked_at),
            "reason": c.reason,
        }

    return {
        "dry_run": done.dry_run,
        "target": {done.target.kind: done.target.value},
        "reason": done.reason,
        "revoked_at": iso(done.revoked_at),
        "request_id": done.request_id,
        "revoked": [cert(c) for c in done.revoked],
        "already_revoked": [cert(c) for c in done.already_revoked],
        "binding": done.binding,
        "upstream": [
            {"serial": r.serial, "issuer": r.issuer, "ok": r.ok, "code": r.code, "detail": r.detail}
            for r in done.upstream
        ],
    }


def denial(d: DenialRecord, *, now: datetime) -> dict[str, Any]:
    in_force = d.removed_at is None and (d.until is None or d.until > now)
    return {
        "id": d.id,
        "kind": d.kind,
        "value": d.value,
        "reason": d.reason,
        "until": iso(d.until),
        "in_force": in_force,
        "created_by": d.created_by,
        "created_at": iso(d.created_at),
        "request_id": d.request_id,
        "removed_at": iso(d.removed_at),
        "removed_by": d.removed_by,
    }


def audit_entry(a: AuditRecord) -> dict[str, Any]:
    return {
        "id": a.id,
        "at": iso(a.created_at),
        "method": a.method,
        "outcome": a.outcome,
        "code": a.code,
        "reason": a.reason,
        "principal": a.principal,
        "role": a.role,
        "certificate_serial": a.certificate_serial,
        "actor": a.actor,
        "action": a.action,
        "arguments": dict(a.arguments) if a.arguments is not None else None,
        "remote_addr": a.remote_addr,
        "request_id": a.request_id,
    }


def ca_status(status: CAStatus) -> dict[str, Any]:
    def leaves(counts: Any) -> dict[str, Any]:
        return {"issued": counts.issued, "live": counts.live, "last_live_expiry": iso(counts.last_expiry)}

    return {
        "now": iso(status.now),
        "issuers": [
            {
                "phase": i.phase,
                "state": i.record.state,
                "subject": i.record.subject,
                "fingerprint_sha256": i.record.fingerprint_sha256,
                "not_before": iso(i.record.not_before),
                "not_after": iso(i.record.not_after),
                "key_ref": i.record.key_ref,
                "root_fingerprint_sha256": i.root_fingerprint,
                "in_truststore": i.in_truststore,
                "leaves": leaves(i.leaves),
                "activated_at": iso(i.record.activated_at),
                "retired_at": iso(i.record.retired_at),
            }
            for i in status.issuers
        ],
        "roots": [
            {
                "state": r.record.state,
                "subject": r.record.subject,
                "fingerprint_sha256": r.record.fingerprint_sha256,
                "not_before": iso(r.record.not_before),
                "not_after": iso(r.record.not_after),
                "key_ref": r.record.key_ref,
                "key": r.key,
                "issuers": r.issuers,
            }
            for r in status.roots
        ],
        "warnings": list(status.warnings),
        "notes": list(status.notes),
        "expiring": status.expiring,
    }
