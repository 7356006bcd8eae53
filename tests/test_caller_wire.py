"""The fake caller over real loopback sockets, in real time.

These prove what a bridge on the other end of a WebSocket experiences: the
messages and their types as they arrive, the 20 ms pacing, mark/clear
semantics, and that the recording of what the caller heard is exact.
"""

from __future__ import annotations

import base64
import json
import re
import time

import numpy as np
import pytest
import soundfile as sf
import trio
from callsim.simulator.audio import linetag
from callsim.simulator.audio.codec import FRAME_BYTES
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.caller.script import Dtmf, Hangup, Pause, Say
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.measure.recording import pacing_stats, write_call
from callsim.simulator.measure.timeline import (
    AudioOffset,
    AudioOnset,
    ClosedByApp,
    MarkEcho,
    Stop,
    UtteranceStart,
    WaitTimeout,
)

from tests.stub_app import StreamSession, StubApp, is_speech

SID = re.compile(r"^(AC|CA|MZ)[0-9a-f]{32}$")


def noise(n: int, seed: int) -> bytes:
    """Loud μ-law noise with no 0xFF/0x7F bytes, so it can't be mistaken for line silence."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0x00, 0x60, size=n, dtype=np.uint8)  # large-magnitude μ-law codes
    codes[1::2] |= 0x80  # alternate signs
    return codes.tobytes()


async def run_with(app: StubApp, script, **kw):
    async with trio.open_nursery() as n:
        await n.start(app.serve)
        result = await place_call(app.url, script, **kw)
        n.cancel_scope.cancel()
    return result


async def test_messages_as_received_by_the_app():
    """Every field and type of protocols.md 1.2, as the app reads them off the socket."""
    app = StubApp()
    script = [Pause(60), Say("caller_stop"), Dtmf("5#", gap_ms=40), Pause(60), Hangup()]
    result = await run_with(app, script, custom_parameters={"token": "abc", "lang": "en"})
    assert result.ok, result.error
    (sess,) = app.sessions
    msgs = [r.msg for r in sess.received]
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert set(start) == {"event", "sequenceNumber", "start", "streamSid"}
    s = start["start"]
    assert set(s) == {"accountSid", "streamSid", "callSid", "tracks", "customParameters", "mediaFormat"}
    assert all(SID.match(s[k]) for k in ("accountSid", "streamSid", "callSid"))
    assert s["accountSid"][:2] == "AC" and s["callSid"][:2] == "CA" and s["streamSid"][:2] == "MZ"
    assert s["streamSid"] == start["streamSid"]
    assert s["tracks"] == ["inbound"]
    assert s["customParameters"] == {"token": "abc", "lang": "en"}
    assert s["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert type(s["mediaFormat"]["sampleRate"]) is int and type(s["mediaFormat"]["channels"]) is int

    # one sequenceNumber counter after 'connected', strings, no gaps
    seqs = [m["sequenceNumber"] for m in msgs[1:]]
    assert all(isinstance(x, str) for x in seqs)
    assert [int(x) for x in seqs] == list(range(1, len(seqs) + 1))

    media = [m for m in msgs if m["event"] == "media"]
    for i, m in enumerate(media):
        assert set(m) == {"event", "sequenceNumber", "media", "streamSid"}
        assert m["streamSid"] == start["streamSid"]
        md = m["media"]
        assert set(md) == {"track", "chunk", "timestamp", "payload"}
        assert md["track"] == "inbound"
        assert md["chunk"] == str(i + 1)
        assert md["timestamp"] == str(20 * i)
        assert len(base64.b64decode(md["payload"], validate=True)) == FRAME_BYTES
    # the idle line is silence carrying the call's inaudible line tag; the fixture's μ-law follows the pause
    payloads = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    utt = default_bank().get("caller_stop")
    tag = linetag.read_tag(payloads[:FRAME_BYTES])[0]  # the call's own tag, the same on every idle frame
    assert [linetag.read_tag(payloads[k * FRAME_BYTES:(k + 1) * FRAME_BYTES]) for k in range(3)] == \
        [(tag, k) for k in range(3)]
    assert payloads[3 * FRAME_BYTES : 3 * FRAME_BYTES + len(utt.ulaw)] == utt.ulaw

    dtmf = [m for m in msgs if m["event"] == "dtmf"]
    assert [d["dtmf"] for d in dtmf] == [{"track": "inbound_track", "digit": "5"},
                                         {"track": "inbound_track", "digit": "#"}]
    assert all(set(d) == {"event", "streamSid", "sequenceNumber", "dtmf"} for d in dtmf)

    stop = msgs[-1]
    assert stop["event"] == "stop"
    assert stop["stop"] == {"accountSid": s["accountSid"], "callSid": s["callSid"]}
    assert stop["streamSid"] == start["streamSid"]
    assert sess.closed_ns is not None  # the caller closed the socket after stop
    assert sess.headers.get("user-agent", "").startswith("Twilio")


async def test_frames_flow_continuously_while_app_is_silent():
    """Twilio sends a frame every 20 ms whether or not anyone speaks."""
    app = StubApp()
    result = await run_with(app, [Pause(1000), Hangup()])
    (sess,) = app.sessions
    assert sess.media_count == 50
    assert result.core.summary()["frames_sent"] == 50


def _pacing(sess: StreamSession) -> tuple[np.ndarray, float]:
    t = np.array([r.t_ns for r in sess.received if isinstance(r.raw, str) and '"media"' in r.raw[:20]])
    intervals = np.diff(t) / 1e6
    drift_frames = ((t[-1] - t[0]) / 1e6 - 20 * (len(t) - 1)) / 20
    return intervals, drift_frames


@pytest.mark.parametrize("seconds", [10])
async def test_pacing_on_absolute_deadlines(seconds):
    """Median interval 20 ± 1 ms at the app, drift under 3 frames (a 60 s run is test_pacing_60s)."""
    app = StubApp()
    result = await run_with(app, [Pause(seconds * 1000), Hangup()])
    intervals, drift = _pacing(app.sessions[0])
    assert len(intervals) == seconds * 50 - 1
    assert abs(np.median(intervals) - 20) <= 1, np.median(intervals)
    assert abs(drift) < 3, drift
    stats = pacing_stats(result)
    assert stats["frames"] == seconds * 50 and abs(stats["drift_frames"]) < 3


@pytest.mark.slow
async def test_pacing_60s():
    app = StubApp()
    await run_with(app, [Pause(60_000), Hangup()])
    intervals, drift = _pacing(app.sessions[0])
    assert len(intervals) == 2999
    assert abs(np.median(intervals) - 20) <= 1, np.median(intervals)
    assert abs(drift) < 3, drift


async def test_marks_echo_after_playout_and_clear_echoes_pending():
    """A mark comes back when the audio before it has played; clear returns the rest at once."""
    first, second = noise(8000, 1), noise(4000, 2)  # 1000 ms and 500 ms of audio
    timing: dict[str, int] = {}

    async def behaviour(sess: StreamSession) -> None:
        await sess.started.wait()
        timing["idle_mark_sent"] = await sess.send_mark("idle")
        r = await sess.wait_for(lambda m: m.get("event") == "mark" and m["mark"]["name"] == "idle")
        timing["idle_mark_back"] = r.t_ns
        timing["audio_sent"] = await sess.send_audio(first)
        await sess.send_mark("a")
        await sess.send_audio(second)
        await sess.send_mark("b")
        await sess.send_mark("c")
        r = await sess.wait_for(lambda m: m.get("event") == "mark" and m["mark"]["name"] == "a")
        timing["a_back"] = r.t_ns
        timing["clear_sent"] = await sess.send_clear()
        r = await sess.wait_for(lambda m: m.get("event") == "mark" and m["mark"]["name"] == "c")
        timing["c_back"] = r.t_ns

    app = StubApp(behaviour)
    result = await run_with(app, [Pause(2500), Hangup()])
    sess = app.sessions[0]
    names = [m["mark"]["name"] for m in sess.events("mark")]
    assert names == ["idle", "a", "b", "c"]
    ms = lambda a, b: (timing[b] - timing[a]) / 1e6  # noqa: E731
    assert ms("idle_mark_sent", "idle_mark_back") < 15  # nothing queued: at once
    # 'a' follows 1000 ms of audio: not before it has played, and within a frame or two after
    assert 1000 <= ms("audio_sent", "a_back") < 1060, ms("audio_sent", "a_back")
    # 'b' and 'c' were pending behind unplayed audio: the clear echoes them at once
    assert ms("clear_sent", "c_back") < 15, ms("clear_sent", "c_back")
    echoes = result.core.timeline.of(MarkEcho)
    assert [(e.name, e.reason) for e in echoes] == [
        ("idle", "idle"), ("a", "played"), ("b", "cleared"), ("c", "cleared")]
    s = result.core.summary()
    assert 1000 <= s["audio_played_ms"] <= 1040  # the first burst, plus at most the frame playing at clear
    assert s["audio_played_ms"] + s["audio_cleared_ms"] == 1500
    # the heard audio has the first burst and nothing of the cleared one after the clear
    heard = bytes(result.core.heard)
    off = heard.find(first)
    assert off >= 0 and off % FRAME_BYTES == 0
    tail = heard[off + len(first) + FRAME_BYTES * 2 :]
    assert set(tail) <= {0xFF}


async def test_heard_recording_is_exact_and_at_the_right_offsets(tmp_path):
    """heard.wav/heard.ulaw hold what the app sent, in order, where it was played."""
    bursts = [noise(1600, 10), noise(3200, 11), noise(800, 12)]  # 200, 400, 100 ms
    sent_at: list[int] = []

    async def behaviour(sess: StreamSession) -> None:
        await sess.started.wait()
        for i, b in enumerate(bursts):
            await trio.sleep(0.3 + 0.2 * i)
            sent_at.append(await sess.send_audio(b))

    app = StubApp(behaviour)
    result = await run_with(app, [Pause(2600), Hangup()])
    core = result.core
    heard = bytes(core.heard)
    assert len(heard) == len(core.tick_ns) * FRAME_BYTES  # one frame per tick, silence included
    pos = 0
    for b, t in zip(bursts, sent_at):
        off = heard.find(b, pos)
        assert off >= pos, "burst missing or out of order"
        # playback starts on the first tick after arrival: 0-20 ms later (+ scheduling slack)
        offset_ms = off / 8
        arrival_ms = (t - core.t0_ns) / 1e6
        assert 0 <= offset_ms - arrival_ms <= 25, (offset_ms, arrival_ms)
        assert set(heard[pos:off]) <= {0xFF}  # silence between bursts
        pos = off + len(b)
    assert set(heard[pos:]) <= {0xFF}

    paths = write_call(result, tmp_path)
    assert {p.name for p in paths} == {"heard.wav", "heard.ulaw", "timeline.json"}
    assert (tmp_path / "heard.ulaw").read_bytes() == heard
    pcm, rate = sf.read(tmp_path / "heard.wav", dtype="int16")
    assert rate == 8000 and len(pcm) == len(heard)
    # the WAV is the μ-law decoded (checked against audioop's reference decoder)
    import audioop  # test-only G.711 reference

    ref = np.frombuffer(audioop.ulaw2lin(heard, 2), dtype=np.int16)
    assert np.array_equal(pcm, ref)
    doc = json.loads((tmp_path / "timeline.json").read_text())
    assert doc["summary"]["audio_played_ms"] == 700
    starts = [e for e in doc["timeline"] if e["event"] == "playback_start"]
    assert len(starts) == 3


async def test_bad_messages_are_flagged_and_the_call_goes_on():
    """Like Twilio: warnings 31950/31951, counted, and nothing else changes."""
    good = noise(1600, 3)

    async def behaviour(sess: StreamSession) -> None:
        await sess.started.wait()
        sid = sess.stream_sid
        await sess.send(b"\x00\x01binary")
        await sess.send("{not json")
        await sess.send({"event": "play", "streamSid": sid})
        await sess.send({"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": "//8="}})
        await sess.send({"event": "mark", "streamSid": sid})
        await sess.send({"event": "media", "streamSid": sid, "media": {"payload": "***"}})
        await sess.send({"event": "media", "streamSid": sid, "media": {"paylod": "//8="}})
        await sess.send_audio(good)
        await sess.send_mark("after")

    app = StubApp(behaviour)
    result = await run_with(app, [Pause(800), Hangup()])
    core = result.core
    assert dict(core.warning_counts) == {31950: 1, 31951: 6}
    reasons = " | ".join(w["reason"] for w in core.warnings)
    for word in ("binary", "invalid JSON", "unknown event 'play'", "wrong streamSid", "mark without",
                 "not base64", "payload"):
        assert word in reasons, word
    assert good in bytes(core.heard)  # the valid audio after the junk still played
    assert [m["mark"]["name"] for m in app.sessions[0].events("mark")] == ["after"]
    assert app.sessions[0].media_count == 40  # frames never stopped


async def test_app_closing_the_socket_ends_the_call():
    async def behaviour(sess: StreamSession) -> None:
        await sess.started.wait()
        await trio.sleep(0.3)
        await sess.ws.aclose(code=1000, reason="bye")

    app = StubApp(behaviour)
    t = time.monotonic()
    result = await run_with(app, [Pause(10_000), Hangup()])
    assert time.monotonic() - t < 2
    assert result.core.end_reason == "closed_by_app"
    closed = result.core.timeline.of(ClosedByApp)
    assert closed and closed[0].code == 1000
    assert result.ok  # the app ending the stream is a normal end, not a harness error


async def test_conversation_waits_for_each_reply():
    """`--say A --say B`: B is said only after the reply to A has played and gone quiet."""
    reply = noise(4000, 5)  # 500 ms

    async def behaviour(sess: StreamSession) -> None:
        await sess.started.wait()
        for _ in range(2):
            # reply once the caller's speech has been streaming for a while
            await sess.wait_for(is_speech,
                                timeout=20, since=len(sess.received))
            n = sess.media_count
            await sess.wait_for(lambda m: m.get("event") == "media" and int(m["media"]["chunk"]) > n + 100,
                                timeout=20)
            await sess.send_audio(reply)

    from callsim.simulator.caller.script import conversation

    app = StubApp(behaviour)
    result = await run_with(app, conversation(["caller_stop", "caller_stop"], quiet_ms=400))
    tl = result.core.timeline
    kinds = [e.kind for e in tl.of(UtteranceStart, AudioOnset, AudioOffset, Stop)]
    assert kinds == ["utterance_start", "audio_onset", "audio_offset",
                     "utterance_start", "audio_onset", "audio_offset", "stop"]
    assert not tl.of(WaitTimeout)


async def test_what_the_app_sends_is_handled_in_the_reactor_task(monkeypatch):
    """The caller's receiver stays parked: every message the app sends is handled by
    the reactor task (callsim.simulator.net.reactor) of the services the calls were placed
    with, not by a wake-up of the call's receiver per message — and the call sees them all,
    in order."""
    from callsim.simulator.caller.core import CallerCore
    from callsim.simulator.net.drive import open_call_services

    handled_in: list[tuple[str, str]] = []
    real_receive = CallerCore.receive

    def receive(self, now_ns, data):  # type: ignore[no-untyped-def]
        msg = json.loads(data)
        handled_in.append((trio.lowlevel.current_task().name, msg["mark"]["name"] if msg["event"] == "mark" else ""))
        return real_receive(self, now_ns, data)

    monkeypatch.setattr(CallerCore, "receive", receive)
    names = [f"m{i}" for i in range(20)]

    async def behaviour(sess: StreamSession) -> None:
        await sess.started.wait()
        for i, name in enumerate(names):
            await sess.send_audio(noise(160, 100 + i))
            await sess.send_mark(name)
        await sess.wait_for(lambda m: m.get("event") == "mark" and m["mark"]["name"] == names[-1])

    app = StubApp(behaviour)
    async with open_call_services() as services:
        result = await run_with(app, [Pause(1200), Hangup()], services=services)
        assert services.reactor is not None
        assert services.reactor.callbacks >= 1 and services.reactor.parked == 0
    assert result.ok, result.error
    assert [n for _, n in handled_in if n] == names
    assert len(handled_in) == 2 * len(names)
    assert {task for task, _ in handled_in} == {"callsim reactor"}
