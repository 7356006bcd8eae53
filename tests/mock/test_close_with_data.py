"""A client that sends its last events and closes at once loses none of them (design.md rule 7).

Found with a foreign-style bridge: its final appends and the close frame arrived in one read, and
the mock dropped every message after the first.
"""

from __future__ import annotations

import base64
import json

import pytest
import trio
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.net.wsconn import open_websocket

UPDATE = json.dumps({"type": "session.update",
                     "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}})
APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\xff" * 160).decode()})


@pytest.mark.parametrize("reactor", [True, False])
async def test_events_sent_just_before_the_close_are_all_handled(reactor):
    async with running_mock(MockConfig(any_key=True, reactor=reactor)) as mock:
        for _ in range(5):
            async with open_websocket(mock.realtime_url + "?model=gpt-realtime",
                                      [("authorization", "Bearer x")]) as ws:
                await ws.send_texts([UPDATE] + [APPEND] * 10)  # then the close frame, with no pause
        with trio.fail_after(5):
            while mock.open_sessions or mock.session_count < 5:
                await trio.sleep(0.01)
        got = [(s.counts["events_in"], s.counts["appends"]) for s in mock.sessions.values()]
        assert got == [(11, 10)] * 5
        assert all(s.close_info["by"] == "client" for s in mock.sessions.values())
