"""Both legs of a call through the emulator, over real loopback sockets.

The called number is OUR bridge (in-process, with the mock OpenAI behind it), reached through
a tunnel so that the bridge validates Twilio's signatures on its public URL; the caller leg's
``<Connect><Stream>`` goes to a small stream server in this file that says an utterance and
records what it hears.
"""

from __future__ import annotations

import base64
import time
from contextlib import asynccontextmanager

import orjson
import trio
from callsim.bridge.server import running_bridge
from callsim.bridge.settings import Settings
from callsim.simulator.audio.codec import FRAME_BYTES, is_silent
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.mock.behaviour import Behaviour, Fault, ThinkTime
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.twilio_emu.numbers import PhoneNumber
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_emulator
from callsim.simulator.twilio_emu.tunnels import Tunnels, parse_tunnel
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from trio_websocket import ConnectionClosed, serve_websocket
from tests.asgi_kit import read_body, serve_app, serve_lifespan

SID = "AC" + "5a" * 16
TOKEN = "legs-token"
KEY = "sk-test-legs"
AGENT = "+15550001111"
TESTER = "+15550002222"
BRIDGE_PUBLIC = "https://bridge.example"
DIAL_PUBLIC = "wss://dial.example"
GREETING = default_bank().get("caller_greeting")
REPLY = default_bank().get("assistant_short_reply")
REPLY_SPEECH_MS = sum(end - start for start, end in REPLY.speech_segments_ms)



class LegServer:
    """The caller leg's stream server: says ``utterance`` + a mark, records what it hears."""

    def __init__(self, utterance: bytes | None = None) -> None:
        self.utterance = utterance
        self.signature: str | None = None
        self.start: dict | None = None
        self.heard = bytearray()
        self.events: list[tuple[float, str, object]] = []  # (time, event, detail)
        self.sent_at: float | None = None
        self.echoed = trio.Event()
        self.closed = trio.Event()
        self.close_now = trio.Event()

    def kinds(self) -> list[str]:
        return [k for _, k, _ in self.events if k != "media"]

    async def handler(self, request) -> None:
        self.signature = dict((k.decode().lower(), v.decode()) for k, v in request.headers).get("x-twilio-signature")
        ws = await request.accept()
        async with trio.open_nursery() as n:
            n.start_soon(self._closer, ws)
            try:
                await self._receive(ws)
            except ConnectionClosed:
                self.events.append((trio.current_time(), "closed", None))
                self.closed.set()
            n.cancel_scope.cancel()

    async def _receive(self, ws) -> None:
        while True:
            msg = orjson.loads(await ws.get_message())
            kind = msg["event"]
            if kind == "media":
                self.heard += base64.b64decode(msg["media"]["payload"])
                self.events.append((trio.current_time(), kind, len(self.heard)))
                continue
            self.events.append((trio.current_time(), kind, msg))
            if kind == "start":
                self.start = msg["start"]
                if self.utterance:
                    await self._say(ws, msg["streamSid"])
            elif kind == "mark":
                self.echoed.set()

    async def _say(self, ws, stream_sid: str) -> None:
        audio = self.utterance or b""
        for i in range(0, len(audio), 8000):  # a second at a time: Twilio queues it
            payload = base64.b64encode(audio[i:i + 8000]).decode()
            await ws.send_message(orjson.dumps({"event": "media", "streamSid": stream_sid,
                                                "media": {"payload": payload}}).decode())
        await ws.send_message(orjson.dumps({"event": "mark", "streamSid": stream_sid,
                                            "mark": {"name": "said"}}).decode())
        self.sent_at = trio.current_time()

    async def _closer(self, ws) -> None:
        await self.close_now.wait()
        await ws.aclose()

    def speech_ms_after(self, at_bytes: int) -> float:
        """Non-silent audio heard after the first ``at_bytes``, in ms."""
        frames = [self.heard[i:i + FRAME_BYTES] for i in range(at_bytes, len(self.heard) - FRAME_BYTES + 1, FRAME_BYTES)]
        return 20.0 * sum(1 for f in frames if not is_silent(bytes(f)))

    def heard_bytes_at(self, kind: str) -> int:
        """How much audio had been heard when the first ``kind`` event came."""
        t = next(t for t, k, _ in self.events if k == kind)
        return max([d for tt, k, d in self.events if k == "media" and tt <= t] or [0])


@asynccontextmanager
async def call_stack(tmp_path, leg: LegServer, behaviour: Behaviour | None = None, **settings):
    cfg = MockConfig(api_key=KEY, behaviour=behaviour or Behaviour(think=ThinkTime("fixed", 200.0), seed=3))
    async with running_mock(cfg) as mock, trio.open_nursery() as nursery:
        s = Settings(_env_file=None, openai_api_key=KEY, openai_realtime_url=mock.realtime_url, port=0,
                     database_path=tmp_path / "bridge.sqlite3", twilio_auth_token=TOKEN, public_url=BRIDGE_PUBLIC,
                     **settings)
        async with running_bridge(s) as (app, base):
            server = await nursery.start(serve_websocket, leg.handler, "127.0.0.1", 0, None)
            dial_port = server.port
            tunnels = Tunnels([parse_tunnel(f"{BRIDGE_PUBLIC}={base}"),
                               parse_tunnel(f"{DIAL_PUBLIC}=ws://127.0.0.1:{dial_port}")])
            emu = RestCore(SID, TOKEN, clock=time.time, numbers=[PhoneNumber(AGENT, f"{BRIDGE_PUBLIC}/incoming-call")])
            async with serve_emulator(emu, tunnels=tunnels) as url:
                client = Client(SID, TOKEN)
                client.api.base_url = url
                yield client, emu, app, mock
            nursery.cancel_scope.cancel()


def dial_twiml() -> str:
    return (f'<Response><Connect><Stream url="{DIAL_PUBLIC}/stream">'
            '<Parameter name="who" value="tester"/></Stream></Connect></Response>')


async def create(client: Client) -> tuple[str, str]:
    """Place the call; answer (caller SID, inbound SID) once both are in progress."""
    call = await trio.to_thread.run_sync(lambda: client.calls.create(to=AGENT, from_=TESTER, twiml=dial_twiml()))
    with trio.fail_after(10):
        while True:
            calls = await trio.to_thread.run_sync(lambda: client.calls.list(to=AGENT))
            inbound = [c for c in calls if c.direction == "inbound"]
            if inbound and inbound[0].status == "in-progress":
                return call.sid, inbound[0].sid
            await trio.sleep(0.05)


async def statuses(client: Client, *sids: str) -> list[str]:
    return [(await trio.to_thread.run_sync(lambda s=s: client.calls(s).fetch())).status for s in sids]


async def until_ended(client: Client, *sids: str) -> list[str]:
    with trio.fail_after(10):
        while True:
            got = await statuses(client, *sids)
            if all(s in ("completed", "canceled", "failed", "busy", "no-answer") for s in got):
                return got
            await trio.sleep(0.05)


async def test_two_legs_carry_audio_both_ways_and_a_rest_hang_up_ends_both(tmp_path):
    leg = LegServer(GREETING.ulaw)
    async with call_stack(tmp_path, leg) as (client, emu, app, mock):
        a_sid, b_sid = await create(client)
        inbound = await trio.to_thread.run_sync(lambda: client.calls(b_sid).fetch())
        with trio.fail_after(15):
            await leg.echoed.wait()
            echo_at = trio.current_time()
            while leg.speech_ms_after(leg.heard_bytes_at("mark")) < REPLY_SPEECH_MS * 0.5:
                await trio.sleep(0.1)
        await trio.sleep(REPLY.duration_ms / 1000)  # the rest of the reply
        await trio.to_thread.run_sync(lambda: client.calls(b_sid).update(status="completed"))
        with trio.fail_after(5):
            await leg.closed.wait()
        ended = await until_ended(client, a_sid, b_sid)
        assert await app.wait_idle(2.0)
        (session,) = mock.sessions.values()
        snap = session.snapshot()
    assert RequestValidator(TOKEN).validate(f"{DIAL_PUBLIC}/stream", {}, leg.signature)
    assert leg.start["callSid"] == a_sid and leg.start["customParameters"] == {"who": "tester"}
    assert leg.start["tracks"] == ["inbound"]
    assert leg.start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert (inbound.direction, inbound._from, inbound.to) == ("inbound", TESTER, AGENT)
    # the mark is echoed once the utterance has played into the call, not when it was sent
    assert echo_at - leg.sent_at >= GREETING.duration_ms / 1000 - 0.1
    # the bridge (its signature checks on) heard the utterance and its reply came back whole
    assert [t["heard"] for t in snap["turns"]] == ["caller_greeting"]
    heard_reply_ms = leg.speech_ms_after(leg.heard_bytes_at("mark"))
    assert REPLY_SPEECH_MS * 0.9 <= heard_reply_ms <= REPLY_SPEECH_MS + 100, heard_reply_ms
    assert leg.kinds()[-2:] == ["stop", "closed"]
    assert ended == ["completed", "completed"]
    # media every 20 ms on one grid: chunk and timestamp advance together
    media_times = [t for t, k, _ in leg.events if k == "media"]
    assert len(leg.heard) == FRAME_BYTES * len(media_times)
    span = media_times[-1] - media_times[0]
    assert abs(span - 0.02 * (len(media_times) - 1)) < 0.25, span


async def test_a_redirect_of_the_inbound_leg_stops_the_bridge_and_says_to_the_caller(tmp_path):
    leg = LegServer()
    async with call_stack(tmp_path, leg) as (client, emu, app, mock):
        a_sid, b_sid = await create(client)
        with trio.fail_after(5):
            while not app.calls:
                await trio.sleep(0.02)
        await trio.sleep(0.5)
        before = len(leg.heard)
        await trio.to_thread.run_sync(lambda: client.calls(b_sid).update(
            twiml="<Response><Say>Please hold while I transfer your call.</Say><Hangup/></Response>"))
        with trio.fail_after(5):
            while app.calls:  # the bridge's stream got stop and was closed
                await trio.sleep(0.02)
        mid = await statuses(client, a_sid, b_sid)
        with trio.fail_after(15):
            await leg.closed.wait()
        ended = await until_ended(client, a_sid, b_sid)
    assert mid == ["in-progress", "in-progress"]  # the caller stayed on the line
    assert leg.speech_ms_after(before) > 1000  # the Say audio
    assert leg.kinds()[-2:] == ["stop", "closed"]
    assert ended == ["completed", "completed"]


async def test_the_bridge_closing_its_stream_with_no_twiml_left_ends_the_call(tmp_path, caplog):
    import logging
    caplog.set_level(logging.INFO, logger="callsim.twilio_emu")
    leg = LegServer()
    # OpenAI ends the session and the bridge, told not to renew it, apologises and closes the stream
    behaviour = Behaviour(think=ThinkTime("fixed", 200.0), seed=3, faults=(Fault("expire", after_ms=800),))
    async with call_stack(tmp_path, leg, behaviour, openai_renew_before_s=0) as (client, emu, app, mock):
        a_sid, b_sid = await create(client)
        with trio.fail_after(10):
            await leg.closed.wait()
        ended = await until_ended(client, a_sid, b_sid)
    logged = [r.getMessage() for r in caplog.records]
    assert any(b_sid in m and "closed by the server" in m for m in logged)  # the bridge closed it
    assert any(b_sid in m and "no TwiML left" in m for m in logged)
    assert leg.kinds()[-2:] == ["stop", "closed"]
    assert ended == ["completed", "completed"]


class TwimlApp:
    """A voice webhook answering fixed TwiML, recording the forms it got."""

    def __init__(self, twiml: str) -> None:
        self.twiml = twiml.encode()
        self.forms: list[dict[str, str]] = []

    async def __call__(self, scope, receive, send):
        if await serve_lifespan(scope, receive, send):
            return
        body = await read_body(receive)
        from urllib.parse import parse_qsl
        self.forms.append(dict(parse_qsl(body.decode())))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/xml")]})
        await send({"type": "http.response.body", "body": self.twiml})


def webhook(app: TwimlApp):
    """The voice webhook served on loopback: an async context manager yielding its base URL."""
    return serve_app(app)


async def test_a_first_reject_leaves_both_calls_unanswered_busy():
    hook = TwimlApp('<Response><Reject reason="busy"/></Response>')
    async with webhook(hook) as base:
        emu = RestCore(SID, TOKEN, clock=time.time, numbers=[PhoneNumber(AGENT, f"{base}/voice")])
        async with serve_emulator(emu) as url:
            client = Client(SID, TOKEN)
            client.api.base_url = url
            call = await trio.to_thread.run_sync(lambda: client.calls.create(to=AGENT, from_=TESTER,
                                                                             twiml=dial_twiml()))
            ended = await until_ended(client, call.sid)
            (inbound,) = [c for c in emu.store.calls.values() if c.direction == "inbound"]
    assert ended == ["busy"] and inbound.status == "busy"
    assert hook.forms[0]["CallSid"] == inbound.sid and hook.forms[0]["CallStatus"] == "ringing"


async def test_a_say_on_the_called_leg_is_heard_by_the_caller_then_the_call_ends(tmp_path):
    hook = TwimlApp("<Response><Pause length='0.3'/><Say>Hello from the emulator.</Say></Response>")
    leg = LegServer()
    async with trio.open_nursery() as nursery, webhook(hook) as base:
        server = await nursery.start(serve_websocket, leg.handler, "127.0.0.1", 0, None)
        tunnels = Tunnels([parse_tunnel(f"{DIAL_PUBLIC}=ws://127.0.0.1:{server.port}")])
        emu = RestCore(SID, TOKEN, clock=time.time, numbers=[PhoneNumber(AGENT, f"{base}/voice")])
        async with serve_emulator(emu, tunnels=tunnels) as url:
            client = Client(SID, TOKEN)
            client.api.base_url = url
            call = await trio.to_thread.run_sync(lambda: client.calls.create(to=AGENT, from_=TESTER,
                                                                             twiml=dial_twiml()))
            with trio.fail_after(15):
                await leg.closed.wait()
            ended = await until_ended(client, call.sid)
        nursery.cancel_scope.cancel()
    assert leg.speech_ms_after(0) > 500
    assert leg.speech_ms_after(0) < len(leg.heard) / 8 - 250  # the pause came first, in silence
    assert leg.kinds()[-2:] == ["stop", "closed"] and ended == ["completed"]


async def test_a_number_the_emulator_does_not_have_fails_at_once(caplog):
    import logging
    caplog.set_level(logging.WARNING, logger="callsim.twilio_emu")
    emu = RestCore(SID, TOKEN, clock=time.time, numbers=[PhoneNumber(AGENT, "http://127.0.0.1:9/voice")])
    async with serve_emulator(emu) as url:
        client = Client(SID, TOKEN)
        client.api.base_url = url
        call = await trio.to_thread.run_sync(lambda: client.calls.create(to="+15559999999", from_=TESTER,
                                                                         twiml=dial_twiml()))
        assert await until_ended(client, call.sid) == ["failed"]
    assert any(call.sid in r.getMessage() and "+15559999999" in r.getMessage() and AGENT in r.getMessage()
               for r in caplog.records)
