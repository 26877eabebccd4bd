"""A tally of refused requests by (method, code) since the process started, for the janitor's report.

It is one more :class:`~issuer.observability.seams.IssuanceObserver`: the pipeline reports
each refusal through its observer and counts nothing itself.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["RefusalTally"]


class RefusalTally:
    """Counts :meth:`refused` calls by (method, code) in :attr:`counts`."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def issued(self, method: str, role: str, seconds: float) -> None:
        pass

    def refused(self, method: str, role: str | None, code: str, seconds: float) -> None:
        self.counts[(method, code)] += 1
