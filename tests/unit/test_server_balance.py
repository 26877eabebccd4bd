"""The workers' accept balance: who leaves a new connection to whom, and the table shared across fork."""

from __future__ import annotations

import os

from issuer.http.server_balance import STALE, AcceptBalance

NOW = 1000.0


def test_a_busier_worker_waits_for_a_live_one_with_fewer_connections() -> None:
    balance = AcceptBalance(3)
    a, b = balance.seat(0), balance.seat(1)  # slot 2 never served: vacant
    a.report(3, now=NOW)
    b.report(1, now=NOW)
    assert a.should_wait(3, now=NOW)
    assert not b.should_wait(1, now=NOW)
    assert not a.should_wait(1, now=NOW), "equal counts: no one waits"
    assert b.should_wait(4, now=NOW), "its own figure is the one passed in, not the table's"


def test_a_stopped_stuck_or_gone_worker_is_left_out() -> None:
    balance = AcceptBalance(2)
    a, b = balance.seat(0), balance.seat(1)
    b.report(0, now=NOW)
    assert a.should_wait(5, now=NOW + STALE - 0.1)
    assert not a.should_wait(5, now=NOW + STALE + 0.1), "no stamp for STALE seconds: stopped or stuck"
    b.report(0, now=NOW)
    balance.vacate(1)  # the supervisor reaped it
    assert not a.should_wait(5, now=NOW)
    b.report(0, now=NOW)
    b.vacate()  # it stopped accepting
    assert not a.should_wait(5, now=NOW)


def test_the_table_is_shared_with_forked_workers() -> None:
    balance = AcceptBalance(2)
    pid = os.fork()
    if pid == 0:
        balance.seat(1).report(2, now=NOW)
        os._exit(0)
    os.waitpid(pid, 0)
    parent = balance.seat(0)
    assert parent.should_wait(3, now=NOW)
    assert not parent.should_wait(2, now=NOW)
