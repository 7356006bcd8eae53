"""Nobody takes the lines: idle upgrades, silent or non-reading streams, replayed tokens, killed runs.

Real sockets on loopback against the bridge (``running_bridge``) and the mock
OpenAI server; short timeouts through the settings, so each test takes a few
seconds of real time — the timing is what is tested.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import time
from contextlib import AsyncExitStack

import httpx
import pytest
import trio
from callsim.bridge.store import Store
from callsim.bridge.wsconn import text_frame
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.script import Hangup, Pause, Say, WaitForReply
from callsim.simulator.caller.trio_driver import fetch_twiml, place_call
from callsim.simulator.caller.webhook import CallParties, StreamTarget
from callsim.simulator.measure.timeline import ClosedByApp
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from tests.bridge.test_e2e import AUTH, SHORT, stack

SILENCE = base64.b64encode(b"\xff" * 160).decode()


async def _twiml(base: str, parties: CallParties, auth_token: str | None = None) -> StreamTarget:
    async with httpx.AsyncClient() as client:
        answer = (await fetch_twiml(client, base + "/incoming-call", parties, auth_token)).result
    assert isinstance(answer, StreamTarget), answer
    return answer


def _start(parties: CallParties, params: dict[str, str]) -> tuple[str, str]:
    """(start message, stream SID) as Twilio sends them for this call and these <Parameter>s."""
    ident = tw.StreamIdentity(parties.account_sid, parties.call_sid, "MZ" + os.urandom(16).hex(), params)
    return tw.start_message(ident, 1), ident.stream_sid


async def _conversation(base: str, call_sid: str) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{base}/api/conversations/{call_sid}", headers=AUTH)).json()


async def _wait_for_session(mock, n: int = 1) -> None:
    with trio.fail_after(5):
        while len(mock.sessions) < n:
            await trio.sleep(0.01)


def _metric(app, line: str) -> bool:
    return line in app.metrics.render()[0].decode()


async def test_idle_upgrades_take_no_line_and_are_closed_after_the_start_timeout(tmp_path, caplog):
    """The issue's repro, scaled down: upgrades that never send ``start`` used to count as calls,
    forever, so the webhook answered "all lines busy" to everyone."""
    caplog.set_level(logging.INFO)
    async with stack(tmp_path, max_concurrent_calls=2, max_pending_streams=3,
                     stream_start_timeout_s=1.0) as (mock, app, base):
        ws_url = base.replace("http://", "ws://") + "/media-stream"
        async with AsyncExitStack() as idle_stack:
            t0 = trio.current_time()
            idle = [await idle_stack.enter_async_context(open_websocket_url(ws_url)) for _ in range(3)]
            twiml = await _twiml(base, CallParties.new())  # the webhook still connects a caller
            assert twiml.parameters["token"]
            with pytest.raises(ConnectionRejected) as refused:  # pre-start sockets have their own cap
                async with open_websocket_url(ws_url):
                    pass
            assert refused.value.status_code == 503
            closed_after = []
            for ws in idle:
                with pytest.raises(ConnectionClosed):
                    with trio.fail_after(3):
                        await ws.get_message()
                closed_after.append(trio.current_time() - t0)
                assert ws.closed.code == 1008
        assert 0.9 <= min(closed_after) and max(closed_after) < 2.0, closed_after
        assert app.pending == set() and app.calls == set()
        assert _metric(app, 'callsim_bridge_errors_total{kind="stream_start_timeout"} 3.0')
        assert _metric(app, 'callsim_bridge_errors_total{kind="pending_streams_full"} 1.0')
        assert _metric(app, "callsim_bridge_pending_streams 0.0")
        # a real caller gets through once they are gone
        result = await place_call(base + "/incoming-call", [Pause(300), Say("caller_stop"), WaitForReply(), Hangup()])
        assert result.ok, result.error
    assert len(mock.sessions) == 1  # no idle socket ever reached OpenAI
    timeouts = [r.getMessage() for r in caplog.records if "no valid start within 1 s" in r.getMessage()]
    assert len(timeouts) == 3 and all(m.startswith("media stream from 127.0.0.1:") for m in timeouts), timeouts


async def test_pending_streams_do_not_count_as_calls_on_the_upgrade_either(tmp_path):
    """max_concurrent_calls=1 and one idle upgrade: a real call's upgrade is still accepted."""
    async with stack(tmp_path, max_concurrent_calls=1, stream_start_timeout_s=10.0) as (mock, app, base):
        async with open_websocket_url(base.replace("http://", "ws://") + "/media-stream"):
            result = await place_call(base + "/incoming-call",
                                      [Pause(300), Say("caller_stop"), WaitForReply(), Hangup()])
    assert result.ok, result.error


async def test_a_silent_stream_ends_its_call_and_closes_openai(tmp_path, caplog):
    """A valid start, then no media: Twilio would have sent 50 frames a second."""
    caplog.set_level(logging.INFO)
    async with stack(tmp_path, media_timeout_s=1.0) as (mock, app, base):
        parties = CallParties.new()
        target = await _twiml(base, parties)
        async with open_websocket_url(target.url) as ws:
            start, _ = _start(parties, target.parameters)
            await ws.send_message(tw.connected_message())
            await ws.send_message(start)
            t_start = time.monotonic_ns()
            await _wait_for_session(mock)
            with pytest.raises(ConnectionClosed):
                with trio.fail_after(4):
                    while True:
                        await ws.get_message()
        assert await mock.wait_all_closed(1.0)
        (session,) = mock.sessions.values()
        close = session.snapshot()["close"]
        conv = await _conversation(base, parties.call_sid)
    waited_s = (close["t_ns"] - t_start) / 1e9
    assert close["by"] == "client" and 1.0 <= waited_s < 1.0 + 1.0, waited_s
    assert conv["status"] == "media_timeout" and conv["ended_at"]
    assert any(r.getMessage().startswith(f"call {parties.call_sid}: no media from Twilio for ")
               for r in caplog.records)


async def _non_reading_stream(port: int) -> trio.SocketStream:
    """A WebSocket client that will never read past the handshake, with a small receive buffer
    so the bridge's sends fill it quickly (as a stuck peer's would, only sooner)."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        f"GET /media-stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # byte by byte: nothing after the head is read
        head += await stream.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream


async def test_a_peer_that_stops_reading_ends_its_call_and_closes_openai(tmp_path, caplog):
    """The peer keeps sending media (so it is not silent) but reads nothing while the assistant
    talks: one send blocked past twilio_send_timeout_s ends the call."""
    caplog.set_level(logging.INFO)
    behaviour = Behaviour(greeting="assistant_long_reply", realtime_factor=50.0, think=ThinkTime("fixed", 50.0),
                          seed=8)
    async with stack(tmp_path, behaviour, ai_greeting="Greet the caller.", twilio_send_timeout_s=1.0,
                     media_timeout_s=30.0) as (mock, app, base):
        parties = CallParties.new()
        target = await _twiml(base, parties)
        stream = await _non_reading_stream(int(base.rsplit(":", 1)[1]))
        start, stream_sid = _start(parties, target.parameters)

        async def send(msg: str) -> None:
            await stream.send_all(text_frame(msg.encode(), mask=True))

        async def media_forever() -> None:
            chunk = 0
            try:
                while True:
                    chunk += 1
                    await send(tw.media_message(stream_sid, chunk + 2, chunk, chunk * 20, SILENCE))
                    await trio.sleep(0.02)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            await send(tw.connected_message())
            await send(start)
            t_start = time.monotonic_ns()
            nursery.start_soon(media_forever)
            await _wait_for_session(mock)
            closed = await mock.wait_all_closed(4.0)
            nursery.cancel_scope.cancel()
        await stream.aclose()
        assert closed, "the OpenAI session stayed open while its caller read nothing"
        assert await app.wait_idle(2.0)
        (session,) = mock.sessions.values()
        snap = session.snapshot()
        conv = await _conversation(base, parties.call_sid)
    assert snap["close"]["by"] == "client"
    assert snap["responses"][0]["status"] == "completed"  # the whole greeting went out: 11 s of audio in 0.2 s
    print(f"session closed {(snap['close']['t_ns'] - t_start) / 1e9:.2f} s after start")
    assert conv["status"] == "send_timeout"
    assert any(r.getMessage().startswith(f"call {parties.call_sid}: a send to Twilio blocked for ")
               for r in caplog.records)


async def test_a_replayed_token_opens_no_second_session_during_or_after_the_call(tmp_path, caplog):
    """Signature checking on, so the upgrade's signature (the same for every call) replays too:
    only the token can tell the TwiML's one stream from a copy."""
    caplog.set_level(logging.INFO)
    auth = "twilio-auth-token-for-tests"
    async with stack(tmp_path, twilio_auth_token=auth) as (mock, app, base):
        parties = CallParties.new()
        target = await _twiml(base, parties, auth)
        copy = dict(target.parameters)
        first: dict = {}

        async def the_call() -> None:
            first["r"] = await place_call(target.url, [Pause(300), Say("caller_weather_question"), WaitForReply(),
                                                       Hangup()], auth_token=auth, parties=parties,
                                          custom_parameters=target.parameters)

        async def replay() -> object:
            return await place_call(target.url, [Pause(2000), Hangup()], auth_token=auth, parties=parties,
                                    custom_parameters=copy)

        async with trio.open_nursery() as n:
            n.start_soon(the_call)
            await _wait_for_session(mock)
            during = await replay()
            assert app.calls  # refused while the first call was live
        after = await replay()
        metrics = app.metrics.render()[0].decode()
    assert first["r"].ok, first["r"].error
    assert abs(first["r"].core.summary()["audio_played_ms"] - SHORT.duration_ms) < 60  # its whole reply
    for r in (during, after):
        closed = r.core.timeline.of(ClosedByApp)
        assert closed and closed[0].code == 1008
    assert len(mock.sessions) == 1
    assert 'callsim_bridge_errors_total{kind="call_token_reused"} 2.0' in metrics
    assert sum("per-call token already used" in r.getMessage() for r in caplog.records) == 2


async def test_a_token_of_another_call_or_a_stale_one_is_refused_without_an_auth_token(tmp_path):
    """Without TWILIO_AUTH_TOKEN a missing token is let through (local runs), a presented one is checked."""
    async with stack(tmp_path, stream_token_ttl_s=0.5) as (mock, app, base):
        parties = CallParties.new()
        target = await _twiml(base, parties)
        await trio.sleep(0.7)  # the TTL is what is tested: the token must be older than it
        stale = await place_call(target.url, [Pause(1000), Hangup()], parties=parties,
                                 custom_parameters=target.parameters)
        other = await place_call(target.url, [Pause(1000), Hangup()],
                                 custom_parameters=(await _twiml(base, CallParties.new())).parameters)
        metrics = app.metrics.render()[0].decode()
    for r in (stale, other):
        closed = r.core.timeline.of(ClosedByApp)
        assert closed and closed[0].code == 1008, r.core.timeline[-3:]
    assert 'callsim_bridge_errors_total{kind="call_token_expired"} 1.0' in metrics
    assert 'callsim_bridge_errors_total{kind="call_token"} 1.0' in metrics
    assert len(mock.sessions) == 0


async def test_calls_left_active_by_a_killed_bridge_are_interrupted_at_start_up(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    db = tmp_path / "bridge.sqlite3"
    s = Store(db)
    s.start_call("CAkilled", "MZkilled", "+15550001", "+15550002")  # as a bridge killed mid-call left it
    s.put_utterance("CAkilled", "item1", "caller", "hello")
    s.start_call("CAdone", "MZdone", None, None)
    s.end_call("CAdone", "completed")
    s.close()
    async with stack(tmp_path) as (mock, app, base):
        killed = await _conversation(base, "CAkilled")
        done = await _conversation(base, "CAdone")
    assert killed["status"] == "interrupted" and killed["ended_at"] >= killed["started_at"]
    assert [u["text"] for u in killed["utterances"]] == ["hello"]
    assert done["status"] == "completed"
    assert any("1 call(s) were still active" in r.getMessage() for r in caplog.records)
