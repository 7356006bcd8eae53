"""The connection cap's bookkeeping, without sockets (the front door's tests cover the wire)."""

from __future__ import annotations

import pytest
from callsim.bridge.connlimits import FD_RESERVE, ConnectionGate, connection_budget


def test_admits_up_to_the_limit_and_a_released_slot_is_reusable_once():
    gate = ConnectionGate(2)
    a, b = gate.admit(), gate.admit()
    assert a is not None and b is not None and gate.open == 2
    assert gate.admit() is None and gate.refused == 1
    a.release()
    a.release()  # twice (the stream's close and the handler's finally): one place back, not two
    assert gate.open == 1
    assert gate.admit() is not None
    assert gate.admit() is None and gate.refused == 2


def test_refusals_are_reported_at_most_once_per_interval_and_none_is_lost():
    gate = ConnectionGate(1, report_every_s=10.0)
    assert gate.admit() is not None
    assert gate.report_due(now=0.0) == 0  # nothing refused, nothing to say
    gate.admit()
    assert gate.report_due(now=100.0) == 1  # the first refusal is reported at once
    for t in (101.0, 105.0, 109.9):
        gate.admit()
        assert gate.report_due(now=t) == 0  # within the interval: counted, not logged
    gate.admit()
    assert gate.report_due(now=110.0) == 4  # the next report carries all of them
    assert gate.refused == 5


def test_the_budget_fits_the_descriptor_limit():
    assert connection_budget(1000, 200, -1) == 1000  # RLIM_INFINITY
    assert connection_budget(1000, 200, 20000) == 1000
    assert connection_budget(1000, 200, 1024) == 1024 - 200 - FD_RESERVE
    assert connection_budget(1000, 200, 100) == (100 - FD_RESERVE) // 2
    assert connection_budget(1000, 200, 10) == 1
    # more calls allowed than descriptors (capacity.py sets 100000): each connection may be a call
    assert connection_budget(1000, 100_000, 20000) == 1000
    assert connection_budget(5000, 100_000, 4096) == (4096 - FD_RESERVE) // 2


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError):
        ConnectionGate(0)
