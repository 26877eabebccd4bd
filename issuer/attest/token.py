"""Join tokens: an operator's one-time secret for a machine with no AWS identity.

The token itself proves nothing until the store says it is unused and unexpired;
what is pure is its shape and its hash (only the hash is ever stored).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from issuer.hashing import hash_secret

__all__ = ["TOKEN_PREFIX", "TokenProof", "new_token"]

TOKEN_PREFIX = "ijt_"
_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,256}")


@dataclass(frozen=True, slots=True)
class TokenProof:
    """A join token as a client sent it."""

    token: str

    @property
    def token_hash(self) -> str:
        return hash_secret(self.token)

    @property
    def well_formed(self) -> bool:
        return _SHAPE.fullmatch(self.token) is not None


def new_token() -> str:
    """A fresh join token: the prefix and 256 bits from ``secrets``."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)
