"""The machine side of the issuer: the ``issuer-agent`` command and its helpers.

Ships to machines on its own, so it imports nothing from ``issuer/`` or ``ca/``:
the wire constants it shares with the service live in :mod:`clients.wire`.

Runs on Python 3.9 (Amazon Linux 2023, RHEL 9) as well as the service's 3.11: no
``datetime.UTC`` (``timezone.utc``), no ``X | Y`` evaluated at run time (``Union``, tuples
in ``isinstance``), no ``match``, ``zip(strict=)`` or ``tomllib``, and frozen dataclasses
without ``slots=True`` (3.10+). Ruff targets py39 here; ``make test`` type-checks it for 3.10
and tests/e2e/test_agent_py39.py runs mypy and the agent's tests under 3.9.
"""
