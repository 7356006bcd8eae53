"""Tagged queued behaviours: each session reports the tag it got; a scenario can withdraw its leftovers.

Over real loopback sockets (the harness drives these endpoints over HTTP),
plus the Python API the in-process demo uses.
"""

from __future__ import annotations

import httpx
import pytest
import trio
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime
from callsim.simulator.mock.server import MockServer, running_mock

from .test_server import PCMU_MANUAL, Client, config, connect

LONG_B = {"replies": ["assistant_long_reply"], "think": 10}
SHORT_B = Behaviour(replies=("assistant_short_reply",), think=ThinkTime("fixed", 10), seed=3)


async def _one_session(mock: MockServer) -> dict:
    """Open a session, get one reply, close; its full snapshot."""
    async with connect(mock) as c:
        c: Client
        sid = (await c.recv())["session"]["id"]
        await c.send(PCMU_MANUAL)
        await c.until("session.updated")
        await c.send({"type": "response.create"})
        assert (await c.until("response.done"))["response"]["status"] == "completed"
    return mock.sessions[sid].snapshot()


async def test_withdrawn_behaviour_never_reaches_a_later_session():
    async with running_mock(config()) as mock:
        async with httpx.AsyncClient(base_url=mock.http_url, timeout=5) as http:
            # scenario A queues two sessions' worth, but its calls never open a session
            r = await http.post("/_mock/behaviour?next_sessions=2&tag=scenario-A", json=LONG_B)
            assert (r.status_code, r.json()) == (200, {"ok": True})
            mock.set_behaviour(SHORT_B, next_sessions=1, tag="scenario-B")
            r = await http.delete("/_mock/behaviour", params={"tag": "scenario-A"})
            assert (r.status_code, r.json()) == (200, {"withdrawn": 2})
            r = await http.delete("/_mock/behaviour", params={"tag": "scenario-A"})
            assert r.json() == {"withdrawn": 0}

            b = await _one_session(mock)  # scenario B's call gets B's behaviour, not A's leftovers
            d = await _one_session(mock)  # then the default again
            short = (await http.get("/_mock/sessions")).json()["sessions"]
            full = [(await http.get(f"/_mock/sessions/{i}")).json() for i in (1, 2)]

    assert [s["behaviour_tag"] for s in short] == ["scenario-B", None]
    assert [s["behaviour_tag"] for s in full] == ["scenario-B", None]
    assert (b["behaviour_tag"], b["responses"][0]["reply"]) == ("scenario-B", "assistant_short_reply")
    assert d["behaviour_tag"] is None and d["responses"][0]["think_ms"] == 50.0  # the server default (FAST)


async def test_withdraw_keeps_other_tags_in_order_and_counts_only_unconsumed():
    async with running_mock(config()) as mock:
        mock.set_behaviour(SHORT_B, next_sessions=1, tag="A")
        mock.set_behaviour(SHORT_B.with_(think=ThinkTime("fixed", 20)), next_sessions=1, tag="B")
        mock.set_behaviour(SHORT_B, next_sessions=2, tag="A")
        mock.set_behaviour(SHORT_B.with_(think=ThinkTime("fixed", 30)), next_sessions=1)  # untagged
        first = await _one_session(mock)  # consumes the first "A"
        assert first["behaviour_tag"] == "A"
        assert mock.withdraw_behaviour("A") == 2
        assert mock.withdraw_behaviour("nobody") == 0
        second, third = await _one_session(mock), await _one_session(mock)
        fourth = await _one_session(mock)
    assert (second["behaviour_tag"], second["responses"][0]["think_ms"]) == ("B", 20.0)
    assert (third["behaviour_tag"], third["responses"][0]["think_ms"]) == (None, 30.0)
    assert (fourth["behaviour_tag"], fourth["responses"][0]["think_ms"]) == (None, 50.0)


async def test_bad_tag_requests_are_400_and_change_nothing():
    async with running_mock(config()) as mock:
        async with httpx.AsyncClient(base_url=mock.http_url, timeout=5) as http:
            for path in ("/_mock/behaviour", "/_mock/behaviour?tag="):
                r = await http.delete(path)
                assert r.status_code == 400 and "tag" in r.json()["error"], path
            for path in ("/_mock/behaviour?tag=A", "/_mock/behaviour?next_sessions=1&tag="):
                r = await http.post(path, json=LONG_B)
                assert r.status_code == 400 and "tag" in r.json()["error"], path
        assert mock._next_behaviours == []
        with pytest.raises(ValueError, match="next_sessions"):
            mock.set_behaviour(SHORT_B, tag="A")
        assert mock._next_behaviours == []
        with trio.fail_after(10):
            assert (await _one_session(mock))["behaviour_tag"] is None
