"""Reading an operator action's arguments: the same checks for a JSON body, a query string and the CLI.

The admin API hands over a JSON object (POST) or the query parameters (GET, every value a
string); the local command hands over Python values. :class:`Args` reads either, field by
field, and refuses what it cannot use with a :class:`~issuer.errors.ClientError` naming the
field (``field_missing``, ``field_invalid``, ``field_unknown``): 400 problem+json through the
API, one line from the command.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from issuer.durations import parse_duration
from issuer.errors import ClientError

__all__ = ["Args"]

T = TypeVar("T", bound=str)
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")


class Args:
    """The arguments of one action; call :meth:`done` after reading them all."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = raw
        self._read: set[str] = set()

    def text(self, name: str, *, max_len: int = 256, required: bool = False) -> str | None:
        value = self._get(name)
        if value is None:
            if required:
                raise ClientError(f"the field {name!r} is required", code="field_missing")
            return None
        if not isinstance(value, str) or not value or len(value) > max_len:
            raise ClientError(f"the field {name!r} must be a string of 1 to {max_len} characters", code="field_invalid")
        return value

    def required(self, name: str, *, max_len: int = 256) -> str:
        value = self.text(name, max_len=max_len, required=True)
        assert value is not None
        return value

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, str) and value.isdigit() and len(value) <= 9:
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ClientError(f"the field {name!r} must be a whole number from {low} to {high}", code="field_invalid")
        return value

    def flag(self, name: str) -> bool:
        value = self._get(name)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ClientError(f"the field {name!r} must be true or false", code="field_invalid")

    def choice(self, name: str, options: Collection[T]) -> T | None:
        value = self.text(name, max_len=64)
        if value is None:
            return None
        for option in options:
            if value == option:
                return option
        raise ClientError(f"the field {name!r} must be one of {', '.join(options)}", code="field_invalid")

    def duration(self, name: str, *, default: str | None = None) -> timedelta | None:
        value = self._get(name)
        if value is None:
            value = default
        if value is None:
            return None
        if not isinstance(value, str | int) or isinstance(value, bool) or (isinstance(value, str) and len(value) > 32):
            raise ClientError(f'the field {name!r} must be a duration such as "2h"', code="field_invalid")
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ClientError(f"the field {name!r}: {exc}", code="field_invalid") from None

    def moment(self, name: str, *, now: datetime) -> datetime | None:
        """A point in time: ISO 8601 with a zone (``2026-12-31T00:00:00Z``), or a duration from ``now`` (``2h``)."""
        value = self.text(name, max_len=64)
        if value is None:
            return None
        try:
            return now + parse_duration(value)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ClientError(
                f"the field {name!r} must be a time such as 2026-12-31T00:00:00Z, or a duration such as 8h",
                code="field_invalid",
            ) from None
        if moment.tzinfo is None:
            raise ClientError(f"the field {name!r} needs a time zone (Z or +00:00)", code="field_invalid")
        return moment.astimezone(UTC)

    def done(self) -> None:
        """Refuse arguments the action does not take (``field_unknown``)."""
        unknown = sorted(set(self._raw) - self._read)
        if unknown:
            taken = ", ".join(sorted(self._read)) or "none"
            raise ClientError(f"unknown field {unknown[0][:64]!r}; this action takes: {taken}", code="field_unknown")

    def _get(self, name: str) -> Any:
        self._read.add(name)
        return self._raw.get(name)
