"""The console's HTTP surface as a script or a browser uses it: off without a token, 401 without
the right one, the live feed during a real call (fake caller -> bridge -> mock OpenAI), history
search, and session settings that apply to the next call, not the running one, and survive a restart."""

from __future__ import annotations

import logging
from functools import partial

import httpx
import orjson
import trio
from callsim.bridge.app import BridgeApp
from callsim.bridge.console_auth import COOKIE
from callsim.bridge.settings import Settings
from callsim.simulator.caller.script import Hangup, Pause, Say, WaitForAudio, WaitForReply
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.caller.webhook import CallParties
from callsim.simulator.mock.behaviour import Behaviour, Rule, ThinkTime, ToolCall

from tests.bridge.test_e2e import AUTH, CONSOLE_TOKEN, stack

GUARDED = ["/console", "/api/calls", "/api/feed", "/api/feed/CA00", "/api/conversations",
           "/api/conversations/CA00", "/api/settings", "/tools", "/api/calls/CA00/events"]
TOOL = Behaviour(rules=(Rule("caller_weather_question", tool=ToolCall("get_weather", {"city": "Paris"})),),
                 think=ThinkTime("fixed", 100.0), seed=3)
FROM = "+15550001234"


async def test_off_without_a_token_and_says_how_to_turn_it_on(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    async with stack(tmp_path, console_token=None) as (_mock, _app, base):
        async with httpx.AsyncClient() as c:
            for path in [*GUARDED, "/"]:
                r = await c.get(base + path, headers=AUTH)
                assert r.status_code == 404, path
            assert (await c.post(base + "/console/login", data={"token": "x"})).status_code == 404
            assert (await c.get(base + "/health")).status_code == 200
            assert (await c.get(base + "/metrics")).status_code == 200
    assert any("set CONSOLE_TOKEN" in r.getMessage() for r in caplog.records)


async def test_401_without_the_token_and_the_login_sets_a_strict_session_cookie(tmp_path):
    async with stack(tmp_path) as (_mock, _app, base):
        async with httpx.AsyncClient() as c:
            for path in GUARDED:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": CONSOLE_TOKEN}):
                    r = await c.get(base + path, headers=headers)
                    assert r.status_code == 401, (path, headers)
            page = await c.get(base + "/console")
            assert 'action="/console/login"' in page.text and 'type="password"' in page.text
            assert (await c.put(base + "/api/settings", json={"voice": "x"})).status_code == 401
            assert (await c.get(base + "/", follow_redirects=False)).headers["location"] == "/console"
            # the login form: wrong token 401, no cookie; right token 303 to the page, a cookie
            bad = await c.post(base + "/console/login", data={"token": "wrong"}, follow_redirects=False)
            assert bad.status_code == 401 and COOKIE not in bad.cookies
            ok = await c.post(base + "/console/login", data={"token": CONSOLE_TOKEN}, follow_redirects=False)
            assert ok.status_code == 303 and ok.headers["location"] == "/console"
            set_cookie = ok.headers["set-cookie"]
            assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and CONSOLE_TOKEN not in set_cookie
            page = await c.get(base + "/console")  # the client keeps the cookie
            assert page.status_code == 200 and "Live calls" in page.text
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert (await c.get(base + "/api/calls")).json()["calls"] == []
            await c.post(base + "/console/logout")
            assert (await c.get(base + "/api/calls")).status_code == 401
        # health and metrics stay open
        async with httpx.AsyncClient() as c:
            assert (await c.get(base + "/health")).status_code == 200


async def _read_feed(client: httpx.AsyncClient, url: str, out: list[dict], until_kind: str) -> None:
    async with client.stream("GET", url, headers=AUTH, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                ev = orjson.loads(line[6:])
                out.append(ev)
                if ev["kind"] == until_kind:
                    return


async def test_the_feed_shows_a_call_live_with_its_tool_call_and_outlives_the_request_timeout(tmp_path):
    """The all-calls feed during a real call with a tool call; the request timeout (set short here)
    does not cut the feed; the per-call feed replays the ended call; history finds it."""
    events: list[dict] = []
    async with stack(tmp_path, TOOL, http_request_timeout_s=1.0) as (mock, app, base):
        async with httpx.AsyncClient() as c:
            async with trio.open_nursery() as n:
                n.start_soon(_read_feed, c, base + "/api/feed", events, "call_ended")
                await trio.sleep(1.5)  # the feed is older than the request timeout before the call starts
                script = [Pause(300), Say("caller_weather_question"), WaitForReply(quiet_ms=800, timeout_ms=20000),
                          Hangup()]
                result = await place_call(base + "/incoming-call", script, parties=CallParties.new(from_=FROM))
            assert result.ok, result.error
            sid = result.core.ident.call_sid
            replay: list[dict] = []
            with trio.fail_after(5):
                await _read_feed(c, f"{base}/api/feed/{sid}", replay, "call_ended")
            found = (await c.get(base + "/api/conversations", params={"number": "0001234", "q": "weather"},
                                 headers=AUTH)).json()["conversations"]
            none = (await c.get(base + "/api/conversations", params={"number": "999999"},
                                headers=AUTH)).json()["conversations"]
            bad = await c.get(base + "/api/conversations", params={"since": "yesterday"}, headers=AUTH)
        assert app.feed.subscribers == 0  # both feeds ended and unsubscribed
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "call_started" and kinds[-1] == "call_ended", kinds
    assert events[0]["from_number"] == FROM and all(e["call"] == sid for e in events)
    lines = [(e["role"], e["text"]) for e in events if e["kind"] == "transcript"]
    assert any(r == "caller" and "weather" in t.lower() for r, t in lines), lines
    assert any(r == "assistant" and t for r, t in lines), lines
    call = next(e for e in events if e["kind"] == "tool_call")
    res = next(e for e in events if e["kind"] == "tool_result")
    assert call["name"] == "get_weather" and orjson.loads(call["arguments"]) == {"city": "Paris"}
    assert res["ok"] and "Paris" in res["output"]
    assert kinds.index("tool_call") < kinds.index("tool_result")
    assert [e["seq"] for e in replay] == [e["seq"] for e in events]  # the same events, replayed whole
    assert [c["call_sid"] for c in found] == [sid] and "weather" in found[0]["match"].lower()
    assert none == [] and bad.status_code == 400
    assert not {k for e in events for k in e} & {"audio", "payload", "delta"}  # no audio in the feed
    assert max(len(orjson.dumps(e)) for e in events) < 2000


async def test_settings_apply_to_the_next_call_not_the_running_one_and_survive_a_restart(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    long_reply = Behaviour(replies=("assistant_long_reply",), think=ThinkTime("fixed", 100.0), seed=4)
    async with stack(tmp_path, long_reply) as (mock, app, base):
        async with httpx.AsyncClient() as c:
            before = (await c.get(base + "/api/settings", headers=AUTH)).json()
            assert before["values"]["voice"] == "marin" and before["overridden"] == []
            first: dict = {}

            async def running_call():
                first["r"] = await place_call(base + "/incoming-call", [
                    Pause(200), Say("caller_weather_question"), WaitForAudio(after_ms=1500), Hangup()])

            async with trio.open_nursery() as n:
                n.start_soon(running_call)
                with trio.fail_after(10):
                    while not app.active_calls() or app.active_calls()[0]["state"] != "live":
                        await trio.sleep(0.05)
                bad = await c.put(base + "/api/settings", json={"vad_threshold": 3}, headers=AUTH)
                assert bad.status_code == 400 and "vad_threshold" in bad.json()["error"]
                unknown = await c.put(base + "/api/settings", json={"tools": ["rm_rf"]}, headers=AUTH)
                assert unknown.status_code == 400 and "rm_rf" in unknown.json()["error"]
                r = await c.put(base + "/api/settings", headers=AUTH,
                                json={"voice": "cedar", "instructions": "Be brief.", "tools": ["get_current_time"]})
                assert r.status_code == 200, r.text
                assert r.json()["changed"] == ["instructions", "tools", "voice"]
                tools = (await c.get(base + "/tools", headers=AUTH)).json()["tools"]
                assert {t["name"]: t["enabled"] for t in tools} == {"get_current_time": True, "get_weather": False,
                                                                     "end_call": False}
            second = await place_call(base + "/incoming-call", [Pause(200), Say("caller_greeting"),
                                                                   WaitForReply(), Hangup()])
            assert first["r"].ok and second.ok
        sessions = sorted((s.snapshot() for s in mock.sessions.values()), key=lambda s: s["id"])
    configs = {s["id"]: s["session"] for s in sessions}
    voices = sorted(cfg["audio"]["output"]["voice"] for cfg in configs.values())
    assert voices == ["cedar", "marin"]  # the running call kept marin; the next one got cedar
    new = next(cfg for cfg in configs.values() if cfg["audio"]["output"]["voice"] == "cedar")
    assert new["instructions"] == "Be brief." and [t["name"] for t in new["tools"]] == ["get_current_time"]
    assert any("session settings changed by bearer from 127.0.0.1" in r.getMessage() for r in caplog.records)
    # a restart keeps what the console set (the store), and says so
    app2 = BridgeApp(Settings(openai_api_key="k", database_path=tmp_path / "bridge.sqlite3",
                              console_token=CONSOLE_TOKEN, _env_file=None))
    assert app2.params.voice == "cedar" and app2.params.instructions == "Be brief."
    assert any("override the configured INSTRUCTIONS, TOOLS, VOICE" in r.getMessage() for r in caplog.records)


async def test_capacity_feed_readers_hold_console_feeds_open_during_calls(tmp_path):
    """``loadtests/feed_readers.py`` (``capacity.py --feeds N``): N subscribers read every event of a call."""
    import os
    import signal
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "loadtests" / "feed_readers.py"
    out = tmp_path / "feeds.json"
    async with stack(tmp_path) as (_mock, app, base):
        env = {**os.environ, "CONSOLE_TOKEN": CONSOLE_TOKEN}
        proc = await trio.lowlevel.open_process([sys.executable, str(script), "-n", "3", "--url", base + "/api/feed",
                                                 "--out", str(out)], env=env)
        with trio.fail_after(15):
            while app.feed.subscribers < 3:
                await trio.sleep(0.05)
        result = await place_call(base + "/incoming-call", [Pause(200), Say("caller_greeting"), WaitForReply(),
                                                            Hangup()])
        await trio.sleep(0.3)
        published = app.feed.published
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await proc.wait()
    tally = orjson.loads(out.read_bytes())
    assert result.ok and tally["open"] == 3 and tally["errors"] == []
    assert tally["events"] == 3 * published and tally["dropped_events"] == 0


async def test_a_feed_client_gone_before_the_body_starts_holds_no_place(tmp_path):
    """The feed's place is taken as its body starts: a response whose body never starts (the client
    went away first) leaves every place free; a full hub answers 503 before any body."""
    app = BridgeApp(Settings(_env_file=None, openai_api_key="k", console_token=CONSOLE_TOKEN,
                             database_path=tmp_path / "b.sqlite3"))
    app.feed.max_subscribers = 1
    feed = app.quart.view_functions["feed_all"]
    for _ in range(3):  # three clients that never read a byte
        async with app.quart.test_request_context("/api/feed", headers=AUTH):
            resp = await feed()
        assert resp.status_code == 200 and app.feed.subscribers == 0
    async with resp.response as body:  # the last one reads: now it holds the place
        chunks = body.__aiter__()
        assert await chunks.__anext__() == b"retry: 2000\n\n"
        assert app.feed.subscribers == 1 and app.feed.full
        async with app.quart.test_request_context("/api/feed", headers=AUTH):
            refused = await feed()
        assert refused[1] == 503 and refused[0] == {"error": "too many feed subscribers"}
        await chunks.aclose()
    assert app.feed.subscribers == 0


async def test_two_settings_changes_at_once_both_land_in_the_bridge_and_in_the_store(tmp_path):
    """Each change reads the values, waits for the store, then sets them: at once, both must land."""
    settings = Settings(_env_file=None, openai_api_key="k", database_path=tmp_path / "b.sqlite3")
    app = BridgeApp(settings)
    put = app.store.put_console_settings

    async def slow_put(values, who):  # a store write that takes a while, as a busy disk's does
        await trio.sleep(0.05)
        await put(values, who)

    app.store.put_console_settings = slow_put
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(app.change_session_settings, {"voice": "cedar"}, who="a"))
        nursery.start_soon(partial(app.change_session_settings, {"instructions": "Be brief."}, who="b"))
    assert (app.session_values.voice, app.session_values.instructions) == ("cedar", "Be brief.")
    assert (app.params.voice, app.params.instructions) == ("cedar", "Be brief.")
    await app.store.aclose()
    restarted = BridgeApp(settings)  # what the store holds
    assert (restarted.params.voice, restarted.params.instructions) == ("cedar", "Be brief.")
    await restarted.store.aclose()
