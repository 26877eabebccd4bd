"""Fixtures of the agent tests that run ``issuer-agent`` through ``main`` against the fake issuer
over real HTTP. A test module takes them by name (``ca = agent_support.ca``, ...), which registers
them in that module only: ``clean_env`` is autouse there and nowhere else."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from tests.support.fake_imds import serve_in_thread
from tests.unit.test_agent_fake_issuer import FakeIssuer, TestCA


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS_* or ISSUER_* variable of the developer's shell reaches the agent."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "ISSUER_")):
            monkeypatch.delenv(name)


@pytest.fixture
def fake(ca: TestCA) -> FakeIssuer:
    """A fake issuer on the wall clock that accepts the join tokens ``t-1`` and ``t-2`` once each."""
    return FakeIssuer(ca=ca, now=lambda: datetime.now(timezone.utc), tokens={"t-1", "t-2"})


@pytest.fixture
def url(fake: FakeIssuer) -> Iterator[str]:
    """The base URL of ``fake`` served over HTTP on loopback for the test."""
    with serve_in_thread(fake.http_app()) as base:
        yield base
