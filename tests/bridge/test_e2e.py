"""Whole calls: fake Twilio caller → our bridge → mock OpenAI, over real loopback sockets.

The bridge is exercised only through the wire, like any bridge the harness
tests; the assertions use what the caller recorded (heard audio, timeline) and
what the mock recorded (truncates, responses, session close), on the shared
monotonic clock.
"""

from __future__ import annotations

import random
import socket as pysocket
from contextlib import asynccontextmanager
from functools import partial

import httpx
import trio
from callsim.bridge.app import BridgeApp
from callsim.bridge.server import hypercorn_config, running_bridge
from callsim.bridge.settings import Settings
from callsim.simulator.audio.codec import ulaw_to_pcm16
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.caller.script import (
    Hangup,
    Pause,
    Say,
    WaitForAudio,
    WaitForReply,
)
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.measure.metrics import heard_ms_between, snr_db
from callsim.simulator.measure.timeline import ClearIn, ClosedByApp, PlaybackStart, Stop, WaitTimeout
from callsim.simulator.mock.behaviour import Behaviour, Fault, Rule, ThinkTime, ToolCall
from callsim.simulator.mock.server import MockConfig, running_mock
from hypercorn.trio import serve

KEY = "sk-test-bridge"
CONSOLE_TOKEN = "console-token-for-tests"
AUTH = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}  # the history API is behind the console token
LONG = default_bank().get("assistant_long_reply")
SHORT = default_bank().get("assistant_short_reply")


@asynccontextmanager
async def stack(tmp_path, behaviour: Behaviour | None = None, **settings):
    cfg = MockConfig(api_key=KEY, behaviour=behaviour or Behaviour(think=ThinkTime("fixed", 200.0), seed=7))
    async with running_mock(cfg) as mock:
        settings.setdefault("console_token", CONSOLE_TOKEN)
        s = Settings(openai_api_key=KEY, openai_realtime_url=mock.realtime_url, port=0,
                     database_path=tmp_path / "bridge.sqlite3", **settings)
        async with running_bridge(s) as (app, base):
            yield mock, app, base


def _heard_ms_before_clear(core) -> float:
    """Assistant audio the caller played from the start of the barged-in reply to the clear."""
    clear_t = core.timeline.first(ClearIn).t_ns
    start = [e.tick for e in core.timeline.of(PlaybackStart) if e.t_ns < clear_t][-1]
    return heard_ms_between(core, start, clear_t)


async def test_two_turn_call_with_transcripts(tmp_path):
    async with stack(tmp_path) as (mock, app, base):
        script = [Pause(300), Say("caller_greeting"), WaitForReply(), Say("caller_weather_question"),
                  WaitForReply(), Hangup()]
        result = await place_call(base + "/incoming-call", script)
        assert await mock.wait_all_closed(1.0)
        assert await app.wait_idle(1.0)
        async with httpx.AsyncClient() as client:
            conv = (await client.get(f"{base}/api/conversations/{result.core.ident.call_sid}", headers=AUTH)).json()
            metrics = (await client.get(f"{base}/metrics")).text
    assert result.ok, result.error
    s = result.core.summary()
    assert s["warnings"] == {}
    assert abs(s["audio_played_ms"] - 2 * SHORT.duration_ms) < 60  # both replies, whole
    assert s["marks_echoed"].get("cleared", 0) == 0 and s["marks_echoed"]["played"] > 0
    (session,) = mock.sessions.values()
    snap = session.snapshot()
    assert [r["status"] for r in snap["responses"]] == ["completed", "completed"]
    assert [t["heard"] for t in snap["turns"]] == ["caller_greeting", "caller_weather_question"]
    assert snap["invalid_sent"] == [] and snap["errors"] == []
    texts = [(u["role"], u["text"]) for u in conv["utterances"]]
    assert ("caller", default_bank().get("caller_greeting").text) in texts
    assert ("caller", default_bank().get("caller_weather_question").text) in texts
    assert texts.count(("assistant", SHORT.text)) == 2
    assert "callsim_bridge_active_calls 0.0" in metrics


async def test_ai_speaks_first(tmp_path):
    async with stack(tmp_path, ai_greeting="Greet the caller warmly.") as (mock, app, base):
        result = await place_call(base + "/incoming-call", [WaitForReply(timeout_ms=8000), Hangup()])
    assert result.ok
    (session,) = mock.sessions.values()
    snap = session.snapshot()
    assert snap["responses"][0]["trigger"] == "client"
    assert abs(result.core.summary()["audio_played_ms"] - SHORT.duration_ms) < 60
    assert not result.core.timeline.of(WaitTimeout)


async def test_barge_in_at_random_moments_truncates_what_was_heard(tmp_path):
    """Zero rejected truncates; |audio_end_ms − heard| ≤ 20 ms for every moment."""
    rng = random.Random(2024)
    moments = [rng.uniform(lo, lo + 1150) for lo in range(100, 9300, 1150)]  # one in each 1.15 s stratum
    behaviour = Behaviour(replies=("assistant_long_reply",), think=ThinkTime("fixed", 200.0), seed=5)
    results: dict[float, object] = {}
    async with stack(tmp_path, behaviour) as (mock, app, base):

        async def one(ms: float) -> None:
            script = [Pause(300), Say("caller_weather_question"), WaitForAudio(after_ms=int(ms)),
                      Say("caller_barge_in"), WaitForReply(), Hangup()]
            results[ms] = await place_call(base + "/incoming-call", script)

        for batch in (moments[0::2], moments[1::2]):  # four calls at a time
            async with trio.open_nursery() as n:
                for ms in batch:
                    n.start_soon(one, ms)
        sessions = {s.snapshot()["id"]: s.snapshot() for s in mock.sessions.values()}
    truncates = [t for s in sessions.values() for t in s["truncates"]]
    assert len(truncates) == len(moments)
    assert all(t["accepted"] for t in truncates), truncates
    pairs = []
    for r in results.values():  # pair each call's clear with its truncate on the shared clock
        clear_t = r.core.timeline.first(ClearIn).t_ns
        t = min(truncates, key=lambda t: abs(t["t_ns"] - clear_t))
        assert abs(t["t_ns"] - clear_t) < 50e6
        pairs.append((t["audio_end_ms"], _heard_ms_before_clear(r.core)))
    print("barge-in truncate audio_end_ms vs heard ms:", sorted(pairs))
    assert max(abs(a - h) for a, h in pairs) <= 20, sorted(pairs)
    assert len({a for a, _ in pairs}) == len(pairs)  # eight different moments really
    for s in sessions.values():
        # a barge-in during generation cancels the reply; after it, there is nothing to cancel
        assert [r["status"] for r in s["responses"]][0] in ("cancelled", "completed")
        assert s["responses"][1]["status"] == "completed"
    # generation of the 11 s reply takes ~2.2 s at 5x: a barge-in before that cancels it
    early = [s for s in sessions.values() if s["truncates"][0]["audio_end_ms"] < 1500]
    assert early and all(s["responses"][0]["status"] == "cancelled" for s in early)
    late = [s for s in sessions.values() if s["truncates"][0]["audio_end_ms"] > 4000]
    assert late and all(s["responses"][0]["status"] == "completed" for s in late)


async def test_tool_call_round_trip(tmp_path):
    behaviour = Behaviour(rules=(Rule("caller_weather_question",
                                      tool=ToolCall("get_weather", {"city": "Paris"}, "assistant_long_reply")),),
                          think=ThinkTime("fixed", 100.0), seed=1)
    async with stack(tmp_path, behaviour) as (mock, app, base):
        script = [Pause(300), Say("caller_weather_question"), WaitForReply(timeout_ms=20000), Hangup()]
        result = await place_call(base + "/incoming-call", script)
        (session,) = mock.sessions.values()
        outputs = [i for i in session.items.values() if i.type == "function_call_output"]
        metrics = app.metrics.render()[0].decode()
    assert len(outputs) == 1 and "Paris" in outputs[0].output and "error" not in outputs[0].output
    snap = session.snapshot()
    assert [r["reply"] for r in snap["responses"]] == ["tool:get_weather", "assistant_long_reply"]
    assert abs(result.core.summary()["audio_played_ms"] - LONG.duration_ms) < 60
    assert 'callsim_bridge_tool_calls_total{outcome="ok",tool="get_weather"} 1.0' in metrics


async def test_transcode_mode_echo_snr(tmp_path):
    """μ-law → pcm16 24 kHz → mock echo → μ-law: the caller hears itself at ≥ 30 dB SNR."""
    behaviour = Behaviour(echo=True, think=ThinkTime("fixed", 100.0), seed=2)
    async with stack(tmp_path, behaviour, audio_mode="transcode") as (mock, app, base):
        script = [Pause(300), Say("caller_weather_question"), WaitForReply(timeout_ms=15000), Hangup()]
        result = await place_call(base + "/incoming-call", script)
        (session,) = mock.sessions.values()
        fmt = session.config.input_format.kind
    assert fmt == "pcm16"
    utt = default_bank().get("caller_weather_question")
    start, end = utt.speech_segments_ms[0][0], utt.speech_segments_ms[-1][1]
    sent = ulaw_to_pcm16(utt.ulaw)[int(start * 8): int(end * 8)]
    heard = ulaw_to_pcm16(bytes(result.core.heard))
    snr = snr_db(sent, heard)
    assert snr >= 30, snr


async def test_signatures_are_checked_on_both_endpoints(tmp_path):
    token = "twilio-auth-token-for-tests"
    async with stack(tmp_path, twilio_auth_token=token) as (mock, app, base):
        good = await place_call(base + "/incoming-call", [Pause(200), Hangup()], auth_token=token)
        bad_webhook = await place_call(base + "/incoming-call", [Pause(200), Hangup()], auth_token="wrong")
        ws = base.replace("http://", "ws://") + "/media-stream"
        bad_upgrade = await place_call(ws, [Pause(200), Hangup()], auth_token="wrong")
        no_call_token = await place_call(ws, [Pause(2000), Hangup()], auth_token=token)
        metrics = app.metrics.render()[0].decode()
    assert good.ok, good.error
    assert "HTTP 403" in bad_webhook.error
    assert "HTTP 403" in bad_upgrade.error
    # signed upgrade but no per-call token from our TwiML: accepted, then closed with 1008
    closed = no_call_token.core.timeline.of(ClosedByApp)
    assert closed and closed[0].code == 1008
    assert len(mock.sessions) == 1  # only the good call reached OpenAI
    for kind in ("webhook_signature", "stream_signature", "call_token"):
        assert f'callsim_bridge_errors_total{{kind="{kind}"}} 1.0' in metrics


async def _apology_call(tmp_path, fault: str):
    behaviour = Behaviour(faults=(Fault.parse(fault),), think=ThinkTime("fixed", 100.0), seed=3)
    async with stack(tmp_path, behaviour) as (mock, app, base):
        script = [Pause(300), Say("caller_weather_question"), WaitForReply(timeout_ms=15000), Pause(20000), Hangup()]
        with trio.fail_after(30):
            result = await place_call(base + "/incoming-call", script)
    return result


async def test_openai_refusing_gives_an_apology_not_dead_air(tmp_path):
    result = await _apology_call(tmp_path, "refuse:status=500")
    s = result.core.summary()
    assert result.core.end_reason == "closed_by_app"
    apology_ms = len((__import__("callsim.bridge.app", fromlist=["APOLOGY"]).APOLOGY)) / 8
    assert abs(s["audio_played_ms"] - apology_ms) < 40
    assert s["duration_ms"] < apology_ms + 8000  # hung up soon after, not left open


async def test_openai_dropping_mid_reply_gives_an_apology(tmp_path):
    result = await _apology_call(tmp_path, "drop:after_ms=300")
    tl = result.core.timeline
    assert result.core.end_reason == "closed_by_app"
    assert tl.of(ClearIn)  # the cut-off reply is cleared first
    assert result.core.summary()["audio_played_ms"] > 4000  # then the apology plays


async def test_caller_hanging_up_mid_reply_closes_openai_within_1s(tmp_path):
    behaviour = Behaviour(replies=("assistant_long_reply",), think=ThinkTime("fixed", 100.0), seed=4)
    async with stack(tmp_path, behaviour) as (mock, app, base):
        script = [Pause(300), Say("caller_stop"), WaitForAudio(after_ms=1500), Hangup()]
        result = await place_call(base + "/incoming-call", script)
        assert await mock.wait_all_closed(2.0)
        (session,) = mock.sessions.values()
        snap = session.snapshot()
    stop_t = result.core.timeline.first(Stop).t_ns
    assert snap["close"]["by"] == "client"
    assert 0 <= (snap["close"]["t_ns"] - stop_t) / 1e6 < 1000
    assert snap["responses"][-1]["status"] == "incomplete"  # closed while the reply was streaming


async def test_busy_line_beyond_max_concurrent_calls(tmp_path):
    """Beyond MAX_CONCURRENT_CALLS the webhook answers TwiML saying the line is busy."""
    behaviour = Behaviour(replies=("assistant_long_reply",), think=ThinkTime("fixed", 100.0), seed=6)
    async with stack(tmp_path, behaviour, max_concurrent_calls=1) as (mock, app, base):
        first: dict = {}

        async def long_call() -> None:
            first["r"] = await place_call(base + "/incoming-call",
                                          [Pause(300), Say("caller_stop"), WaitForReply(), Hangup()])

        async with trio.open_nursery() as n:
            n.start_soon(long_call)
            while not app.calls:  # wait until the first call holds the only line
                await trio.sleep(0.01)
            second = await place_call(base + "/incoming-call", [Pause(200), Hangup()])
        metrics = app.metrics.render()[0].decode()
    assert first["r"].ok
    assert not second.ok and "no stream" in second.error and "busy" in second.error
    assert "callsim_bridge_busy_total 1.0" in metrics


async def test_twenty_concurrent_calls(tmp_path):
    results = []
    async with stack(tmp_path) as (mock, app, base):

        async def one(i: int) -> None:
            script = [Pause(200 + 37 * i), Say("caller_stop"), WaitForReply(), Hangup()]
            results.append(await place_call(base + "/incoming-call", script))

        async with trio.open_nursery() as n:
            for i in range(20):
                n.start_soon(one, i)
        assert await mock.wait_all_closed(1.0)
        assert await app.wait_idle(1.0)
        snaps = [s.snapshot() for s in mock.sessions.values()]
        active = len(app.calls)
    assert len(results) == 20 and all(r.ok for r in results)
    wrong = [(r.core.summary()["audio_played_ms"], sorted({e.kind for e in r.core.timeline}))
             for r in results if abs(r.core.summary()["audio_played_ms"] - SHORT.duration_ms) >= 60]
    assert not wrong, f"expected {SHORT.duration_ms} ms heard per call; got (ms, events): {wrong}"
    assert all(s["responses"] and s["responses"][0]["status"] == "completed" for s in snaps)
    assert active == 0


async def test_the_asgi_app_carries_a_call_under_plain_hypercorn(tmp_path):
    """BridgeApp stays a complete ASGI app (for any ASGI server); ``callsim bridge``
    serves the media stream off that path (frontdoor), so this keeps the ASGI one honest."""
    cfg = MockConfig(api_key=KEY, behaviour=Behaviour(think=ThinkTime("fixed", 200.0), seed=7))
    async with running_mock(cfg) as mock:
        sock = pysocket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        s = Settings(openai_api_key=KEY, openai_realtime_url=mock.realtime_url, port=port,
                     database_path=tmp_path / "bridge.sqlite3")
        app = BridgeApp(s)
        hc = hypercorn_config(s, port=port)
        # hand the fd over: hypercorn wraps it in its own socket object and closes it; ours must
        # not close that number again when collected (by then another test's socket may own it)
        hc.bind = [f"fd://{sock.detach()}"]
        async with trio.open_nursery() as n:
            await n.start(partial(serve, app, hc))
            result = await place_call(f"http://127.0.0.1:{port}/incoming-call",
                                      [Pause(300), Say("caller_stop"), WaitForReply(), Hangup()])
            assert await mock.wait_all_closed(1.0)
            assert await app.wait_idle(1.0)
            n.cancel_scope.cancel()
    assert result.ok, result.error
    assert abs(result.core.summary()["audio_played_ms"] - SHORT.duration_ms) < 60
    (session,) = mock.sessions.values()
    assert [r["status"] for r in session.snapshot()["responses"]] == ["completed"]
