"""``python -m bench``: how many certificates a second the issuer signs, commits and answers.

The benchmark starts ``issuer serve`` on a throwaway Postgres database, preloads
join tokens, signed EC2 identity documents and certificates to renew, drives issuances
with ``wrk`` (or, without it, a Python load generator in its own process), and
compares with in-process figures (no HTTP, no database) and with ``cfssl serve``
on its own Postgres certdb when ``cfssl`` is installed. See ``python -m bench --help``.

Errors::

    BenchError            code            the benchmark cannot run or a step failed
"""

from __future__ import annotations

__all__ = ["BenchError"]


class BenchError(Exception):
    """A step of the benchmark failed; ``str()`` is one line for a person, ``code`` is stable."""

    def __init__(self, message: str, *, code: str = "bench_failed") -> None:
        super().__init__(message)
        self.code = code
