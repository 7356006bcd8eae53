"""The mock Realtime server over real loopback sockets.

What only sockets can show: the HTTP handshake (status codes, bodies,
subprotocols), close frames and their codes versus a bare TCP drop, real-time
pacing of appends and of the reply's audio deltas, what happens when a client
goes away, junk on the wire, the HTTP introspection/control endpoints on the
same port, and many sessions at once. The sans-IO session core has its own
tests (tests/mock/test_session_*.py); these drive it only through a socket.

Clients are trio-websocket (``open_websocket_url``), a tiny wsproto client
where a test needs to abort the TCP connection itself, and ``httpx`` for HTTP.
Every wait has a deadline (``trio.fail_after``) and waits for an event, never a
guessed delay; the only sleeps are the 20 ms append schedule (``sleep_until``) and,
in the blocked-send test, polling the session until the server is stuck (explained there).
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import httpx
import pytest
import trio
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.mock.behaviour import Behaviour, Fault, ThinkTime
from callsim.simulator.mock.schema import validate_server_event
from callsim.simulator.mock.server import MockConfig, MockServer, running_mock
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Request,
    TextMessage,
)

KEY = "sk-test-server"
AUTH = [(b"authorization", f"Bearer {KEY}".encode())]
BETA = [(b"OpenAI-Beta", b"realtime=v1")]
FRAME = 160  # 20 ms of 8 kHz μ-law
SILENCE = b"\xff" * FRAME
FAST = Behaviour(think=ThinkTime("fixed", 50.0), seed=11)

PCMU_VAD = {"type": "session.update", "session": {
    "type": "realtime",
    "audio": {"input": {"format": {"type": "audio/pcmu"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
              "output": {"format": {"type": "audio/pcmu"}}},
}}
PCMU_MANUAL = {"type": "session.update", "event_id": "evt_manual", "session": {
    "type": "realtime",
    "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
              "output": {"format": {"type": "audio/pcmu"}}},
}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def config(**kw: Any) -> MockConfig:
    kw.setdefault("api_key", KEY)
    kw.setdefault("behaviour", FAST)
    return MockConfig(**kw)


# ------------------------------------------------------------------ clients


class Client:
    """A trio-websocket connection plus every event it received, with arrival times."""

    def __init__(self, ws: WebSocketConnection, dialect: str = "ga") -> None:
        self.ws = ws
        self.dialect = dialect
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []

    async def send(self, ev: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(ev))

    async def recv(self) -> dict[str, Any]:
        ev = json.loads(await self.ws.get_message())
        self.times.append(trio.current_time())
        self.events.append(ev)
        return ev

    async def until(self, pred: Callable[[dict[str, Any]], bool] | str, timeout: float = 10.0) -> dict[str, Any]:
        if isinstance(pred, str):
            name = pred
            pred = lambda e: e["type"] == name  # noqa: E731
        with trio.fail_after(timeout):
            while True:
                ev = await self.recv()
                if pred(ev):
                    return ev

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, etype: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == etype]

    def validate_all(self) -> None:
        for ev in self.events:
            validate_server_event(self.dialect, ev)  # raises on anything the SDK rejects


@asynccontextmanager
async def connect(mock: MockServer, *, headers: list[tuple[bytes, bytes]] | None = None,
                  query: str = "?model=gpt-realtime", dialect: str = "ga",
                  subprotocols: list[str] | None = None) -> AsyncIterator[Client]:
    async with open_websocket_url(mock.realtime_url + query, extra_headers=AUTH if headers is None else headers,
                                  subprotocols=subprotocols, connect_timeout=5,
                                  disconnect_timeout=5) as ws:
        yield Client(ws, dialect)


async def rejected(mock: MockServer, path: str = "/v1/realtime?model=gpt-realtime",
                   headers: list[tuple[bytes, bytes]] | None = None,
                   subprotocols: list[str] | None = None) -> ConnectionRejected:
    url = f"ws://127.0.0.1:{mock.port}{path}"
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, extra_headers=headers or [], subprotocols=subprotocols,
                                      connect_timeout=5):
            pass
    return info.value


class RawClient:
    """A minimal WebSocket client on a bare trio socket (wsproto), so a test can
    make the client vanish: abort the TCP connection with no close frame."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[dict[str, Any]] = []
        self._text = ""

    @classmethod
    async def open(cls, mock: MockServer, rcvbuf: int | None = None) -> "RawClient":
        sock = trio.socket.socket()
        if rcvbuf is not None:  # before connect, so the advertised window stays small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", mock.port))
        c = cls(trio.SocketStream(sock))
        await c.stream.send_all(c.ws.send(Request(host=f"127.0.0.1:{mock.port}",
                                                  target="/v1/realtime?model=gpt-realtime",
                                                  extra_headers=AUTH)))
        with trio.fail_after(5):
            while True:
                c.ws.receive_data(await c.stream.receive_some(65536))
                for ev in c.ws.events():
                    if isinstance(ev, AcceptConnection):
                        c._take(c.ws.events())  # messages that came in the same read as the 101
                        return c
                    raise AssertionError(f"handshake failed: {ev!r}")

    async def send(self, ev: dict[str, Any]) -> None:
        await self.stream.send_all(self.ws.send(Message(data=json.dumps(ev))))

    async def recv(self) -> dict[str, Any]:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            assert data, "server closed the connection"
            self.ws.receive_data(data)
            self._take(self.ws.events())
        return self.pending.pop(0)

    def _take(self, events: Any) -> None:
        for ev in events:
            if isinstance(ev, TextMessage):
                self._text += ev.data
                if ev.message_finished:
                    self.pending.append(json.loads(self._text))
                    self._text = ""
            elif isinstance(ev, CloseConnection):
                raise AssertionError(f"server closed: {ev.code}")

    async def until(self, etype: str, timeout: float = 10.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                ev = await self.recv()
                if ev["type"] == etype:
                    return ev

    async def send_close(self, code: int = 1000) -> None:
        await self.stream.send_all(self.ws.send(CloseConnection(code=code)))

    async def drain(self) -> int:
        """Read until the server closes the TCP connection; the number of bytes read."""
        n = 0
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return n
            if not data:
                return n
            n += len(data)

    async def abort(self) -> None:
        """RST: SO_LINGER 0 then close -- no close frame, no FIN handshake."""
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


# ------------------------------------------------------------------ audio pacing


async def stream_paced(client: Client, audio: bytes, silence_ms: int = 1000) -> float:
    """Append ``audio`` then ``silence_ms`` of silence as 20 ms frames on absolute
    deadlines (frame k at t0 + 20k ms), like a Twilio bridge forwarding media.
    Returns the schedule's worst lateness in ms."""
    pad = (-len(audio)) % FRAME
    audio = audio + b"\xff" * pad
    frames = [audio[i:i + FRAME] for i in range(0, len(audio), FRAME)] + [SILENCE] * (silence_ms // 20)
    t0 = trio.current_time()
    worst = 0.0
    for k, frame in enumerate(frames):
        deadline = t0 + k * 0.020
        await trio.sleep_until(deadline)
        worst = max(worst, trio.current_time() - deadline)
        await client.send({"type": "input_audio_buffer.append", "audio": b64(frame)})
    return worst * 1000


def audio_bytes(events: list[dict[str, Any]], etype: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == etype)


async def http_get(mock: MockServer, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=mock.http_url, timeout=5) as c:
        return await c.get(path)


# ====================================================================== 1. handshake


async def test_handshake_requires_the_configured_bearer_key():
    async with running_mock(config()) as mock:
        for headers in ([], [(b"authorization", b"Bearer sk-wrong")], [(b"authorization", b"Bearer")],
                        [(b"authorization", f"Basic {KEY}".encode())]):
            exc = await rejected(mock, headers=headers)
            assert exc.status_code == 401, headers
            assert dict(exc.headers)[b"content-type"] == b"application/json"
            assert json.loads(exc.body) == {"error": {
                "message": "Incorrect API key provided. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "code": "invalid_api_key", "param": None}}
        assert mock.refused == 4 and mock.sessions == {}

        async with connect(mock) as c:
            first = await c.until(lambda e: True, timeout=5)
            assert first["type"] == "session.created"
            assert first["session"]["model"] == "gpt-realtime"
            assert c.ws.subprotocol is None
            validate_server_event("ga", first)
        assert mock.session_count == 1


async def test_any_key_accepts_any_non_empty_key_but_not_none():
    async with running_mock(config(api_key=None, any_key=True)) as mock:
        exc = await rejected(mock, headers=[])
        assert exc.status_code == 401 and json.loads(exc.body)["error"]["code"] == "invalid_api_key"
        for empty in (b"Bearer", b"Basic c2stYW55"):  # no bearer token at all: still refused
            exc = await rejected(mock, headers=[(b"authorization", empty)])
            assert exc.status_code == 401, empty
        for key in (b"sk-whatever", b"x"):
            async with connect(mock, headers=[(b"authorization", b"Bearer " + key)]) as c:
                assert (await c.recv())["type"] == "session.created"
        assert mock.refused == 3 and mock.session_count == 2


async def test_wrong_path_is_404_even_with_a_good_key():
    async with running_mock(config()) as mock:
        for path in ("/v1/realtime/extra", "/v1/chat", "/realtime", "/"):
            exc = await rejected(mock, path=path, headers=AUTH)
            assert exc.status_code == 404, path
            err = json.loads(exc.body)["error"]
            assert err["message"] == f"Invalid URL (GET {path})" and err["type"] == "invalid_request_error"
        # a trailing slash on the real path is tolerated
        async with open_websocket_url(mock.realtime_url + "/?model=m", extra_headers=AUTH) as ws:
            assert json.loads(await ws.get_message())["type"] == "session.created"


async def test_browser_style_subprotocol_auth_selects_realtime():
    async with running_mock(config()) as mock:
        async with connect(mock, headers=[], subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as c:
            assert c.ws.subprotocol == "realtime"
            assert (await c.recv())["type"] == "session.created"
        exc = await rejected(mock, subprotocols=["realtime", "openai-insecure-api-key.sk-wrong"])
        assert exc.status_code == 401
        exc = await rejected(mock, subprotocols=["realtime"])  # no key anywhere
        assert exc.status_code == 401


async def test_refuse_fault_answers_429_and_500_for_chosen_sessions():
    faults = (Fault("refuse", status=429, sessions=(1, 3)), Fault("refuse", status=500, sessions=(2,)))
    async with running_mock(config(behaviour=FAST.with_(faults=faults))) as mock:
        statuses = []
        for _ in range(3):
            exc = await rejected(mock, headers=AUTH)
            statuses.append((exc.status_code, json.loads(exc.body)["error"]["type"]))
        assert statuses == [(429, "rate_limit_error"), (500, "server_error"), (429, "rate_limit_error")]
        async with connect(mock) as c:  # session 4: no fault applies
            assert (await c.recv())["type"] == "session.created"
        assert mock.refused == 3 and mock.session_count == 4 and len(mock.sessions) == 1
        assert next(iter(mock.sessions.values())).index == 4


# ====================================================================== 2. beta


async def test_beta_header_on_ga_server_is_refused_with_close_4000():
    async with running_mock(config()) as mock:
        async with connect(mock, headers=AUTH + BETA) as c:
            err = await c.recv()
            assert err["type"] == "error"
            assert err["error"]["code"] == "beta_api_shape_disabled"
            assert err["error"]["message"] == ("The Realtime Beta API is no longer supported. "
                                               "Please use /v1/realtime for the GA API.")
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as info:
                await c.recv()
            assert info.value.reason.code == 4000
            assert info.value.reason.reason == "beta_api_shape_disabled"
        assert c.types() == ["error"]  # never a session.created
        snap = next(iter(mock.sessions.values())).snapshot()
        assert snap["close"]["by"] == "server" and snap["close"]["code"] == 4000


async def test_beta_server_speaks_beta_over_a_vad_turn():
    bank = default_bank()
    async with running_mock(config(dialect="beta")) as mock:
        async with connect(mock, headers=AUTH + BETA, dialect="beta") as c:
            created = await c.recv()
            assert created["type"] == "session.created" and "input_audio_format" in created["session"]
            await c.send({"type": "session.update", "event_id": "evt_beta", "session": {
                "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}})
            updated = await c.until("session.updated")
            assert updated["session"]["input_audio_format"] == "g711_ulaw"
            async with trio.open_nursery() as n:
                n.start_soon(stream_paced, c, bank.get("caller_stop").ulaw, 1000)
                done = await c.until("response.done", timeout=15)
        assert done["response"]["status"] == "completed"
        types = c.types()
        for t in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                  "conversation.item.created", "response.audio.delta", "response.audio.done",
                  "response.audio_transcript.delta"):
            assert t in types, t
        assert not any(t.startswith("response.output_audio") for t in types)
        assert "error" not in types
        c.validate_all()
        reply = bank.get("assistant_short_reply")
        assert abs(len(audio_bytes(c.events, "response.audio.delta")) / 8 - reply.duration_ms) < 25


# ====================================================================== 3. a whole turn


async def test_whole_vad_turn_at_real_time_pace():
    bank = default_bank()
    factor = 4.0
    behaviour = Behaviour(think=ThinkTime("fixed", 200.0), realtime_factor=factor, chunk_ms=100, seed=5)
    async with running_mock(config(behaviour=behaviour)) as mock:
        async with connect(mock) as c:
            assert (await c.recv())["type"] == "session.created"
            await c.send(PCMU_VAD)
            await c.until("session.updated")
            async with trio.open_nursery() as n:
                n.start_soon(stream_paced, c, bank.get("caller_stop").ulaw, 1000)
                done = await c.until("response.done", timeout=15)
            await c.until("rate_limits.updated", timeout=5)
        snap = next(iter(mock.sessions.values())).snapshot()

    types = c.types()
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
             "input_audio_buffer.committed", "conversation.item.added", "response.created",
             "response.output_item.added", "response.content_part.added", "response.output_audio.delta",
             "response.output_audio.done", "response.output_item.done", "response.done", "rate_limits.updated"]
    pos = [types.index(t) for t in order]
    assert pos == sorted(pos), list(zip(order, pos))
    started, stopped = c.of("input_audio_buffer.speech_started")[0], c.of("input_audio_buffer.speech_stopped")[0]
    assert started["item_id"] == stopped["item_id"]
    assert done["response"]["status"] == "completed"
    assert "error" not in types
    c.validate_all()

    # the reply: the whole fixture, faster than real time by the configured factor
    deltas = [(t, e) for t, e in zip(c.times, c.events) if e["type"] == "response.output_audio.delta"]
    audio = audio_bytes(c.events)
    reply_ms = bank.get("assistant_short_reply").duration_ms
    assert abs(len(audio) / 8 - reply_ms) < 25
    assert all(len(base64.b64decode(e["delta"])) == 800 for _, e in deltas[:-1])  # 100 ms chunks
    wall = deltas[-1][0] - deltas[0][0]
    # delta k goes out at first + k * chunk/factor, so first→last spans all audio but the last chunk
    spanned_ms = len(audio) / 8 - len(base64.b64decode(deltas[-1][1]["delta"])) / 8
    measured = spanned_ms / 1000 / wall
    assert factor * 0.7 <= measured <= factor * 1.3, (measured, wall)
    assert snap["responses"][0]["think_ms"] == 200.0 and snap["invalid_sent"] == []


# ====================================================================== 4. faults over the wire


async def _start_response(c: Client) -> dict[str, Any]:
    assert (await c.recv())["type"] == "session.created"
    await c.send({"type": "response.create"})
    return await c.until("response.output_audio.delta", timeout=5)


async def test_drop_fault_ends_the_connection_without_a_close_frame():
    faults = (Fault("drop", after_ms=150),)
    async with running_mock(config(behaviour=FAST.with_(faults=faults))) as mock:
        async with connect(mock) as c:
            await _start_response(c)
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as info:
                while True:
                    await c.recv()
            assert info.value.reason.code == 1006  # abnormal closure: no close frame arrived
        assert "response.done" not in c.types()
        assert len(c.of("response.output_audio.delta")) >= 2
        assert await mock.wait_all_closed(1.0)
        snap = next(iter(mock.sessions.values())).snapshot()
        assert snap["close"]["by"] == "abort"
        assert snap["responses"][-1]["status"] == "incomplete"


async def test_close_fault_sends_the_configured_close_code():
    faults = (Fault("close", after_ms=100, code=4321),)
    async with running_mock(config(behaviour=FAST.with_(faults=faults))) as mock:
        async with connect(mock) as c:
            await _start_response(c)
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as info:
                while True:
                    await c.recv()
            assert info.value.reason.code == 4321
            assert info.value.reason.reason == "injected fault"
        assert "response.done" not in c.types()
        snap = next(iter(mock.sessions.values())).snapshot()
        assert snap["close"] == {**snap["close"], "by": "server", "code": 4321}


async def test_stall_fault_goes_silent_but_keeps_the_socket_open():
    faults = (Fault("stall", after_ms=100),)
    async with running_mock(config(behaviour=FAST.with_(faults=faults))) as mock:
        async with connect(mock) as c:
            await _start_response(c)
            # read until the server has been silent for a full second
            while True:
                with trio.move_on_after(1.0) as silence:
                    await c.recv()
                if silence.cancelled_caught:
                    break
                assert trio.current_time() - c.times[0] < 5, "never went silent"
            assert "response.done" not in c.types()
            assert c.ws.closed is None
            with trio.fail_after(2):
                await c.ws.ping()  # the transport is alive: the server's socket answers pings
            await c.send({"type": "session.update", "event_id": "evt_ignored",
                          "session": {"type": "realtime", "instructions": "x"}})
            with trio.move_on_after(0.3) as still:
                await c.recv()
            assert still.cancelled_caught  # a stalled server answers nothing
        assert await mock.wait_all_closed(1.0)
        snap = next(iter(mock.sessions.values())).snapshot()
        assert snap["close"]["by"] == "client"
        assert snap["responses"][-1]["status"] == "incomplete"


async def test_expire_fault_sends_session_expired_then_closes():
    faults = (Fault("expire", after_ms=300),)
    async with running_mock(config(behaviour=FAST.with_(faults=faults))) as mock:
        async with connect(mock) as c:
            assert (await c.recv())["type"] == "session.created"
            err = await c.until("error", timeout=3)
            assert err["error"]["code"] == "session_expired"
            with trio.fail_after(3), pytest.raises(ConnectionClosed) as info:
                await c.recv()
            assert info.value.reason.code == 1001 and info.value.reason.reason == "Your session hit the maximum duration of 60 minutes."
        assert c.types() == ["session.created", "error"]
        c.validate_all()
        snap = next(iter(mock.sessions.values())).snapshot()
        sent = next(e for e in snap["events"] if e["type"] == "error")
        assert 300 <= (sent["t_ns"] - snap["t_open_ns"]) / 1e6 < 400  # on the server's clock
        assert snap["close"]["by"] == "server" and snap["close"]["code"] == 1001


async def test_error_fault_sends_an_error_and_the_session_continues():
    faults = (Fault("error", after_ms=100),)
    async with running_mock(config(behaviour=FAST.with_(faults=faults))) as mock:
        async with connect(mock) as c:
            assert (await c.recv())["type"] == "session.created"
            err = await c.until("error", timeout=3)
            assert err["error"]["type"] == "server_error" and err["error"]["code"] is None
            await c.send({"type": "session.update", "event_id": "evt_after",
                          "session": {"type": "realtime", "instructions": "still here"}})
            updated = await c.until("session.updated", timeout=3)
            assert updated["session"]["instructions"] == "still here"
            await c.send({"type": "response.create"})
            assert (await c.until("response.done"))["response"]["status"] == "completed"
        c.validate_all()
        assert c.types().count("error") == 1


# ====================================================================== 5. client goes away


async def test_client_close_mid_response_is_recorded_and_frees_the_session():
    async with running_mock(config()) as mock:
        async with connect(mock) as c:
            await _start_response(c)
            assert mock.open_sessions == 1
        # the context exit sent a close frame (1000) mid-response
        assert await mock.wait_all_closed(1.0)
        assert mock.open_sessions == 0
        snap = next(iter(mock.sessions.values())).snapshot()
        assert snap["close"]["by"] == "client" and snap["close"]["code"] == 1000
        rec = snap["responses"][-1]
        assert rec["status"] == "incomplete" and rec["reason"] == "connection_closed"
        assert 0 < rec["audio_ms_sent"] < rec["audio_ms_total"]


async def test_client_vanishing_without_a_close_frame_is_handled_the_same():
    async with running_mock(config()) as mock:
        raw = await RawClient.open(mock)
        assert (await raw.recv())["type"] == "session.created"
        await raw.send({"type": "response.create"})
        await raw.until("response.output_audio.delta")
        await raw.abort()
        assert await mock.wait_all_closed(1.0)
        first = next(iter(mock.sessions.values())).snapshot()
        assert first["close"]["by"] == "client"
        assert first["responses"][-1]["status"] == "incomplete"

        async with connect(mock) as c:  # the server still serves
            await _start_response(c)
            assert (await c.until("response.done"))["response"]["status"] == "completed"
        assert await mock.wait_all_closed(1.0)
        assert mock.session_count == 2


async def test_client_close_while_the_server_is_blocked_sending_does_not_crash_the_server():
    """A client that stops reading, then closes, then drains: the server's timer
    loop is blocked in a send when the close frame arrives; trio-websocket marks
    the connection closed before its reader can answer, so the loop's next send
    raises ConnectionClosed -- inside a nursery, i.e. as an ExceptionGroup. That
    must end this session as closed by the client, not the whole server."""
    # echo 120 s of pcm16: ~7.7 MB of deltas, more than any socket buffer (tcp_wmem max is 4 MB),
    # all due at once (1000x real time), to a client whose receive window is 4 kB
    behaviour = FAST.with_(echo=True, realtime_factor=1000.0, chunk_ms=500)
    async with running_mock(config(behaviour=behaviour, recognize=False)) as mock:
        raw = await RawClient.open(mock, rcvbuf=4096)
        assert (await raw.recv())["type"] == "session.created"
        await raw.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await raw.until("session.updated")
        second = bytes(range(256)) * 188  # 1 s of pcm16 at 24 kHz is 48 000 bytes
        for _ in range(3):
            await raw.send({"type": "input_audio_buffer.append", "audio": b64(second[:48000] * 40)})
        await raw.send({"type": "input_audio_buffer.commit"})
        await raw.until("input_audio_buffer.committed")
        await raw.send({"type": "response.create"})
        session = next(iter(mock.sessions.values()))
        # wait (polling the session, not guessing a delay) until the server is stuck in a send:
        # the response is mid-stream and no further audio has gone out for 200 ms
        with trio.fail_after(5):
            last = -1
            while not (session.response is not None and session.response.phase == "streaming"
                       and session.counts["audio_out_bytes"] == last):
                last = session.counts["audio_out_bytes"]
                await trio.sleep(0.2)
        assert session.response.sent_bytes < len(session.response.audio)
        await raw.send_close(1000)
        # let the server's reader take the close frame in; it parks behind the blocked send.
        # (This only sets the scene: the assertions below hold whatever the order.)
        await trio.sleep(0.1)
        with trio.fail_after(5):
            received = await raw.drain()
        assert await mock.wait_all_closed(1.0)
        snap = session.snapshot()
        assert snap["close"]["by"] == "client"
        assert received < 5_760_000  # far less than the reply's audio reached the client
        # The core records what it *produced*: once the loop unblocks it catches up on every
        # overdue delta in one batch, so the record may say "completed" although that batch
        # never went out (the first send of it hit the close). Either way the session is over.
        assert snap["responses"][-1]["status"] in ("incomplete", "completed")

        async with connect(mock) as c:  # and the server is still serving
            await _start_response(c)


# ====================================================================== 6. bad input


async def test_junk_on_the_wire_gets_errors_and_never_leaks_into_another_session():
    big = b"\x00" * (2 * 2**20)  # 2 MiB of pcm16 silence (43.7 s) in one append: valid, accepted
    junk: list[tuple[str | bytes, str | None, str | None]] = [  # (frame, expected error code, its event_id)
        (b"\x00\x01binary", "invalid_event", None),
        ("{not json", "invalid_json", None),
        (json.dumps({"type": "nope.event", "event_id": "evt_unknown"}), "invalid_value", "evt_unknown"),
        (json.dumps({"type": "input_audio_buffer.append", "event_id": "evt_big", "audio": b64(big)}), None, None),
        (json.dumps({"type": "input_audio_buffer.append", "event_id": "evt_garbage", "audio": "!!not~base64!!"}),
         "invalid_event", "evt_garbage"),
    ]
    async with running_mock(config()) as mock:
        async with connect(mock) as a, connect(mock) as b:
            assert (await a.recv())["type"] == "session.created"
            assert (await b.recv())["type"] == "session.created"

            async def other_session() -> None:  # a normal session, concurrently
                for k in range(2):
                    await b.send({"type": "response.create", "event_id": f"evt_b{k}"})
                    assert (await b.until("response.done"))["response"]["status"] == "completed"

            async with trio.open_nursery() as n:
                n.start_soon(other_session)
                for k, (frame, code, eid) in enumerate(junk):
                    await a.ws.send_message(frame)
                    await a.send({"type": "session.update", "event_id": f"evt_ok{k}",
                                  "session": {"type": "realtime", "instructions": f"alive {k}"}})
                    ev = await a.until(lambda e: e["type"] in ("session.updated", "error"))
                    if code is None:  # accepted: the next thing is the answer to the probe
                        assert ev["type"] == "session.updated", ev
                    else:
                        assert ev["type"] == "error", frame
                        assert (ev["error"]["code"], ev["error"]["event_id"]) == (code, eid), ev
                        ev = await a.until(lambda e: e["type"] in ("session.updated", "error"))
                        assert ev["type"] == "session.updated", ev
                    assert ev["session"]["instructions"] == f"alive {k}"
            a_snap = mock.sessions[a.events[0]["session"]["id"]].snapshot()
            b_snap = mock.sessions[b.events[0]["session"]["id"]].snapshot()

    a.validate_all()
    b.validate_all()
    errs = a.of("error")
    assert "binary" in errs[0]["error"]["message"]
    assert [e["error"]["param"] for e in errs] == [None, None, "type", "audio"]
    assert a_snap["errors_sent"] == 4 and a_snap["counts"]["audio_in_bytes"] == len(big)
    assert a_snap["counts"]["appends"] == 1
    assert "error" not in b.types() and b_snap["errors_sent"] == 0
    assert [r["status"] for r in b_snap["responses"]] == ["completed", "completed"]


# ====================================================================== 7. HTTP on the same port


async def test_introspection_endpoints_show_the_session():
    bank = default_bank()
    async with running_mock(config()) as mock:
        async with httpx.AsyncClient(base_url=mock.http_url, timeout=5) as http:
            r = await http.get("/_mock/health")
            assert (r.status_code, r.json()) == (200, {"ok": True, "open_sessions": 0, "sessions": 0})
            assert r.headers["content-type"] == "application/json"

            async with connect(mock) as c:
                sid = (await c.recv())["session"]["id"]
                await c.send(PCMU_MANUAL)
                await c.until("session.updated")
                await c.send({"type": "input_audio_buffer.append", "audio": b64(bank.get("caller_stop").ulaw)})
                await c.send({"type": "input_audio_buffer.commit", "event_id": "evt_commit"})
                await c.send({"type": "response.create"})
                first = await c.until("response.output_audio.delta")
                await c.until("response.done")
                item = first["item_id"]
                await c.send({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                              "audio_end_ms": 500})
                await c.until("conversation.item.truncated")
                await c.send({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                              "audio_end_ms": 600_000, "event_id": "evt_long"})
                await c.until("error")

                listing = (await http.get("/_mock/sessions")).json()
                assert listing["open_sessions"] == 1 and listing["sessions_total"] == 1
                assert listing["refused"] == 0
                assert [s["id"] for s in listing["sessions"]] == [sid]
                assert listing["sessions"][0]["open"] is True
                assert "events" not in listing["sessions"][0]  # the list is the short form
            assert await mock.wait_all_closed(1.0)

            by_id = await http.get(f"/_mock/sessions/{sid}")
            by_index = await http.get("/_mock/sessions/1")
            assert by_id.status_code == by_index.status_code == 200
            snap = by_id.json()
            assert by_index.json() == snap
            assert (await http.get("/_mock/sessions")).json()["open_sessions"] == 0
            health = (await http.get("/_mock/health")).json()
            assert health == {"ok": True, "open_sessions": 0, "sessions": 1}

            for missing in ("/_mock/sessions/sess_nope", "/_mock/sessions/2", "/_mock/nothing"):
                r = await http.get(missing)
                assert r.status_code == 404 and "error" in r.json(), missing

    assert snap["id"] == sid and snap["open"] is False and snap["close"]["by"] == "client"
    assert len(snap["turns"]) == 1 and snap["turns"][0]["manual"] is True
    assert snap["turns"][0]["heard"] == "caller_stop"
    assert [(r["status"], r["trigger"]) for r in snap["responses"]] == [("completed", "client")]
    assert [(t["audio_end_ms"], t["accepted"]) for t in snap["truncates"]] == [(500, True), (600_000, False)]
    assert snap["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert snap["invalid_sent"] == []
    t_ns = [e["t_ns"] for e in snap["events"]]
    assert t_ns == sorted(t_ns) and t_ns[0] >= snap["t_open_ns"]
    logged = [(e["dir"], e["type"]) for e in snap["events"]]
    for entry in [("out", "session.created"), ("in", "session.update"), ("in", "input_audio_buffer.commit"),
                  ("out", "input_audio_buffer.committed"), ("in", "response.create"), ("out", "response.done"),
                  ("in", "conversation.item.truncate"), ("out", "conversation.item.truncated"),
                  ("out", "error"), ("closed", "client")]:
        assert entry in logged, entry


async def test_behaviour_for_the_next_session_only():
    bank = default_bank()
    async with running_mock(config(behaviour=Behaviour(seed=2))) as mock:  # default: short reply, think 300
        async with httpx.AsyncClient(base_url=mock.http_url, timeout=5) as http:
            r = await http.post("/_mock/behaviour?next_sessions=1",
                                json={"greeting": "assistant_long_reply", "think": 50})  # asked before a turn
            assert (r.status_code, r.json()) == (200, {"ok": True})

        async def one_reply(c: Client) -> None:
            assert (await c.recv())["type"] == "session.created"
            await c.send(PCMU_MANUAL)
            await c.until("session.updated")
            await c.send({"type": "response.create"})
            assert (await c.until("response.done", timeout=10))["response"]["status"] == "completed"

        async with connect(mock) as first, connect(mock) as second:  # indexes 1 and 2, by handshake order
            async with trio.open_nursery() as n:
                n.start_soon(one_reply, first)
                n.start_soon(one_reply, second)
        snaps = [s.snapshot() for s in mock.sessions.values()]

    long_ms, short_ms = len(audio_bytes(first.events)) / 8, len(audio_bytes(second.events)) / 8
    assert abs(long_ms - bank.get("assistant_long_reply").duration_ms) < 25
    assert abs(short_ms - bank.get("assistant_short_reply").duration_ms) < 25
    assert [s["index"] for s in snaps] == [1, 2]
    assert [(s["responses"][0]["reply"], s["responses"][0]["think_ms"]) for s in snaps] == \
        [("assistant_long_reply", 50.0), ("assistant_short_reply", 300.0)]


@pytest.mark.parametrize("body", [
    b"{not json", b'{"bogus": 1}', b'{"faults": ["explode"]}', b'{"think": "soon"}', b'{"replies": 5}',
    b"null", b"[1, 2]", b'{"rules": [{"reply": "assistant_short_reply"}]}', b'{"think": [1]}',
    b'{"replies": ["no_such_fixture"]}', b'{"rules": [{"when": "caller_stop", "reply": "nope"}]}',
])
async def test_invalid_behaviour_is_400_and_the_server_lives_on(body):
    async with running_mock(config()) as mock:
        async with httpx.AsyncClient(base_url=mock.http_url, timeout=5) as http:
            r = await http.post("/_mock/behaviour", content=body)
            assert r.status_code == 400, r.text
            assert isinstance(r.json()["error"], str) and r.json()["error"]
            r = await http.post("/_mock/behaviour?next_sessions=lots", json={})
            assert r.status_code == 400 and "next_sessions" in r.json()["error"]
            assert (await http.get("/_mock/health")).status_code == 200
        assert mock.config.behaviour == FAST and mock._next_behaviours == []
        async with connect(mock) as c:
            assert (await c.recv())["type"] == "session.created"


async def test_plain_get_on_the_realtime_path_is_426():
    async with running_mock(config()) as mock:
        r = await http_get(mock, "/v1/realtime?model=gpt-realtime")
        assert r.status_code == 426
        assert r.json()["error"]["message"] == "WebSocket upgrade required"
        assert mock.session_count == 0


# ====================================================================== 8. load


N_SESSIONS = 50


async def test_fifty_concurrent_sessions_each_get_a_complete_response():
    bank = default_bank()
    audio = bank.get("caller_stop").ulaw
    lateness: list[float] = []
    done: list[dict[str, Any]] = []
    behaviour = Behaviour(seed=50)  # defaults: think 300 ms, 5x real time, 100 ms deltas
    async with running_mock(config(behaviour=behaviour)) as mock:

        async def caller() -> None:
            async with connect(mock) as c:
                assert (await c.recv())["type"] == "session.created"
                await c.send(PCMU_VAD)
                await c.until("session.updated")
                async with trio.open_nursery() as n:
                    n.start_soon(lambda: _append_and_note(c))
                    done.append(await c.until("response.done", timeout=20))
                await c.until("rate_limits.updated", timeout=5)
                assert "error" not in c.types(), c.of("error")

        async def _append_and_note(c: Client) -> None:
            lateness.append(await stream_paced(c, audio, 1000))

        t0 = trio.current_time()
        cpu0 = time.process_time()
        with trio.fail_after(40):
            async with trio.open_nursery() as n:
                for _ in range(N_SESSIONS):
                    n.start_soon(caller)
        wall = trio.current_time() - t0
        cpu = time.process_time() - cpu0
        closed_ok = await mock.wait_all_closed(1.0)
        snaps = [s.snapshot() for s in mock.sessions.values()]

    assert closed_ok
    assert len(done) == N_SESSIONS
    assert all(d["response"]["status"] == "completed" for d in done)
    assert len(snaps) == N_SESSIONS and mock.session_count == N_SESSIONS
    assert all(s["invalid_sent"] == [] for s in snaps)
    assert all([r["status"] for r in s["responses"]] == ["completed"] for s in snaps)
    assert all(s["close"]["by"] == "client" for s in snaps)
    # Informative: clients and server share this process (and one core), so lateness here is
    # mostly this process being CPU-bound, not the mock alone.
    print(f"\n[50 sessions] wall {wall:.2f} s, CPU {cpu:.2f} s (clients + server, one process); append "
          f"schedule lateness max {max(lateness):.1f} ms, median of per-session max "
          f"{sorted(lateness)[len(lateness) // 2]:.1f} ms")
