"""The refusal every method's bindings share: the identity does not match what the role allows.

The public ``detail`` never says which binding failed; the private ``reason`` (log and
audit table) does.
"""

from __future__ import annotations

from collections.abc import Sequence

from issuer.errors import Forbidden

__all__ = ["DETAIL", "mismatch", "require_one_of"]

DETAIL = "The identity does not match the role's bindings."


def require_one_of(role: str, field: str, allowed: Sequence[str], value: str | None) -> None:
    """Raise ``binding_mismatch`` when ``allowed`` is not empty and ``value`` is not in it."""
    if allowed and value not in allowed:
        raise mismatch(role, f"{field} does not include {value!r}")


def mismatch(role: str, reason: str) -> Forbidden:
    return Forbidden(DETAIL, code="binding_mismatch", reason=f"role {role}: {reason}")
