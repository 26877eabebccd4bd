"""The event loop a serving process runs on: uvloop when installed, asyncio's own otherwise.

``ISSUER_EVENT_LOOP=asyncio`` keeps asyncio's loop even where uvloop is installed (to compare, or
to rule the loop out while debugging). uvloop (libuv) runs the same aiohttp and asyncpg code with
less Python between a socket and a handler.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_name", "run"]

T = TypeVar("T")


def _factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    if os.environ.get("ISSUER_EVENT_LOOP", "").strip().lower() == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def loop_name() -> str:
    """Which loop :func:`run` uses here: ``uvloop`` or ``asyncio``."""
    return _factory()[0]


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_name` names."""
    _, factory = _factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
