"""The servers the benchmark starts (``issuer serve``, ``cfssl serve``, the aiohttp floor): waiting for
one to listen, and stopping it and every process it forked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable

from bench import BenchError
from bench.cpu import process_tree

__all__ = ["stop", "wait_listening"]


async def wait_listening(
    proc: subprocess.Popen[bytes], port: int, *, what: str, seconds: float, last_output: Callable[[], str], code: str
) -> None:
    """Until 127.0.0.1:``port`` accepts a connection; :class:`BenchError` ``code`` if ``proc`` exits first
    (with ``last_output()``) or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}: {last_output() or 'no output'}", code=code)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port} within {seconds:g}s", code=code)


def stop(proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    """SIGTERM (graceful), then SIGKILL to ``proc`` and what it forked if it outlives ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in process_tree(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
