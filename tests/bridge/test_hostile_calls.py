"""Hostile and broken calls against a running bridge, over real loopback sockets (issue 18).

* One message used to kill the process: after a signed upgrade, a ``start`` with
  ``"callSid": 123`` raised in the token check and the exception left the
  connection's task, taking the server and every live call with it.
* A bug in one call (any exception, here planted by a core subclass, the app's
  hook for deliberately broken bridges) must end that call only, cleanly.
* A half-started call (``"mediaFormat": "x"``) must still start on a valid start.
* Finished calls must be freed by reference counting alone: a stored close
  exception (its traceback holding the reader's frame, the driver, the call)
  made every call a reference cycle, kept until a full collection.

A good call runs alongside each hostile connection and must pass untouched.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import weakref
from contextlib import asynccontextmanager
from typing import Any

import callsim.bridge.driver
import orjson
import trio
import trio.testing
from callsim.bridge.call import CallCore
from callsim.bridge.driver import CallDriver
from callsim.bridge.server import running_bridge
from callsim.bridge.settings import Settings
from callsim.simulator.caller.script import (
    Dtmf,
    Hangup,
    Pause,
    Say,
    WaitForAudio,
    WaitForReply,
)
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.caller.webhook import stream_headers
from callsim.simulator.measure.timeline import ClosedByApp
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.net.wsconn import ConnectionClosed, open_websocket

KEY = "sk-test-hostile"
TOKEN = "twilio-auth-token-for-hostile-tests"
STREAM_SID = "MZ" + "0123456789abcdef0123456789abcdef"
CALL_SID = "CA" + "fedcba9876543210fedcba9876543210"
HOSTILE_START = '{"event":"start","start":{"streamSid":"MZ1","callSid":123,"customParameters":{"token":"x"}}}'
SHORT_CALL = [Pause(300), Say("caller_stop"), WaitForReply(), Hangup()]
QUICK_CALL = [Pause(200), Hangup()]  # enough to show the bridge still takes calls


@asynccontextmanager
async def stack(tmp_path, app_kwargs: dict[str, Any] | None = None, **settings):
    cfg = MockConfig(api_key=KEY, behaviour=Behaviour(think=ThinkTime("fixed", 100.0), seed=11))
    async with running_mock(cfg) as mock:
        s = Settings(openai_api_key=KEY, openai_realtime_url=mock.realtime_url, port=0,
                     database_path=tmp_path / "bridge.sqlite3", **settings)
        async with running_bridge(s, **(app_kwargs or {})) as (app, base):
            yield mock, app, base


def start_msg(media_format: Any = None, **start: Any) -> str:
    body = {"streamSid": STREAM_SID, "callSid": CALL_SID, "tracks": ["inbound"],
            "mediaFormat": media_format or {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {}, **start}
    return json.dumps({"event": "start", "sequenceNumber": "1", "start": body, "streamSid": STREAM_SID})


async def closed_code(ws: Any, timeout: float = 5.0) -> int:
    """Read until the bridge closes the stream; its close code."""
    with trio.fail_after(timeout):
        try:
            while True:
                await ws.receive_message()
        except ConnectionClosed as exc:
            return exc.code


def records_of(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("callsim.bridge") and r.levelno >= logging.WARNING]


# ------------------------------------------------------------------ item 1


async def test_a_hostile_start_after_a_signed_upgrade_ends_one_connection_not_the_bridge(tmp_path, caplog):
    async with stack(tmp_path, twilio_auth_token=TOKEN) as (mock, app, base):
        ws_url = base.replace("http://", "ws://") + "/media-stream"
        good: dict[str, Any] = {}

        async def good_call() -> None:
            good["r"] = await place_call(base + "/incoming-call", SHORT_CALL, auth_token=TOKEN)

        async with trio.open_nursery() as n:
            n.start_soon(good_call)
            async with open_websocket(ws_url, stream_headers(TOKEN, ws_url)) as ws:
                await ws.send_text(HOSTILE_START)  # item 1's message, verbatim
                for bad in (start_msg(callSid=["CA1"]), start_msg(customParameters={"token": 5}),
                            start_msg(customParameters="token=x"), start_msg(media_format="x"),
                            '{"event":"start","start":null}', '{"event":"start","start":[1]}'):
                    await ws.send_text(bad)
                # still served, and answered as the bridge answers a stream without our token
                await ws.send_text(start_msg(customParameters={"token": "not-ours"}))
                assert await closed_code(ws) == 1008
        assert good["r"].ok, good["r"].error
        assert await app.wait_idle(2.0)
        after = await place_call(base + "/incoming-call", QUICK_CALL, auth_token=TOKEN)  # the process lives on
        metrics = app.metrics.render()[0].decode()
    assert after.ok, after.error
    assert len(mock.sessions) == 2  # only the good calls reached OpenAI
    assert 'callsim_bridge_errors_total{kind="twilio_bad"} 7.0' in metrics
    assert 'kind="internal"' not in metrics
    warnings = records_of(caplog)
    assert any("callSid is a number" in r.getMessage() for r in warnings)
    # every warning names the call, or before a start was accepted, the connection's address
    assert all(re.match(r"call (CA[0-9a-f]{32}|\? \(peer 127\.0\.0\.1:\d+\)): ", r.getMessage()) for r in warnings)
    assert sum("peer 127.0.0.1:" in r.getMessage() for r in warnings) >= 5


# ------------------------------------------------------------------ the guard


class BuggyCore(CallCore):
    """A planted bug: DTMF 9 raises inside the core (as ``callSid: 123`` did in the token check)."""

    def twilio_message(self, now_ns: int, data: str | bytes) -> list:
        if isinstance(data, str) and '"dtmf"' in data and orjson.loads(data)["dtmf"]["digit"] == "9":
            raise RuntimeError("planted bug")
        return super().twilio_message(now_ns, data)


async def test_an_exception_in_one_call_ends_that_call_cleanly_and_no_other(tmp_path, caplog):
    async with stack(tmp_path, {"core_class": BuggyCore}) as (mock, app, base):
        results: dict[str, Any] = {}

        async def call(name: str, script: list) -> None:
            results[name] = await place_call(base + "/incoming-call", script)

        async with trio.open_nursery() as n:
            n.start_soon(call, "good", SHORT_CALL)
            n.start_soon(call, "buggy", [Pause(300), Say("caller_stop"), WaitForAudio(after_ms=300), Dtmf("9"),
                                         Pause(3000), Hangup()])
        assert await mock.wait_all_closed(2.0)  # the buggy call's OpenAI session was closed too
        assert await app.wait_idle(2.0)
        after = await place_call(base + "/incoming-call", QUICK_CALL)
        metrics = app.metrics.render()[0].decode()
        conv = await app.store.get_conversation(results["buggy"].core.ident.call_sid)
    assert results["good"].ok, results["good"].error
    assert after.ok, after.error
    buggy = results["buggy"]
    closes = buggy.core.timeline.of(ClosedByApp)
    assert closes and closes[0].code == 1011  # closed at once, as an internal error: no hang, no dead air
    assert 'callsim_bridge_errors_total{kind="internal"} 1.0' in metrics
    assert conv is not None and conv["status"] == "failed"
    (rec,) = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert rec.levelno == logging.ERROR and rec.exc_info is not None
    assert buggy.core.ident.call_sid in rec.getMessage()
    assert "planted bug" in caplog.text  # the traceback is in the log


class CrashingDriver(CallDriver):
    """A planted bug outside the call's tasks: the driver's own clean-up raises after a bad message."""

    async def run(self) -> None:
        await super().run()
        if self.core.stats["twilio_bad"]:
            raise RuntimeError("planted bug in clean-up")


async def test_a_bug_in_the_driver_itself_is_caught_by_run_call(tmp_path, caplog):
    async with stack(tmp_path, {"driver_class": CrashingDriver}) as (_mock, app, base):
        ws_url = base.replace("http://", "ws://") + "/media-stream"
        good: dict[str, Any] = {}

        async def good_call() -> None:
            good["r"] = await place_call(base + "/incoming-call", SHORT_CALL)

        async with trio.open_nursery() as n:
            n.start_soon(good_call)
            async with open_websocket(ws_url) as ws:
                await ws.send_text("junk")
        assert await app.wait_idle(2.0)
        after = await place_call(base + "/incoming-call", QUICK_CALL)
        metrics = app.metrics.render()[0].decode()
    assert good["r"].ok, good["r"].error
    assert after.ok, after.error
    assert 'callsim_bridge_errors_total{kind="internal"} 1.0' in metrics
    (rec,) = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert rec.exc_info is not None and "peer 127.0.0.1:" in rec.getMessage()


# ------------------------------------------------------------------ item 9


async def test_a_half_started_call_still_starts_on_a_valid_start(tmp_path):
    async with stack(tmp_path) as (mock, app, base):
        ws_url = base.replace("http://", "ws://") + "/media-stream"
        async with open_websocket(ws_url) as ws:
            await ws.send_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
            await ws.send_text(start_msg(media_format="x"))
            await ws.send_text(start_msg())
            with trio.fail_after(5):
                while not mock.sessions:  # the valid start opened OpenAI
                    await trio.sleep(0.01)
            (core,) = app.calls
            assert (core.stream_sid, core.call_sid, core.stats["twilio_bad"]) == (STREAM_SID, CALL_SID, 1)
            await ws.send_text(json.dumps({"event": "stop", "streamSid": STREAM_SID, "stop": {"callSid": CALL_SID}}))
        assert await mock.wait_all_closed(2.0)
        assert await app.wait_idle(2.0)
        conv = await app.store.get_conversation(CALL_SID)
    assert conv is not None and conv["status"] == "completed"


async def test_a_start_in_a_format_the_bridge_cannot_play_closes_the_stream_without_openai(tmp_path):
    async with stack(tmp_path) as (mock, app, base):
        ws_url = base.replace("http://", "ws://") + "/media-stream"
        async with open_websocket(ws_url) as ws:
            await ws.send_text(start_msg(media_format={"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}))
            assert await closed_code(ws) == 1000
        assert await app.wait_idle(2.0)
    assert not mock.sessions


# ------------------------------------------------------------------ item 4: freed without the collector


async def test_finished_calls_are_freed_without_the_garbage_collector(tmp_path, monkeypatch):
    """Weak references to every call's core, driver and both sockets die as the calls end,
    with the cyclic collector off for the whole run (as after ``gc.freeze()`` in production,
    where a full collection is rare). Good calls, barge-ins, a bug, bad and refused starts."""
    refs: list[tuple[str, weakref.ref]] = []

    class Tracked(CallDriver):
        def __init__(self, app: Any, core: CallCore, twilio: Any, **kwargs: Any) -> None:
            super().__init__(app, core, twilio, **kwargs)
            refs.extend([("driver", weakref.ref(self)), ("core", weakref.ref(core)), ("twilio", weakref.ref(twilio))])

    real_connect = callsim.bridge.driver.connect

    async def tracked_connect(*args: Any, **kwargs: Any) -> Any:
        ws = await real_connect(*args, **kwargs)
        refs.append(("openai", weakref.ref(ws)))
        return ws

    monkeypatch.setattr(callsim.bridge.driver, "connect", tracked_connect)
    logging.getLogger("callsim.bridge").setLevel(logging.CRITICAL)  # pytest keeps records (and tracebacks) alive
    behaviour = Behaviour(replies=("assistant_long_reply",), think=ThinkTime("fixed", 100.0), seed=12)
    gc.collect()
    gc.disable()
    try:
        cfg = MockConfig(api_key=KEY, behaviour=behaviour)
        async with running_mock(cfg) as mock:
            s = Settings(openai_api_key=KEY, openai_realtime_url=mock.realtime_url, port=0,
                         database_path=tmp_path / "bridge.sqlite3")
            async with running_bridge(s, driver_class=Tracked, core_class=BuggyCore) as (app, base):
                ws_url = base.replace("http://", "ws://") + "/media-stream"
                scripts = [
                    [Pause(200), Say("caller_stop"), WaitForAudio(after_ms=300), Hangup()],  # hangs up mid-reply
                    [Pause(200), Say("caller_stop"), WaitForAudio(after_ms=300), Say("caller_stop"),
                     WaitForAudio(after_ms=100), Hangup()],  # barge-in
                    [Pause(200), Say("caller_stop"), WaitForAudio(after_ms=200), Dtmf("9"), Pause(300),
                     Hangup()],  # the planted bug
                    [Pause(300), Hangup()],  # silence
                ]
                results = []

                async def call(script: list) -> None:
                    results.append(await place_call(base + "/incoming-call", script))

                async def raw(messages: list[str]) -> None:
                    async with open_websocket(ws_url) as ws:
                        for m in messages:
                            await ws.send_text(m)
                        await trio.sleep(0.2)

                for round_ in range(2):
                    async with trio.open_nursery() as n:
                        for i in range(12):
                            n.start_soon(call, scripts[(i + round_) % len(scripts)])
                        n.start_soon(raw, [HOSTILE_START, "junk", start_msg(media_format="x")])
                        n.start_soon(raw, [start_msg(media_format={"encoding": "audio/x-l16"})])
                assert await app.wait_idle(5.0)
                assert await mock.wait_all_closed(5.0)
                assert app.metrics.barge_ins >= 1 and app.metrics.errors.get("internal") == 6
                await trio.testing.wait_all_tasks_blocked(0.05)
                alive = sorted(kind for kind, ref in refs if ref() is not None)
    finally:
        gc.enable()
        logging.getLogger("callsim.bridge").setLevel(logging.NOTSET)
    assert len(results) == 24 and sum(r.ok for r in results) >= 18  # the 6 calls with the bug are cut short
    assert sum(kind == "core" for kind, _ in refs) == 24 + 4 and sum(kind == "openai" for kind, _ in refs) == 24
    assert alive == [], f"{len(alive)} objects of finished calls still alive without gc: {alive}"
