"""Mock bugs the fuzzer found (loadtests/fuzz.py), each pinned by a test.

1. ``session.update`` with ``"output_modalities": null`` (which the SDK's types allow)
   raised ``TypeError`` in the session config, and the exception escaped the session's
   nursery and ended the whole mock process — every other session with it. Now a null for
   a field the session needs leaves it as it is (as ``audio: null`` and a null format
   already did; the real server's answer is unconfirmed).
2. Behind it, the general hole: any exception in the mock's handling of one message (or
   one timer) killed the process. Now it ends that session alone — a ``server_error``
   event, then close 1011 — logged with the session id, and the server serves on.
"""

from __future__ import annotations

import json
import logging

import pytest
import trio
from callsim.simulator.mock import session as session_mod
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.mock.session import MockSession
from callsim.simulator.mock.session_config import SessionConfig
from trio_websocket import ConnectionClosed, open_websocket_url

from .conftest import events_of

KEY = "sk-test-fuzz-findings"
AUTH = [(b"authorization", f"Bearer {KEY}".encode())]


@pytest.mark.parametrize("dialect, update", [
    ("ga", {"type": "realtime", "output_modalities": None, "instructions": None, "tools": None,
            "tool_choice": None, "audio": {"output": {"voice": None}}}),
    ("beta", {"modalities": None, "instructions": None, "tools": None, "tool_choice": None, "voice": None,
              "input_audio_format": None}),
])
def test_a_null_leaves_a_needed_session_field_as_it_was(dialect, update):
    c = SessionConfig(dialect, "gpt-realtime" if dialect == "ga" else "gpt-4o-realtime-preview")
    before = (list(c.output_modalities), c.voice, c.instructions, c.tools, c.tool_choice, c.input_format)
    assert c.apply_update(update) is None
    assert (c.output_modalities, c.voice, c.instructions, c.tools, c.tool_choice, c.input_format) == before


def test_output_modalities_null_is_answered_with_session_updated():
    """The fuzzer's repro, through the session core: the event the SDK accepts gets session.updated."""
    s = MockSession(dialect="ga")
    s.open(0)
    out = events_of(s.receive(1, json.dumps({"type": "session.update", "session": {"type": "realtime", "output_modalities": None}})))
    assert [e["type"] for e in out] == ["session.updated"]
    assert out[0]["session"]["output_modalities"] == ["audio"]
    assert s.close_request is None and s.invalid_sent == []


def test_a_failing_timer_ends_the_session_with_server_error_and_1011(caplog):
    s = MockSession(dialect="ga")
    s.open(0)

    def boom(now_ns: int, out: list) -> None:
        raise RuntimeError("mock bug in a timer")

    s.timers.call_at(5, "boom", boom)
    with caplog.at_level(logging.ERROR, logger="callsim.mock"):
        out = events_of(s.advance(10))
    assert [(e["type"], e["error"]["type"]) for e in out] == [("error", "server_error")]
    assert s.close_request == (1011, "internal server error")
    assert s.next_deadline_ns() is None
    assert any(s.id in r.getMessage() and "mock bug" in r.getMessage() for r in caplog.records)


async def test_a_mock_bug_on_one_session_leaves_the_server_serving(monkeypatch, caplog):
    """Over real sockets: the session that hit the bug gets server_error and close 1011; a session
    opened next (and one open all along) are served as before."""
    original = session_mod._handler("input_audio_buffer.clear")

    def clear(self, now_ns, event, eid, out):  # type: ignore[no-untyped-def]
        if eid == "boom":
            raise RuntimeError("mock bug")
        original(self, now_ns, event, eid, out)

    monkeypatch.setitem(session_mod._HANDLERS, "input_audio_buffer.clear", clear)
    async with running_mock(MockConfig(api_key=KEY)) as mock:
        url = mock.realtime_url + "?model=gpt-realtime"
        async with open_websocket_url(url, extra_headers=AUTH, connect_timeout=5) as bystander:
            assert json.loads(await bystander.get_message())["type"] == "session.created"
            with caplog.at_level(logging.ERROR, logger="callsim.mock"):
                async with open_websocket_url(url, extra_headers=AUTH, connect_timeout=5) as victim:
                    assert json.loads(await victim.get_message())["type"] == "session.created"
                    await victim.send_message('{"type":"input_audio_buffer.clear","event_id":"boom"}')
                    with trio.fail_after(5):
                        err = json.loads(await victim.get_message())
                        with pytest.raises(ConnectionClosed) as closed:
                            await victim.get_message()
            assert err["type"] == "error" and err["error"]["type"] == "server_error"
            assert closed.value.reason.code == 1011
            assert any("mock bug" in r.getMessage() for r in caplog.records)
            for ws in (bystander,):
                await ws.send_message('{"type":"input_audio_buffer.clear"}')
                with trio.fail_after(5):
                    assert json.loads(await ws.get_message())["type"] == "input_audio_buffer.cleared"
        async with open_websocket_url(url, extra_headers=AUTH, connect_timeout=5) as after:
            with trio.fail_after(5):
                assert json.loads(await after.get_message())["type"] == "session.created"
        with trio.fail_after(5):
            assert await mock.wait_all_closed(5)


# 3. A HEAD request to the control port (e.g. ``HEAD /v1/realtime``) hit an h11 LocalProtocolError
#    (a body for a HEAD): the connection was dropped with no answer. 4. A request head (or a control
#    request's body) that never ends held a task and a socket forever: no timeout (slowloris).


async def _exchange(port: int, data: bytes, *, read_until_eof: bool = True) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        got = b""
        while read_until_eof:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            got += chunk
        return got


@pytest.mark.parametrize("path", ["/v1/realtime", "/_mock/health", "/nowhere"])
async def test_head_requests_are_answered_with_a_head(path):
    async with running_mock(MockConfig(api_key=KEY)) as mock:
        with trio.fail_after(5):
            got = await _exchange(mock.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status = int(got.split(b" ", 2)[1])
    assert status == {"/v1/realtime": 426, "/_mock/health": 200, "/nowhere": 404}[path], got
    assert got.endswith(b"\r\n\r\n"), got  # the head alone


@pytest.mark.parametrize("sent", [
    b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\n",  # a head that never ends
    b"POST /_mock/behaviour HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"think\"",  # a body that never comes
])
async def test_a_request_that_never_finishes_is_answered_408_after_10_s(sent, autojump_clock):
    async with running_mock(MockConfig(api_key=KEY)) as mock:
        t0 = trio.current_time()
        with trio.fail_after(60):
            got = await _exchange(mock.port, sent)
        waited = trio.current_time() - t0
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert 10 <= waited < 11


# 5. ``session.update`` with ``audio.input.format: {"type": null}`` (SDK-valid) raised ValueError
#    in AudioFormat.from_wire: before the guard above, another process-killer; a null pcm ``rate``
#    did the same. A null type is now treated as a missing one, a null rate as the default.


@pytest.mark.parametrize("side", ["input", "output"])
def test_a_null_audio_format_type_is_a_missing_parameter(side):
    c = SessionConfig("ga", "gpt-realtime")
    err = c.apply_update({"type": "realtime", "audio": {side: {"format": {"type": None}}}})
    assert err is not None and err["error"]["code"] == "missing_required_parameter"
    assert err["error"]["param"] == f"session.audio.{side}.format.type"


def test_a_null_pcm_rate_is_the_default_rate():
    c = SessionConfig("ga", "gpt-realtime")
    assert c.apply_update({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": None}}}}) is None
    assert c.input_format.kind == "pcm16" and c.input_format.rate == 24000


# 6. Error messages quote the client's values: a 1.2 MB bogus event type became a 1.2 MB log
#    line and a 1.2 MB record kept per error (500 per session, 1000 sessions kept): the mock's RSS
#    grew by ~100 MB a minute under the fuzzer. A newline in a client's value could also forge a
#    log line. The event sent stays whole; what is logged and kept is clipped and escaped.


def test_a_huge_bad_value_is_clipped_in_the_log_and_the_records(caplog):
    s = MockSession(dialect="ga")
    s.open(0)
    bogus = "A" * 1_200_000 + "\nINFO callsim.mock: forged line"
    with caplog.at_level(logging.INFO, logger="callsim.mock"):
        out = events_of(s.receive(1, json.dumps({"type": bogus})))
        s.receive(2, json.dumps({"type": "conversation.item.delete", "item_id": "x\r\nforged" * 1000}))
    assert out[0]["type"] == "error" and bogus in out[0]["error"]["message"]  # what is sent is whole
    assert all(len(e["message"]) < 1100 for e in s.errors_sent)
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(len(m) < 800 and "\n" not in m and "\r" not in m for m in lines), [m[:100] for m in lines]
    assert all(len(str(e.get("item_id", ""))) < 300 for e in s.log)


# 7. conversation.item.create with a GA MCP item (mcp_call, mcp_list_tools, ...: SDK-valid client
#    events) was echoed in conversation.item.added/done as {id, type} alone, which the SDK's own
#    server-event types reject ("mock sent an event the SDK rejects"). Now kept as given.


@pytest.mark.parametrize("item", [
    {"type": "mcp_list_tools", "server_label": "srv", "tools": [{"name": "t", "input_schema": {}}]},
    {"type": "mcp_call", "id": "mcp_1", "server_label": "srv", "name": "t", "arguments": "{}"},
])
def test_a_client_created_mcp_item_is_echoed_as_the_sdk_expects(item):
    s = MockSession(dialect="ga")
    s.open(0)
    out = events_of(s.receive(1, json.dumps({"type": "conversation.item.create", "item": item})))
    assert [e["type"] for e in out] == ["conversation.item.added", "conversation.item.done"]
    assert s.invalid_sent == [], s.invalid_sent
    assert out[0]["item"]["server_label"] == "srv"


# 8. The session's event log (kept after the session closes, for introspection) stored the
#    ``type`` of an invalid event as the client sent it: a megabyte string or a deep list, up to
#    2000 of them per session. Under the fuzzer the mock grew by ~2.5 MB a minute.


def test_the_event_log_keeps_no_client_megabytes():
    s = MockSession(dialect="ga")
    s.open(0)
    for i, bad in enumerate(["A" * 1_000_000, [[[[1]]]] * 1000, {"k": "v" * 100_000}]):
        s.receive(i + 1, json.dumps({"type": bad}))
    kept = [e["type"] for e in s.log if e.get("invalid")]
    assert kept[0].startswith("AAAA") and len(kept[0]) < 200
    assert kept[1:] == ["<list>", "<dict>"]
