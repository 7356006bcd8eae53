"""<Dial> and <Play> on the emulator's call legs, over loopback: the caller's stream hears the
dialled party; the records are Twilio's (outbound-dial child with ParentCallSid, the dialled
number's own inbound call); no answer within the timeout; the action URL."""

from __future__ import annotations

import io
import time
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import numpy as np
import soundfile as sf
import trio
from callsim.simulator.twilio_emu.numbers import PhoneNumber
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_emulator
from callsim.simulator.twilio_emu.tunnels import Tunnels, parse_tunnel
from twilio.rest import Client
from trio_websocket import serve_websocket

from tests.asgi_kit import read_body, serve_lifespan
from .test_legs_e2e import AGENT, DIAL_PUBLIC, SID, TESTER, TOKEN, LegServer, dial_twiml, until_ended, webhook

DESK = "+15550009999"


class Router:
    """A voice webhook answering TwiML by path (bytes for audio), recording (time, path, form)."""

    def __init__(self, routes: dict[str, str | tuple[str, bytes]]) -> None:
        self.routes = routes
        self.hits: list[tuple[float, str, dict[str, str]]] = []

    async def __call__(self, scope, receive, send):
        if await serve_lifespan(scope, receive, send):
            return
        body = await read_body(receive)
        self.hits.append((trio.current_time(), scope["path"], dict(parse_qsl(body.decode()))))
        route = self.routes.get(scope["path"])
        if route is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        kind, content = ("text/xml", route.encode()) if isinstance(route, str) else (route[0], route[1])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind.encode())]})
        await send({"type": "http.response.body", "body": content})

    def forms(self, path: str) -> list[dict[str, str]]:
        return [f for _, p, f in self.hits if p == path]


@asynccontextmanager
async def run_call(router: Router, numbers: dict[str, str], *, record: bool = False, limit_s: float = 20,
                   during=None):
    """Place a call from the dial leg to AGENT; answer (leg server, client, core, caller SID) once it ended."""
    leg = LegServer()
    async with trio.open_nursery() as nursery, webhook(router) as base:
        server = await nursery.start(serve_websocket, leg.handler, "127.0.0.1", 0, None)
        tunnels = Tunnels([parse_tunnel(f"{DIAL_PUBLIC}=ws://127.0.0.1:{server.port}")])
        emu = RestCore(SID, TOKEN, clock=time.time,
                       numbers=[PhoneNumber(n, f"{base}{path}") for n, path in numbers.items()])
        async with serve_emulator(emu, tunnels=tunnels) as url:
            client = Client(SID, TOKEN)
            client.api.base_url = url
            kw = {"record": True, "recording_channels": "dual"} if record else {}
            call = await trio.to_thread.run_sync(lambda: client.calls.create(to=AGENT, from_=TESTER,
                                                                             twiml=dial_twiml(), **kw))
            with trio.fail_after(limit_s):
                if during is not None:
                    await during(client)
                await leg.closed.wait()
            await until_ended(client, call.sid)
            calls = await trio.to_thread.run_sync(lambda: client.calls.list())
            yield leg, client, emu, call.sid, calls
        nursery.cancel_scope.cancel()


def said_between(leg: LegServer, t0: float, t1: float) -> float:
    """Voiced ms the caller's stream heard between two trio times."""
    from callsim.simulator.audio.codec import FRAME_BYTES, is_silent
    media = [(t, n) for t, k, n in leg.events if k == "media"]
    start = max([n for t, n in media if t <= t0] or [0])
    end = max([n for t, n in media if t <= t1] or [0])
    frames = [bytes(leg.heard[i:i + FRAME_BYTES]) for i in range(start, end - FRAME_BYTES + 1, FRAME_BYTES)]
    return 20.0 * sum(1 for f in frames if not is_silent(f))


async def test_a_dial_to_a_configured_number_bridges_its_inbound_call_to_the_caller():
    router = Router({
        "/agent": f"<Response><Say>Transferring you now.</Say><Dial><Number>{DESK}</Number></Dial></Response>",
        "/desk": "<Response><Pause length='0.5'/><Say>You have reached the front desk.</Say><Hangup/></Response>",
    })
    async with run_call(router, {AGENT: "/agent", DESK: "/desk"}) as (leg, client, emu, a_sid, calls):
        by_dir = {}
        for c in calls:
            by_dir.setdefault(c.direction, []).append(c)
        (b,) = [c for c in by_dir["inbound"] if c.to == AGENT]
        (child,) = by_dir["outbound-dial"]
        (desk,) = [c for c in by_dir["inbound"] if c.to == DESK]
        # Twilio's records: the child leg of the agent's call, and the front desk's own inbound call
        assert (child.parent_call_sid, child._from, child.to) == (b.sid, TESTER, DESK)
        assert (desk._from, desk.to, desk.parent_call_sid) == (TESTER, DESK, None)
        assert {c.status for c in calls} == {"completed"} and len(calls) == 4
        assert int(child.duration) >= 1
        (desk_form,) = router.forms("/desk")
        assert (desk_form["CallSid"], desk_form["Direction"], desk_form["From"]) == (desk.sid, "inbound", TESTER)
        # the caller heard the Say of the agent's number, then the front desk, then the stream stopped
        desk_hit = next(t for t, p, _ in router.hits if p == "/desk")
        assert said_between(leg, 0, desk_hit) > 800  # "Transferring you now."
        assert said_between(leg, desk_hit, desk_hit + 0.45) == 0  # the desk's pause
        assert said_between(leg, desk_hit + 0.5, trio.current_time()) > 1000  # "You have reached the front desk."
        assert leg.kinds()[-2:] == ["stop", "closed"]


async def test_an_unknown_number_rings_out_after_the_timeout_and_the_action_gets_no_answer():
    router = Router({
        "/agent": '<Response><Dial timeout="2" action="/after"><Number>+15550004444</Number></Dial>'
                  '<Say>never said</Say></Response>',
        "/after": "<Response><Say>Nobody answered.</Say></Response>",
    })
    async with run_call(router, {AGENT: "/agent"}) as (leg, client, emu, a_sid, calls):
        (child,) = [c for c in calls if c.direction == "outbound-dial"]
        assert child.status == "no-answer" and child.duration is None
        (agent_hit,) = [t for t, p, _ in router.hits if p == "/agent"]
        (after_t, after) = [(t, f) for t, p, f in router.hits if p == "/after"][0]
        assert 2.0 <= after_t - agent_hit < 3.0  # the timeout, honoured in time
        assert (after["DialCallStatus"], after["DialCallSid"]) == ("no-answer", child.sid)
        assert said_between(leg, after_t, trio.current_time()) > 500
        assert [c.status for c in calls if c.direction != "outbound-dial"] == ["completed", "completed"]


async def test_without_action_the_next_verb_runs_and_a_busy_number_ends_the_dial_at_once():
    router = Router({
        "/agent": f"<Response><Dial timeout='10'>{DESK}</Dial><Say>The desk is busy.</Say></Response>",
        "/desk": '<Response><Reject reason="busy"/></Response>',
    })
    async with run_call(router, {AGENT: "/agent", DESK: "/desk"}) as (leg, client, emu, a_sid, calls):
        statuses = sorted((c.direction, c.to, c.status) for c in calls)
        assert statuses == [("inbound", AGENT, "completed"), ("inbound", DESK, "busy"),
                            ("outbound-api", AGENT, "completed"), ("outbound-dial", DESK, "busy")]
        (agent_hit,) = [t for t, p, _ in router.hits if p == "/agent"]
        assert said_between(leg, agent_hit, trio.current_time()) > 500
        assert trio.current_time() - agent_hit < 8  # not the 10 s timeout


def wav_tone(rate: int, seconds: float) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    out = io.BytesIO()
    sf.write(out, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


async def test_play_fetches_a_wav_at_any_rate_and_plays_it_loop_times():
    router = Router({"/agent": "<Response><Play loop='2'>/tone.wav</Play></Response>",
                     "/tone.wav": ("audio/wav", wav_tone(22050, 0.6))})
    async with run_call(router, {AGENT: "/agent"}) as (leg, client, emu, a_sid, calls):
        voiced = said_between(leg, 0, trio.current_time())
        assert 1100 <= voiced <= 1300, voiced  # 2 × 0.6 s
        assert [p for _, p, _ in router.hits] == ["/agent", "/tone.wav"]


async def test_a_rest_hang_up_of_the_dialled_number_ends_the_dial_and_the_next_verb_runs():
    router = Router({
        "/agent": f"<Response><Dial>{DESK}</Dial><Say>Welcome back.</Say></Response>",
        "/desk": "<Response><Pause length='30'/></Response>",
    })
    hung_up_at = []

    async def hang_up_the_desk(client):
        while True:
            calls = await trio.to_thread.run_sync(lambda: client.calls.list(to=DESK, status="in-progress"))
            desk = [c for c in calls if c.direction == "inbound"]
            if desk:
                break
            await trio.sleep(0.05)
        await trio.sleep(0.5)
        await trio.to_thread.run_sync(lambda: client.calls(desk[0].sid).update(status="completed"))
        hung_up_at.append(trio.current_time())

    async with run_call(router, {AGENT: "/agent", DESK: "/desk"}, during=hang_up_the_desk) as (leg, client, emu,
                                                                                             a_sid, calls):
        assert {c.status for c in calls} == {"completed"} and len(calls) == 4
        assert said_between(leg, hung_up_at[0], trio.current_time()) > 500  # "Welcome back."
        assert trio.current_time() - hung_up_at[0] < 10  # not the desk's 30 s pause
