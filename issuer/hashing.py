"""Hashes: of high-entropy secrets (join tokens, instance nonces; only these are stored), and content ETags."""

from __future__ import annotations

import hashlib

__all__ = ["hash_secret", "strong_etag"]


def hash_secret(value: str) -> str:
    """SHA-256 hex of ``value`` (UTF-8). A plain hash suffices: the secrets carry ≥ 128 bits of entropy."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def strong_etag(body: bytes) -> str:
    """A strong ETag from the content: the same bytes give the same tag on every replica."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
