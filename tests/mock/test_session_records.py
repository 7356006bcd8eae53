"""``MockSession`` driven sans-IO: bounded memory and the snapshot.

A fake nanosecond clock, no sockets, no sleeping (see ``Driver`` in conftest.py and the
helpers in session_helpers.py).
"""

from __future__ import annotations

import base64
import json

import orjson
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime
from callsim.simulator.mock.input_audio import MAX_TURN_MS
from callsim.simulator.mock.session import MAX_LOG_EVENTS
from callsim.simulator.mock.session_base import MAX_RECORDS

from .conftest import MS, T0, events_of
from .session_helpers import (
    LONG,
    PCMU,
    SHORT,
    configure,
    sil,
    truncate,
    ulaw,
    until_type,
)

# ============================================================ 13. bounded memory


def test_bounded_memory_with_vad_on(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 0), seed=30))
    configure(d)
    s = d.s
    raw = orjson.dumps({"type": "input_audio_buffer.append",
                        "audio": base64.b64encode(sil(20)).decode()}).decode()
    t = d.t
    for _ in range(30_000):  # 10 minutes of line silence, 20 ms appends
        t += 20 * MS
        assert not s.receive(t, raw)
    d.t = t
    assert s._input_ms == 600_000
    assert len(s._buffer) <= 2000 * 8 + 160
    assert s._buffer_start_ms + len(s._buffer) / 8 == s._input_ms  # the clock survives the trimming
    assert len(s._append_times) <= s._append_times.maxlen
    # a turn after it is reported on the same clock
    d.append(ulaw("caller_stop") + sil(800))
    d.settle()
    started = d.one("input_audio_buffer.speech_started")
    assert abs(started["audio_start_ms"] - (600_000 + 200 - 300)) <= 40
    assert d.s.turns[0]["heard"] == "caller_stop"
    # the introspection log and records stay bounded, whatever the client sends
    assert s.log.maxlen == MAX_LOG_EVENTS
    for i in range(MAX_LOG_EVENTS + 500):
        s.receive(t, '{"type": "input_audio_buffer.clear"}')
        s.receive(t, '{"type": "nope"}')
    assert len(s.log) == MAX_LOG_EVENTS
    assert len(s.errors_sent) <= MAX_RECORDS


def test_bounded_memory_with_vad_off(drive):
    d = drive(recognize=False)
    configure(d, turn_detection=None)
    s = d.s
    second = orjson.dumps({"type": "input_audio_buffer.append",
                           "audio": base64.b64encode(sil(1000)).decode()}).decode()
    extra_s = 5
    for i in range(MAX_TURN_MS // 1000 + extra_s):
        assert not s.receive(d.t + i * 1000 * MS, second)
    assert len(s._buffer) == MAX_TURN_MS * 8
    assert s.counts["dropped_input_bytes"] == extra_s * 1000 * 8
    assert s.counts["audio_in_bytes"] == (MAX_TURN_MS + extra_s * 1000) * 8
    out = events_of(s.receive(d.t, '{"type": "input_audio_buffer.commit"}'))
    assert [e["type"] for e in out] == ["input_audio_buffer.committed", "conversation.item.added",
                                        "conversation.item.done"]
    assert s.turns[0]["audio_ms"] == MAX_TURN_MS
    assert (s.turns[0]["audio_start_ms"], s.turns[0]["audio_end_ms"]) == (extra_s * 1000, MAX_TURN_MS + extra_s * 1000)
    assert len(s._buffer) == 0


# ============================================================ 14. snapshot


def test_snapshot(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 100), replies=(SHORT, LONG), seed=31))
    configure(d, turn_detection={"type": "server_vad", "silence_duration_ms": 400})
    d.append(ulaw("caller_weather_question") + sil(800))
    d.settle()
    asst = d.one("response.output_item.added")["item"]["id"]
    truncate(d, asst, 1000, "t1")
    truncate(d, asst, 99_999, "t2")
    d.append(ulaw("caller_stop") + sil(600), until=until_type("response.output_audio.delta"))  # reply 2 streaming
    snap = d.s.snapshot()
    data = orjson.loads(orjson.dumps(snap))
    assert data == json.loads(json.dumps(snap))
    assert data["id"] == d.s.id and data["dialect"] == "ga" and data["open"] is True
    assert data["session"]["audio"]["input"]["format"] == PCMU
    t0 = data["turns"][0]
    assert t0["heard"] == "caller_weather_question" and t0["vad_wait_ms"] == 400
    assert isinstance(t0["t_last_speech_audio_ns"], int) and t0["t_last_speech_audio_ns"] <= t0["t_speech_stopped_ns"]
    assert t0["t_last_speech_audio_ns"] == T0 + int(t0["speech_end_ms"] - 20) * MS  # the append ending the speech
    assert t0["vad_wait_wall_ms"] == (t0["t_speech_stopped_ns"] - t0["t_last_speech_audio_ns"]) / MS
    assert [t["heard"] for t in data["turns"]] == ["caller_weather_question", "caller_stop"]
    assert [(r["reply"], r["status"]) for r in data["responses"]] == [(SHORT, "completed"), (LONG, "in_progress")]
    assert data["responses"][0]["think_ms"] == 100 and data["responses"][1]["t_first_audio_ns"] is not None
    assert [t["accepted"] for t in data["truncates"]] == [True, False]
    assert data["errors"][0]["event_id"] == "t2"
    ev_kinds = [x.get("event") for x in data["vad_decisions"] if "event" in x]
    assert ev_kinds == ["speech_started", "speech_stopped", "speech_started", "speech_stopped"]
    assert any(x.get("speech") is True for x in data["vad_decisions"])
    types = [(e["dir"], e["type"]) for e in data["events"]]
    assert ("in", "session.update") in types and ("out", "session.updated") in types
    assert ("out", "response.output_audio.delta") not in types  # audio is not logged
    assert all(isinstance(e["t_ns"], int) for e in data["events"])
    assert data["invalid_sent"] == []
    assert data["counts"]["appends"] == d.s.counts["appends"] > 0
    small = d.s.snapshot(full=False)
    assert "events" not in small and small["turns"] == 2 and small["responses"] == 1


def test_a_keypress_told_as_a_user_or_system_message_is_recorded(drive):
    """The GA API lets a bridge tell the model of a key in a system message as well as a user one."""
    d = drive()
    configure(d)
    for role, key in (("user", "1"), ("system", "2"), ("assistant", "3")):
        part = "output_text" if role == "assistant" else "input_text"
        d.send({"type": "conversation.item.create",
                "item": {"type": "message", "role": role, "content": [{"type": part, "text": f"The caller pressed {key}"}]}})
    assert d.s.snapshot()["dtmf"] == ["1", "2"] and len(d.s.snapshot()["dtmf_ns"]) == 2
