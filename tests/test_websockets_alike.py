"""The bridge's and the simulator's WebSockets are two implementations (design.md rule 1: a bug
must not hide on both sides) that read alike: the same names for the same things, the same
close timeout, the framing apart from the I/O in each."""

from __future__ import annotations

import pytest
from callsim.bridge import fdstream as bridge_fdstream
from callsim.bridge import wsconn as bridge_wsconn
from callsim.bridge import wsframes as bridge_wsframes
from callsim.simulator.net import fdstream as sim_fdstream
from callsim.simulator.net import wsconn as sim_wsconn
from callsim.simulator.net import wsframes as sim_wsframes

SHARED_NAMES = ["ConnectionClosed", "ConnectionRejected", "HandshakeError", "WebSocket", "FdStream", "connect",
                "CLOSE_TIMEOUT", "RECEIVE_BYTES"]


@pytest.mark.parametrize("name", SHARED_NAMES)
def test_the_same_names_on_both_sides_and_no_shared_code(name):
    ours, theirs = getattr(bridge_wsconn, name), getattr(sim_wsconn, name)
    if callable(ours):
        assert ours is not theirs and ours.__module__.startswith("callsim.bridge.")
        assert theirs.__module__.startswith("callsim.simulator.")


def test_the_same_close_timeout():
    assert bridge_wsconn.CLOSE_TIMEOUT == sim_wsconn.CLOSE_TIMEOUT


def test_each_side_frames_apart_from_its_io():
    assert issubclass(bridge_wsconn.WebSocket, bridge_wsframes.FrameLane)
    assert issubclass(sim_wsconn.WebSocket, sim_wsframes.FrameLane)
    assert bridge_wsconn.FdStream is bridge_fdstream.FdStream and sim_wsconn.FdStream is sim_fdstream.FdStream
