"""``MockSession`` driven sans-IO: a fake nanosecond clock, no sockets, no sleeping.

Audio goes in as a Twilio bridge forwards it (8 kHz μ-law, 20 ms appends at
t += 20 ms); the session's timers fire at exactly ``next_deadline_ns()``
(see ``Driver`` in conftest.py). Every event the session emits is validated
against the openai SDK's types, and the ``drive`` fixture asserts
``session.invalid_sent == []`` for every session at the end of every test.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import time
from typing import Any

import numpy as np
import orjson
import pytest
from callsim.simulator.audio.codec import SILENCE_BYTE
from callsim.simulator.audio.fixtures import default_library
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.mock import errors
from callsim.simulator.mock.audio import decode, encode, fixture_audio
from callsim.simulator.mock.behaviour import Behaviour, Fault, Rule, ThinkTime, ToolCall
from callsim.simulator.mock.ids import ID_RE
from callsim.simulator.mock.session import (
    MAX_LOG_EVENTS,
    MAX_RECORDS,
    MAX_TURN_MS,
    MIN_COMMIT_MS,
)
from callsim.simulator.mock.session_config import DEFAULT_INSTRUCTIONS

from .conftest import CHUNK_MS, MS, T0, Driver, events_of

LIB = default_library()
SHORT, LONG = "assistant_short_reply", "assistant_long_reply"
PCMU = {"type": "audio/pcmu"}
PCM = {"type": "audio/pcm", "rate": 24000}
_UNSET: Any = object()

GA_AUDIO_DELTAS = {"response.output_audio.delta", "response.output_audio_transcript.delta"}
BETA_AUDIO_DELTAS = {"response.audio.delta", "response.audio_transcript.delta"}
GA_REPLY = ["response.created", "response.output_item.added", "conversation.item.added",
            "response.content_part.added", "DELTAS", "response.output_audio.done",
            "response.output_audio_transcript.done", "response.content_part.done", "response.output_item.done",
            "conversation.item.done", "response.done", "rate_limits.updated"]
GA_USER_TURN = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]


# ------------------------------------------------------------------ helpers


def ulaw(name: str) -> bytes:
    return default_bank().get(name).ulaw


def sil(ms: int) -> bytes:
    return bytes([SILENCE_BYTE]) * (ms * 8)


def text(name: str) -> str:
    return LIB[name].text


def ga_update(*, fmt_in: Any = PCMU, fmt_out: Any = PCMU, turn_detection: Any = _UNSET,
              transcription: Any = _UNSET, event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    inp: dict[str, Any] = {}
    if fmt_in is not None:
        inp["format"] = fmt_in
    if turn_detection is not _UNSET:
        inp["turn_detection"] = turn_detection
    if transcription is not _UNSET:
        inp["transcription"] = transcription
    audio: dict[str, Any] = {"input": inp}
    if fmt_out is not None:
        audio["output"] = {"format": fmt_out}
    ev: dict[str, Any] = {"type": "session.update", "session": {"type": "realtime", "audio": audio, **extra}}
    if event_id is not None:
        ev["event_id"] = event_id
    return ev


def declared(*names: str) -> list[dict[str, Any]]:
    """A session's ``tools`` declaring function tools ``names`` (the mock calls only declared tools)."""
    return [{"type": "function", "name": n, "description": n, "parameters": {"type": "object", "properties": {}}}
            for n in names]


def configure(d: Driver, **kw: Any) -> dict[str, Any]:
    out = d.send(ga_update(**kw))
    assert d.types(out) == ["session.updated"], out
    return out[0]["session"]


def shape(types: list[str], deltas: set[str] = GA_AUDIO_DELTAS) -> list[str]:
    """Event types with every run of audio/transcript deltas collapsed to "DELTAS"."""
    out: list[str] = []
    for t in types:
        if t in deltas:
            if not out or out[-1] != "DELTAS":
                out.append("DELTAS")
        else:
            out.append(t)
    return out


def audio_of(events: list[dict[str, Any]], response_id: str | None = None,
             delta_type: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events
                    if e["type"] == delta_type and (response_id is None or e["response_id"] == response_id))


def since(d: Driver, n: int) -> list[dict[str, Any]]:
    return d.events[n:]


def greet(d: Driver, *, text_: str = "Greet the caller.") -> list[dict[str, Any]]:
    """The bridge's greeting: a user text item, then response.create."""
    out = d.send({"type": "conversation.item.create",
                  "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text_}]}})
    return out + d.send({"type": "response.create"})


def until_type(etype: str):
    return lambda e: e["type"] == etype


def err(code: str | None, message: str, event_id: str | None = None, param: str | None = None,
        type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": type_, "code": code, "message": message, "param": param, "event_id": event_id}


# ============================================================ 1. session.created / update


def test_session_created_ga_defaults(drive):
    d = drive(open=False)
    out = d.open()
    assert d.types(out) == ["session.created"]
    ev = out[0]
    assert ID_RE.match(ev["event_id"]) and ev["event_id"].startswith("event_")
    s = ev["session"]
    assert ID_RE.match(s["id"]) and s["id"].startswith("sess_") and s["id"] == d.s.id
    assert abs(s.pop("expires_at") - (time.time() + 3600)) < 60
    assert s == {
        "type": "realtime", "object": "realtime.session", "id": d.s.id, "model": "gpt-realtime",
        "output_modalities": ["audio"], "instructions": DEFAULT_INSTRUCTIONS, "tools": [], "tool_choice": "auto",
        "max_output_tokens": "inf", "tracing": None, "truncation": "auto", "prompt": None,
        "audio": {
            "input": {"format": PCM, "transcription": None, "noise_reduction": None,
                      "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                         "silence_duration_ms": 200, "idle_timeout_ms": None,
                                         "create_response": True, "interrupt_response": True}},
            "output": {"format": PCM, "voice": "marin", "speed": 1},
        },
        "include": None,
    }
    assert list(ev) == ["event_id", "type", "session"]


def test_session_created_beta_defaults_flat(drive):
    d = drive(dialect="beta", open=False)
    out = d.open()
    assert d.types(out) == ["session.created"]
    s = out[0]["session"]
    assert "type" not in s and "audio" not in s
    assert s == {
        "id": d.s.id, "object": "realtime.session", "model": "gpt-realtime",
        "modalities": ["text", "audio"], "instructions": DEFAULT_INSTRUCTIONS, "voice": "alloy",
        "input_audio_format": "pcm16", "output_audio_format": "pcm16", "input_audio_transcription": None,
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                           "silence_duration_ms": 200, "create_response": True, "interrupt_response": True},
        "tools": [], "tool_choice": "auto", "temperature": 0.8, "max_response_output_tokens": "inf",
    }
    # a model the beta SDK types do not know is reported as one they do
    d = drive(dialect="beta", model="my-own-realtime-model")
    assert d.events[0]["session"]["model"] == "gpt-4o-realtime-preview"


def test_session_update_merges_and_reports_full_session(drive):
    d = drive()
    expected = copy.deepcopy(d.events[0]["session"])
    out = d.send({"type": "session.update", "event_id": "cli_upd_1",
                  "session": {"type": "realtime", "instructions": "Be brief.",
                              "audio": {"input": {"format": PCMU}}}})
    assert d.types(out) == ["session.updated"]
    assert out[0]["event_id"] != "cli_upd_1"  # the client's id is not echoed
    expected["instructions"] = "Be brief."
    expected["audio"]["input"]["format"] = PCMU  # only the input format; output stays pcm
    assert out[0]["session"] == expected
    assert (d.s.config.input_format.kind, d.s.config.output_format.kind) == ("pcmu", "pcm16")

    # a partial turn_detection object: the rest takes defaults; output side merges key by key
    out = d.send(ga_update(fmt_in=None, fmt_out=PCMU, turn_detection={"type": "server_vad", "silence_duration_ms": 500},
                           tools=[{"type": "function", "name": "get_weather", "description": "w",
                                   "parameters": {"type": "object", "properties": {}}}]))
    assert d.types(out) == ["session.updated"]
    expected["audio"]["output"]["format"] = PCMU
    expected["audio"]["input"]["turn_detection"]["silence_duration_ms"] = 500
    expected["tools"] = [{"type": "function", "name": "get_weather", "description": "w",
                          "parameters": {"type": "object", "properties": {}}}]
    assert out[0]["session"] == expected
    assert d.s._vad is not None and d.s._vad.params.silence_duration_ms == 500

    # VAD off
    out = d.send(ga_update(fmt_in=None, fmt_out=None, turn_detection=None))
    expected["audio"]["input"]["turn_detection"] = None
    assert out[0]["session"] == expected and d.s._vad is None


def test_bad_session_update_errors_with_event_id_and_changes_nothing(drive):
    d = drive()
    before = copy.deepcopy(d.events[0]["session"])
    # schema error (GA formats are objects)
    out = d.send({"type": "session.update", "event_id": "bad_1",
                  "session": {"type": "realtime", "instructions": "changed",
                              "audio": {"input": {"format": "g711_ulaw"}}}})
    assert d.errors(out) == [err("invalid_type", "Invalid type for 'session.audio.input.format': expected an object, "
                                 "but got a string instead.", "bad_1", "session.audio.input.format")]
    assert d.types(out) == ["error"]
    # range error: the valid part of the update (instructions) is discarded too
    out = d.send(ga_update(fmt_in=None, fmt_out=None, event_id="bad_2", instructions="changed",
                           turn_detection={"type": "server_vad", "threshold": 1.5}))
    [e] = d.errors(out)
    assert (e["code"], e["param"], e["event_id"]) == (
        "decimal_above_max_value", "session.audio.input.turn_detection.threshold", "bad_2")
    # unknown parameter
    out = d.send({"type": "session.update", "event_id": "bad_3", "session": {"type": "realtime", "bogus": 1}})
    assert d.errors(out) == [err("unknown_parameter", "Unknown parameter: 'session.bogus'.", "bad_3", "session.bogus")]
    # GA update without session.type (and no beta-only key: not the beta dialect)
    out = d.send({"type": "session.update", "event_id": "bad_4", "session": {"instructions": "x"}})
    assert d.errors(out) == [err("missing_required_parameter", "Missing required parameter: 'session.type'.",
                                 "bad_4", "session.type")]
    assert d.s.close_request is None
    # the session goes on, unchanged
    out = d.send({"type": "session.update", "session": {"type": "realtime"}})
    assert d.types(out) == ["session.updated"]
    after = out[0]["session"]
    assert after == before
    assert [e["code"] for e in d.s.errors_sent] == ["invalid_type", "decimal_above_max_value", "unknown_parameter",
                                                    "missing_required_parameter"]


# ============================================================ 2. a VAD turn, exact order


def test_vad_turn_exact_event_order_and_chaining(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 200), seed=11))
    configure(d, turn_detection={"type": "server_vad", "silence_duration_ms": 500})
    n0 = len(d.events)
    lead = 1000
    d.append(sil(lead) + ulaw("caller_weather_question") + sil(1000))
    d.settle()
    turn1 = since(d, n0)
    assert shape(d.types(turn1)) == GA_USER_TURN + GA_REPLY

    started, stopped, committed, added, done = turn1[:5]
    rec = d.s.turns[0]
    segments = LIB["caller_weather_question"].speech_segments_ms
    onset, end = segments[0][0], segments[-1][1]
    # where the speech is, on the input-buffer clock (VAD accuracy itself: test_vad.py)
    assert abs(rec["speech_onset_ms"] - (lead + onset)) <= 40
    assert abs(rec["speech_end_ms"] - (lead + end)) <= 40
    assert started["audio_start_ms"] == max(0, rec["speech_onset_ms"] - 300)
    assert stopped["audio_end_ms"] == rec["speech_end_ms"] + 500 == rec["audio_end_ms"]
    assert rec["vad_wait_ms"] == 500
    item_id = started["item_id"]
    assert ID_RE.match(item_id)
    assert stopped["item_id"] == committed["item_id"] == item_id
    assert committed["previous_item_id"] is None
    for ev in (added, done):
        assert ev["previous_item_id"] is None
        assert ev["item"] == {"id": item_id, "type": "message", "status": "completed", "role": "user",
                              "content": [{"type": "input_audio", "transcript": None}]}
    # the commit comes with the append that brings the buffer to audio_end_ms: not before
    # the mock has that audio, and not an append later (append k, sent at T0 + k·20 ms, holds
    # buffer ms [20k, 20k + 20))
    holder = -(-stopped["audio_end_ms"] // CHUNK_MS) - 1
    assert d.time_of(stopped) == T0 + holder * CHUNK_MS * MS

    r = turn1[5:]
    created, oi_added, ci_added, cp_added = r[:4]
    rid = created["response"]["id"]
    assert created["response"]["status"] == "in_progress" and created["response"]["output"] == []
    assert created["response"]["conversation_id"] == d.s.conversation_id
    asst = oi_added["item"]["id"]
    assert oi_added["item"] == {"id": asst, "type": "message", "status": "in_progress", "role": "assistant",
                                "content": []}
    assert ci_added["previous_item_id"] == item_id and ci_added["item"]["id"] == asst
    assert cp_added["part"] == {"type": "audio", "transcript": ""}
    deltas = [e for e in r if e["type"] in GA_AUDIO_DELTAS]
    assert all(e["response_id"] == rid and e["item_id"] == asst and e["output_index"] == 0
               and e["content_index"] == 0 for e in deltas)
    # interleaved: each transcript delta goes right before an audio delta, and there are several
    tdeltas = [i for i, e in enumerate(deltas) if e["type"] == "response.output_audio_transcript.delta"]
    assert len(tdeltas) >= 3
    assert all(deltas[i + 1]["type"] == "response.output_audio.delta" for i in tdeltas)
    assert deltas[-1]["type"] == "response.output_audio.delta"
    full = text(SHORT)
    assert "".join(deltas[i]["delta"] for i in tdeltas) == full
    assert audio_of(r) == fixture_audio(SHORT, "pcmu")
    tail = r[len(r) - 7:]
    assert tail[0] == {"event_id": tail[0]["event_id"], "type": "response.output_audio.done", "response_id": rid,
                       "item_id": asst, "output_index": 0, "content_index": 0}
    assert tail[1]["transcript"] == full
    assert tail[2]["part"] == {"type": "audio", "transcript": full}
    final_item = {"id": asst, "type": "message", "status": "completed", "role": "assistant",
                  "content": [{"type": "output_audio", "transcript": full}]}
    assert tail[3]["item"] == final_item
    assert tail[4]["item"] == final_item and tail[4]["previous_item_id"] == item_id
    resp = tail[5]["response"]
    assert (resp["id"], resp["status"], resp["status_details"]) == (rid, "completed", None)
    assert resp["output"] == [final_item]
    assert resp["audio"]["output"]["format"] == PCMU
    u = resp["usage"]
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"] and u["output_tokens"] > 0
    assert [x["name"] for x in tail[6]["rate_limits"]] == ["requests", "tokens"]

    # second turn: committed chains onto the assistant item
    n1 = len(d.events)
    d.append(ulaw("caller_stop") + sil(1000))
    d.settle()
    turn2 = since(d, n1)
    assert shape(d.types(turn2)) == GA_USER_TURN + GA_REPLY
    assert turn2[0]["audio_start_ms"] >= stopped["audio_end_ms"]
    assert turn2[2]["previous_item_id"] == asst
    assert turn2[3]["previous_item_id"] == asst
    assert turn2[7]["previous_item_id"] == turn2[2]["item_id"]  # the new assistant item follows the new user item
    assert d.s.order == [item_id, asst, turn2[2]["item_id"], turn2[6]["item"]["id"]]


def test_audio_start_floored_at_zero_and_prefix_padding_honoured(drive):
    d = drive()
    configure(d, turn_detection={"type": "server_vad", "prefix_padding_ms": 500})
    d.append(ulaw("caller_stop") + sil(600))  # onset 200 ms < 500 ms padding
    [started] = d.of("input_audio_buffer.speech_started")
    assert started["audio_start_ms"] == 0
    d.settle()
    d.append(sil(700) + ulaw("caller_stop") + sil(600))
    started = d.of("input_audio_buffer.speech_started")[1]
    rec = d.s.turns[1]
    assert started["audio_start_ms"] == rec["speech_onset_ms"] - 500 > d.s.turns[0]["audio_end_ms"]


def test_vad_times_are_on_the_buffer_clock_not_wall_clock(drive):
    audio = sil(400) + ulaw("caller_greeting") + sil(900)
    rng = random.Random(5)
    results = []
    for steps, chunk in ((None, 20), ([rng.choice((0, 1, 7, 20, 45, 130)) * MS for _ in range(len(audio))], 20),
                         ([rng.randrange(0, 90) * MS for _ in range(len(audio))], 60)):
        d = drive(Behaviour(think=ThinkTime("fixed", 100), seed=3))
        configure(d)
        d.append(audio, steps_ns=steps, chunk_ms=chunk)
        d.settle()
        started = d.one("input_audio_buffer.speech_started")
        stopped = d.one("input_audio_buffer.speech_stopped")
        t = d.s.turns[0]
        results.append(((started["audio_start_ms"], stopped["audio_end_ms"]),
                        (t["speech_onset_ms"], t["speech_end_ms"], t["vad_wait_ms"], t["audio_ms"], t["heard"]),
                        t["vad_wait_wall_ms"]))
    assert results[0][0] == results[1][0] == results[2][0]
    assert results[0][1] == results[1][1] == results[2][1]
    assert results[0][1][2] == 200 and results[0][1][4] == "caller_greeting"
    # ... while the wall-clock view differs (it is what the irregular timestamps change)
    assert len({r[2] for r in results}) == 3


def test_turn_detection_changes_keep_the_buffer_clock(drive):
    """A VAD (re)built by session.update mid-session reports times on the session's buffer clock."""
    d = drive(Behaviour(think=ThinkTime("fixed", 0), seed=41))
    configure(d, turn_detection=None)
    d.append(sil(1000))
    d.send({"type": "input_audio_buffer.commit"})
    assert d.s.turns[0]["audio_end_ms"] == 1000
    stop = ulaw("caller_stop")
    onset, end = LIB["caller_stop"].speech_segments_ms[0]
    for silence_ms, base in ((300, 1000), (700, 1000 + 500 + len(stop) // 8 + 900)):
        configure(d, fmt_in=None, fmt_out=None,
                  turn_detection={"type": "server_vad", "silence_duration_ms": silence_ms})
        n = len(d.events)
        d.append(sil(500) + stop + sil(900))
        d.settle()
        started = d.one("input_audio_buffer.speech_started", since(d, n))
        stopped = d.one("input_audio_buffer.speech_stopped", since(d, n))
        rec = d.s.turns[-1]
        assert abs(rec["speech_onset_ms"] - (base + 500 + onset)) <= 40
        assert abs(rec["speech_end_ms"] - (base + 500 + end)) <= 40
        assert started["audio_start_ms"] == rec["speech_onset_ms"] - 300
        assert stopped["audio_end_ms"] == rec["speech_end_ms"] + silence_ms
        assert rec["heard"] == "caller_stop"
    assert d.s._input_ms == 1000 + 2 * (500 + len(stop) / 8 + 900)


# ============================================================ 3. pacing


@pytest.mark.parametrize(("fmt", "bpm", "chunk_ms", "factor", "period_ms"),
                         [(PCMU, 8, 100, 5.0, 20), (PCMU, 8, 40, 1.0, 40), (PCM, 48, 100, 4.0, 25)])
def test_delta_pacing_and_sizes(drive, fmt, bpm, chunk_ms, factor, period_ms):
    T = 250
    d = drive(Behaviour(think=ThinkTime("fixed", T), chunk_ms=chunk_ms, realtime_factor=factor, seed=2))
    configure(d, fmt_in=fmt, fmt_out=fmt)
    t_req = d.t
    greet(d)
    d.settle()
    created = d.one("response.created")
    t_created = d.time_of(created)
    assert t_created == t_req + 20 * MS  # created_delay_ms
    deltas = d.of("response.output_audio.delta")
    times = [d.time_of(e) for e in deltas]
    assert times[0] == t_created + T * MS
    assert all(b - a == period_ms * MS for a, b in zip(times, times[1:]))
    sizes = [len(base64.b64decode(e["delta"])) for e in deltas]
    expected = fixture_audio(SHORT, "pcmu" if bpm == 8 else "pcm16")
    assert sizes[:-1] == [chunk_ms * bpm] * (len(sizes) - 1)
    assert 0 < sizes[-1] <= chunk_ms * bpm
    assert audio_of(d.events) == expected
    assert d.time_of(d.one("response.done")) == times[-1]
    [rec] = d.s.response_records
    assert rec["think_ms"] == T
    assert rec["t_created_ns"] == t_created and rec["t_first_audio_ns"] == times[0]
    assert rec["t_done_ns"] == times[-1]
    assert rec["audio_ms_sent"] == rec["audio_ms_total"] == round(len(expected) / bpm, 3)
    assert rec["reply"] == SHORT and rec["trigger"] == "client" and rec["status"] == "completed"


def test_uniform_think_time_is_seeded_and_in_range(drive):
    def thinks(seed: int) -> list[float]:
        d = drive(Behaviour(think=ThinkTime("uniform", lo=100, hi=400), seed=seed))
        configure(d)
        drawn = []
        for _ in range(4):
            n = len(d.events)
            greet(d)
            d.settle()
            ev = since(d, n)
            created = d.one("response.created", ev)
            first = d.of("response.output_audio.delta", ev)[0]
            rec = d.s.response_records[-1]
            assert abs((d.time_of(first) - d.time_of(created)) / MS - rec["think_ms"]) < 0.001
            assert rec["t_first_audio_ns"] == d.time_of(first)
            drawn.append(rec["think_ms"])
        return drawn

    a, b, c = thinks(7), thinks(7), thinks(8)
    assert a == b != c
    assert all(100 <= x <= 400 for x in a + c)
    assert len(set(a)) == 4
    r1, r2 = random.Random(3), random.Random(3)
    tt = ThinkTime.parse("uniform:200-600")
    assert [tt.draw(r1) for _ in range(5)] == [tt.draw(r2) for _ in range(5)]
    assert ThinkTime.parse(300) == ThinkTime("fixed", 300.0)
    assert ThinkTime.parse("normal:400,50") == ThinkTime("normal", 400.0, sd=50.0)
    with pytest.raises(ValueError):
        ThinkTime.parse("uniform:abc")


# ============================================================ 4. barge-in, cancel, collisions


def _streaming_session(drive, *, interrupt: bool = True) -> tuple[Driver, str, str]:
    """A GA pcmu session whose long reply to a VAD turn is streaming right now."""
    d = drive(Behaviour(think=ThinkTime("fixed", 200), replies=(LONG,), seed=4))
    td: dict[str, Any] = {"type": "server_vad"}
    if not interrupt:
        td["interrupt_response"] = False
    configure(d, turn_detection=td)
    d.append(ulaw("caller_weather_question") + sil(1500), until=until_type("response.output_audio.delta"))
    first = d.of("response.output_audio.delta")[0]
    return d, first["response_id"], first["item_id"]


def test_barge_in_cancels_with_turn_detected(drive):
    d, rid, asst = _streaming_session(drive)
    n = len(d.events)
    d.append(sil(100) + ulaw("caller_stop") + sil(800))
    d.settle()
    after = since(d, n)
    types = d.types(after)
    i_start = types.index("input_audio_buffer.speech_started")
    done = [e for e in after if e["type"] == "response.done" and e["response"]["id"] == rid]
    assert len(done) == 1
    i_done = after.index(done[0])
    # the cancel is immediate, in the same step as speech_started; the item is closed first
    assert types[i_start:i_done + 2] == [
        "input_audio_buffer.speech_started", "response.output_audio.done", "response.output_audio_transcript.done",
        "response.content_part.done", "response.output_item.done", "conversation.item.done", "response.done",
        "rate_limits.updated"]
    assert d.time_of(after[i_start]) == d.time_of(done[0])
    resp = done[0]["response"]
    assert resp["status"] == "cancelled"
    assert resp["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert resp["output"][0]["id"] == asst and resp["output"][0]["status"] == "incomplete"
    oi_done = after[i_start + 4]
    assert oi_done["item"]["status"] == "incomplete"
    # nothing more for the cancelled response
    assert not [e for e in after[i_done:] if e.get("response_id") == rid]
    sent = audio_of(d.events, rid)
    full = fixture_audio(LONG, "pcmu")
    assert 0 < len(sent) < len(full) and full.startswith(sent)
    heard_text = after[i_start + 2]["transcript"]
    assert text(LONG).startswith(heard_text) and heard_text != text(LONG)
    rec = d.s.response_records[0]
    assert (rec["status"], rec["reason"]) == ("cancelled", "turn_detected")
    assert rec["audio_ms_sent"] == len(sent) / 8
    # the barge-in turn itself is committed and answered
    assert types[i_done + 2:i_done + 5] == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                                            "conversation.item.added"]
    assert d.s.turns[1]["heard"] == "caller_stop"
    assert [r["status"] for r in d.s.response_records] == ["cancelled", "completed"]


def test_no_barge_in_when_interrupt_response_false(drive):
    d, rid, asst = _streaming_session(drive, interrupt=False)
    n = len(d.events)
    d.append(sil(100) + ulaw("caller_stop") + sil(800))
    d.settle()
    after = since(d, n)
    started = d.one("input_audio_buffer.speech_started", after)
    [done] = d.of("response.done", after)
    assert d.time_of(started) < d.time_of(done)
    assert done["response"]["id"] == rid and done["response"]["status"] == "completed"
    assert audio_of(d.events, rid) == fixture_audio(LONG, "pcmu")
    # the turn ended while the reply was still streaming: no second response
    assert d.s.turns[1]["response_skipped"] == "active response"
    assert [r["status"] for r in d.s.response_records] == ["completed"]
    assert d.errors() == []


def test_response_cancel_by_client(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 100), replies=(LONG,), seed=6))
    configure(d)
    greet(d)
    d.advance_ms(20 + 100 + 40)  # created, think, three deltas (0, 20, 40 ms)
    assert len(d.of("response.output_audio.delta")) == 3
    rid = d.one("response.created")["response"]["id"]
    out = d.send({"type": "response.cancel", "event_id": "cancel_1"})
    assert d.types(out) == ["response.output_audio.done", "response.output_audio_transcript.done",
                            "response.content_part.done", "response.output_item.done", "conversation.item.done",
                            "response.done", "rate_limits.updated"]
    assert out[5]["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert out[5]["response"]["id"] == rid
    assert d.settle() == []
    assert len(audio_of(d.events)) == 3 * 800
    # cancelling again: nothing active -> error, and the session goes on
    out = d.send({"type": "response.cancel", "event_id": "cancel_2"})
    assert d.errors(out) == [err("response_cancel_not_active", "Cancellation failed: no active response found",
                                 "cancel_2")]
    greet(d)
    d.settle()
    assert [r["status"] for r in d.s.response_records] == ["cancelled", "completed"]


def test_response_cancel_while_thinking_and_before_created(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 300), seed=6))
    configure(d)
    greet(d)
    d.advance_ms(100)  # response.created went out, still thinking
    out = d.send({"type": "response.cancel"})
    assert d.types(out) == ["response.done", "rate_limits.updated"]
    assert out[0]["response"]["output"] == [] and out[0]["response"]["status"] == "cancelled"
    assert d.settle() == []
    # cancelled before response.created even went out: created, then done
    greet(d)
    out = d.send({"type": "response.cancel"})
    assert d.types(out) == ["response.created", "response.done", "rate_limits.updated"]
    assert out[0]["response"]["id"] == out[1]["response"]["id"]
    assert d.settle() == []
    assert d.of("response.output_audio.delta") == []


def test_cancel_idle_wrong_id_and_second_create(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 100), seed=6))
    configure(d)
    out = d.send({"type": "response.cancel", "event_id": "c0"})
    assert d.errors(out) == [err("response_cancel_not_active", "Cancellation failed: no active response found", "c0")]
    greet(d)
    d.advance_ms(50)
    rid = d.one("response.created")["response"]["id"]
    out = d.send({"type": "response.cancel", "event_id": "c1", "response_id": "resp_notTheActiveOne12345"})
    assert d.errors(out)[0]["code"] == "response_cancel_not_active"
    out = d.send({"type": "response.create", "event_id": "rc2"})
    assert d.errors(out) == [err("conversation_already_has_active_response",
                                 f"Conversation already has an active response in progress: {rid}. "
                                 "Wait until the response is finished before creating a new one.", "rc2")]
    d.settle()
    # the first response was not disturbed, and the rejected one never existed
    assert [(r["id"], r["status"]) for r in d.s.response_records] == [(rid, "completed")]
    assert audio_of(d.events) == fixture_audio(SHORT, "pcmu")
    assert len(d.of("response.created")) == 1


# ============================================================ 5. truncate


def _truncate(d: Driver, item_id: str, ms: int, eid: str) -> list[dict[str, Any]]:
    return d.send({"type": "conversation.item.truncate", "event_id": eid, "item_id": item_id,
                   "content_index": 0, "audio_end_ms": ms})


@pytest.mark.parametrize("clamp", [False, True])
def test_truncate(drive, clamp):
    d = drive(Behaviour(think=ThinkTime("fixed", 100), seed=9, clamp_truncate_after_error=clamp))
    configure(d)
    user_out = greet(d)
    user_item = user_out[0]["item"]["id"]
    d.advance_ms(20 + 100 + 40)  # three 100 ms deltas sent
    asst = d.one("response.output_item.added")["item"]["id"]

    out = _truncate(d, user_item, 0, "t_user")
    assert d.errors(out) == [err("unsupported_content_type", "Only model output audio messages can be truncated",
                                 "t_user")]
    out = _truncate(d, "item_doesNotExist12345678", 10, "t_unknown")
    assert d.errors(out) == [err("item_not_found", "Item with item_id not found: item_doesNotExist12345678",
                                 "t_unknown", "item_id")]
    # mid-stream: X is what has been sent so far (300 ms), not the item's full length
    out = _truncate(d, asst, 301, "t_long")
    assert d.errors(out) == [err("invalid_value", "Audio content of 300ms is already shorter than 301ms", "t_long",
                                 "audio_end_ms")]
    if clamp:  # ... then the clamped truncate some real traces show
        assert d.types(out) == ["error", "conversation.item.truncated"]
        assert {k: v for k, v in out[1].items() if k != "event_id"} == {
            "type": "conversation.item.truncated", "item_id": asst, "content_index": 0, "audio_end_ms": 300}
    else:
        assert d.types(out) == ["error"]
    d.advance_ms(20)  # one more delta: 400 ms
    out = _truncate(d, asst, 401, "t_long2")
    assert d.errors(out)[0]["message"] == "Audio content of 400ms is already shorter than 401ms"
    assert d.types(out) == (["error", "conversation.item.truncated"] if clamp else ["error"])
    d.settle()
    # all sent: 19077 bytes = 2384.625 ms -> X = int(2384.625) = 2384
    total = len(fixture_audio(SHORT, "pcmu")) / 8
    assert int(total) == 2384 and total != int(total)
    out = _truncate(d, asst, 2385, "t_long3")
    assert d.errors(out)[0]["message"] == "Audio content of 2384ms is already shorter than 2385ms"
    if clamp:
        assert d.of("conversation.item.truncated", out)[0]["audio_end_ms"] == 2384
    # a valid truncate: the same fields back, and the unheard transcript is dropped
    out = _truncate(d, asst, 1000, "t_ok")
    assert d.types(out) == ["conversation.item.truncated"]
    assert {k: v for k, v in out[0].items() if k != "event_id"} == {
        "type": "conversation.item.truncated", "item_id": asst, "content_index": 0, "audio_end_ms": 1000}
    out = d.send({"type": "conversation.item.retrieve", "item_id": asst})
    assert out[0]["item"]["content"] == [{"type": "output_audio", "transcript": "Sure, I can"}]  # 1000/2384 of it

    recs = [{k: r.get(k) for k in ("item_id", "audio_end_ms", "accepted", "error", "clamped_to_ms")}
            for r in d.s.truncates]
    c = (lambda x: x) if clamp else (lambda x: None)
    assert recs == [
        {"item_id": user_item, "audio_end_ms": 0, "accepted": False, "error": "unsupported_content_type",
         "clamped_to_ms": None},
        {"item_id": "item_doesNotExist12345678", "audio_end_ms": 10, "accepted": False, "error": "item_not_found",
         "clamped_to_ms": None},
        {"item_id": asst, "audio_end_ms": 301, "accepted": False, "error": "audio_too_short", "clamped_to_ms": c(300)},
        {"item_id": asst, "audio_end_ms": 401, "accepted": False, "error": "audio_too_short", "clamped_to_ms": c(400)},
        {"item_id": asst, "audio_end_ms": 2385, "accepted": False, "error": "audio_too_short",
         "clamped_to_ms": c(2384)},
        {"item_id": asst, "audio_end_ms": 1000, "accepted": True, "error": None, "clamped_to_ms": None},
    ]
    assert [r["audio_sent_ms"] for r in d.s.truncates[2:]] == [300, 400, 2384.625, 2384.625]
    assert [r["t_ns"] for r in d.s.truncates] == sorted(r["t_ns"] for r in d.s.truncates)
    assert d.s.truncates[0]["t_ns"] > T0


def test_truncate_function_call_item_is_unsupported(drive):
    tool = ToolCall("lookup", {"q": 1})
    d = drive(Behaviour(think=ThinkTime("fixed", 0), rules=(Rule("caller_stop", tool=tool),), seed=10))
    configure(d, turn_detection=None, tools=declared("lookup"))
    d.append(ulaw("caller_stop"))
    d.send({"type": "input_audio_buffer.commit"})
    d.send({"type": "response.create"})
    d.settle()
    fc = d.one("response.output_item.added")["item"]["id"]
    out = _truncate(d, fc, 0, "t_fc")
    assert d.errors(out) == [err("unsupported_content_type", "Only model output audio messages can be truncated",
                                 "t_fc")]



# ============================================================ 6. manual buffer


def test_manual_commit_and_clear(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 50), seed=12))
    configure(d, turn_detection=None)
    d.append(ulaw("caller_greeting")[:80 * 8])  # 80 ms
    out = d.send({"type": "input_audio_buffer.commit", "event_id": "commit_1"})
    assert d.errors(out) == [err("input_audio_buffer_commit_empty",
                                 "Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                                 "audio, but buffer only has 80.00ms of audio.", "commit_1")]
    # the buffer was kept: 20 ms more make the minimum
    d.append(sil(MIN_COMMIT_MS - 80))
    out = d.send({"type": "input_audio_buffer.commit", "event_id": "commit_2"})
    assert d.types(out) == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    assert out[0]["previous_item_id"] is None and out[1]["item"]["id"] == out[0]["item_id"]
    assert d.s.turns[0]["audio_ms"] == 100.0 and d.s.turns[0]["manual"] is True
    assert d.advance_ms(5000) == []  # no response without response.create
    assert d.s.response is None and d.s.response_records == []

    d.append(ulaw("caller_greeting"))  # speech, but VAD is off: no VAD events
    assert d.of("input_audio_buffer.speech_started") == []
    out = d.send({"type": "input_audio_buffer.clear", "event_id": "clear_1"})
    assert d.types(out) == ["input_audio_buffer.cleared"]
    out = d.send({"type": "input_audio_buffer.commit", "event_id": "commit_3"})
    assert d.errors(out)[0]["message"].endswith("but buffer only has 0.00ms of audio.")
    assert d.errors(out)[0]["event_id"] == "commit_3"

    # a whole fixture, committed by hand, is recognised; response.create answers it
    d.append(ulaw("caller_greeting"))
    out = d.send({"type": "input_audio_buffer.commit"})
    assert out[0]["previous_item_id"] == d.s.turns[0]["item_id"]
    assert d.s.turns[1]["heard"] == "caller_greeting"
    assert d.s.turns[1]["audio_ms"] == len(ulaw("caller_greeting")) / 8
    d.send({"type": "response.create"})
    d.settle()
    assert d.one("response.done")["response"]["status"] == "completed"


# ============================================================ 7. greeting and tool calls


def test_greeting_item_then_response_create(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 150), seed=13))
    configure(d)
    out = greet(d, text_="Greet the caller.")
    assert d.types(out)[:2] == ["conversation.item.added", "conversation.item.done"]
    item = out[0]["item"]
    assert item["role"] == "user" and item["content"] == [{"type": "input_text", "text": "Greet the caller."}]
    assert out[0]["previous_item_id"] is None
    n = len(d.events)
    d.settle()
    ev = d.events[n - len(out) + 2:]
    assert shape(d.types(ev)) == GA_REPLY
    assert d.one("response.output_audio_transcript.done")["transcript"] == text(SHORT)
    assert audio_of(ev) == fixture_audio(SHORT, "pcmu")
    assert d.of("conversation.item.added")[1]["previous_item_id"] == item["id"]


def test_tool_call_then_function_output_then_reply(drive):
    tool = ToolCall("get_weather", {"city": "Paris"}, then=LONG)
    d = drive(Behaviour(think=ThinkTime("fixed", 100), rules=(Rule("caller_weather_question", tool=tool),), seed=14))
    configure(d, tools=declared("get_weather"))
    n = len(d.events)
    d.append(ulaw("caller_weather_question") + sil(800))
    d.settle()
    ev = since(d, n)
    assert d.types(ev)[:5] == GA_USER_TURN
    r = ev[5:]
    types = d.types(r)
    n_args = types.count("response.function_call_arguments.delta")
    assert n_args >= 2
    assert types == (["response.created", "response.output_item.added", "conversation.item.added"]
                     + ["response.function_call_arguments.delta"] * n_args
                     + ["response.function_call_arguments.done", "response.output_item.done",
                        "conversation.item.done", "response.done", "rate_limits.updated"])
    fc = r[1]["item"]
    call_id, fc_id = fc["call_id"], fc["id"]
    assert ID_RE.match(call_id) and call_id.startswith("call_")
    assert fc == {"id": fc_id, "type": "function_call", "status": "in_progress", "name": "get_weather",
                  "call_id": call_id, "arguments": ""}
    args = json.dumps({"city": "Paris"})
    deltas = r[3:3 + n_args]
    assert "".join(e["delta"] for e in deltas) == args
    assert all(e["call_id"] == call_id and e["item_id"] == fc_id for e in deltas)
    done = r[3 + n_args]
    assert (done["arguments"], done["name"], done["call_id"]) == (args, "get_weather", call_id)
    assert json.loads(done["arguments"]) == {"city": "Paris"}
    final = {**fc, "status": "completed", "arguments": args}
    assert r[4 + n_args]["item"] == final
    resp = r[6 + n_args]["response"]
    assert resp["status"] == "completed" and resp["output"] == [final]
    assert d.of("response.output_audio.delta") == []
    assert d.s.response_records[0]["reply"] == "tool:get_weather"

    # the client runs the tool, sends its output and asks for a response
    out = d.send({"type": "conversation.item.create",
                  "item": {"type": "function_call_output", "call_id": call_id, "output": '{"temp_c": 18}'}})
    assert d.types(out) == ["conversation.item.added", "conversation.item.done"]
    assert out[0]["previous_item_id"] == fc_id
    assert out[0]["item"] == {"id": out[0]["item"]["id"], "type": "function_call_output", "call_id": call_id,
                              "output": '{"temp_c": 18}'}
    n = len(d.events)
    d.send({"type": "response.create"})
    d.settle()
    ev = since(d, n)
    assert shape(d.types(ev)) == GA_REPLY
    assert d.one("response.output_audio_transcript.done", ev)["transcript"] == text(LONG)
    assert audio_of(ev) == fixture_audio(LONG, "pcmu")
    assert d.s.response_records[1]["reply"] == LONG


def _text_item(d: Driver, txt: str, **kw: Any) -> list[dict[str, Any]]:
    return d.send({"type": "conversation.item.create", **kw,
                   "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": txt}]}})


def test_item_create_previous_item_id(drive):
    d = drive()
    a = _text_item(d, "a")[0]
    b = _text_item(d, "b")[0]
    assert (a["previous_item_id"], b["previous_item_id"]) == (None, a["item"]["id"])
    A, B = a["item"]["id"], b["item"]["id"]
    # inserted after A (mid-conversation): reported after A, and placed there
    c = _text_item(d, "c", previous_item_id=A)
    assert d.types(c) == ["conversation.item.added", "conversation.item.done"]
    assert c[0]["previous_item_id"] == c[1]["previous_item_id"] == A
    C = c[0]["item"]["id"]
    # "root": the start of the conversation
    r = _text_item(d, "r", previous_item_id="root")
    assert r[0]["previous_item_id"] is None
    R = r[0]["item"]["id"]
    assert d.s.order == [R, A, C, B]
    # appending again follows the last item, B
    e = _text_item(d, "e")
    assert e[0]["previous_item_id"] == B
    out = _text_item(d, "x", event_id="prev_bad", previous_item_id="item_notThere123456789012")
    assert d.errors(out) == [err("item_not_found", "Item with item_id not found: item_notThere123456789012",
                                 "prev_bad", "previous_item_id")]


def test_conversation_stays_bounded_whatever_adds_the_items(drive, monkeypatch):
    from callsim.simulator.mock import session as session_mod

    monkeypatch.setattr(session_mod, "MAX_ITEMS", 10)
    d = drive(Behaviour(think=ThinkTime("fixed", 0), seed=40))
    configure(d)
    for _ in range(12):  # each round: a user item and an assistant item
        greet(d)
        d.advance_ms(20)
        d.send({"type": "response.cancel"})
    assert len(d.s.order) == 10 and set(d.s.items) == set(d.s.order)
    assert len(d.of("response.output_item.added")) == 12


# ============================================================ 8. reply scripting, transcription


def test_replies_in_turn_last_repeats(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 0), replies=(SHORT, LONG), seed=15))
    configure(d, turn_detection=None)
    for _ in range(3):
        d.append(ulaw("caller_stop"))
        d.send({"type": "input_audio_buffer.commit"})
        d.send({"type": "response.create"})
        d.settle()
    assert [r["reply"] for r in d.s.response_records] == [SHORT, LONG, LONG]
    assert [e["transcript"] for e in d.of("response.output_audio_transcript.done")] == [text(SHORT), text(LONG),
                                                                                       text(LONG)]


def test_rules_keyed_on_the_recognised_fixture(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 50), replies=(LONG,),
                        rules=(Rule("caller_stop", reply=SHORT),), seed=16))
    configure(d)
    for name in ("caller_stop", "caller_greeting", "caller_stop"):
        d.append(ulaw(name) + sil(800))
        d.settle()
    assert [t["heard"] for t in d.s.turns] == ["caller_stop", "caller_greeting", "caller_stop"]
    assert all(t["score"] >= 0.8 for t in d.s.turns)
    assert [r["reply"] for r in d.s.response_records] == [SHORT, LONG, SHORT]
    assert [r["trigger"] for r in d.s.response_records] == ["vad"] * 3
    assert [e["transcript"] for e in d.of("response.output_audio_transcript.done")] == [text(SHORT), text(LONG),
                                                                                       text(SHORT)]
    # and the other way round
    d = drive(Behaviour(think=ThinkTime("fixed", 50), replies=(SHORT,),
                        rules=(Rule("caller_greeting", reply=LONG),), seed=16))
    configure(d)
    for name in ("caller_greeting", "caller_stop"):
        d.append(ulaw(name) + sil(800))
        d.settle()
    assert [r["reply"] for r in d.s.response_records] == [LONG, SHORT]


def test_input_transcription_of_a_recognised_fixture(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 500), seed=17))
    sess = configure(d, transcription={"model": "gpt-4o-mini-transcribe"})
    assert sess["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe", "language": None,
                                                       "prompt": None}
    d.append(ulaw("caller_weather_question") + sil(800))
    d.settle()
    committed = d.one("input_audio_buffer.committed")
    item_id = committed["item_id"]
    tdeltas = d.of("conversation.item.input_audio_transcription.delta")
    completed = d.one("conversation.item.input_audio_transcription.completed")
    want = text("caller_weather_question")
    assert len(tdeltas) == 2 and "".join(e["delta"] for e in tdeltas) == want
    assert all(e["item_id"] == item_id and e["content_index"] == 0 for e in tdeltas)
    assert completed["transcript"] == want and completed["item_id"] == item_id
    assert completed["usage"] == {"type": "duration", "seconds": d.s.turns[0]["audio_ms"] / 1000}
    assert d.time_of(completed) == d.time_of(committed) + 150 * MS  # transcription_delay_ms
    # asynchronous: it lands between response.created and the first audio (think 500 ms)
    types = d.types()
    assert types.index("response.created") < types.index("conversation.item.input_audio_transcription.completed") \
        < types.index("response.output_audio.delta")
    out = d.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert out[0]["type"] == "conversation.item.retrieved"
    assert out[0]["item"]["content"] == [{"type": "input_audio", "transcript": want}]


def test_unrecognised_audio_gets_placeholder_text(drive):
    # another voice (an assistant fixture) through VAD
    d = drive(Behaviour(think=ThinkTime("fixed", 50), rules=(Rule("caller_stop", reply=LONG),), seed=18))
    configure(d, transcription={"model": "whisper-1"})
    d.append(ulaw(SHORT) + sil(800))
    d.settle()
    assert d.s.turns[0]["heard"] is None
    ms = d.s.turns[0]["audio_ms"]
    completed = d.one("conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == f"[unrecognised caller audio, {ms / 1000:.1f} s]"
    assert completed["transcript"].startswith("[unrecognised")
    assert d.s.response_records[0]["reply"] == SHORT  # no rule matched: the default reply

    # a 1 kHz tone, committed by hand (the VAD does not take tones for speech)
    d = drive(Behaviour(seed=18))
    configure(d, turn_detection=None, transcription={"model": "whisper-1"})
    t = np.arange(8000 * 1.5) / 8000
    tone = encode("pcmu", (0.3 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16), 8000)
    d.append(tone)
    d.send({"type": "input_audio_buffer.commit"})
    d.settle()
    assert d.s.turns[0]["heard"] is None
    assert d.one("conversation.item.input_audio_transcription.completed")["transcript"] == \
        "[unrecognised caller audio, 1.5 s]"


# ============================================================ 9. echo


@pytest.mark.parametrize("out_fmt", ["pcmu", "pcm16"])
def test_echo_mode_replies_with_the_committed_turn(drive, out_fmt):
    d = drive(Behaviour(echo=True, think=ThinkTime("fixed", 50), seed=19))
    configure(d, fmt_out=PCMU if out_fmt == "pcmu" else PCM)
    sent = sil(700) + ulaw("caller_greeting") + sil(800)
    d.append(sent)
    d.settle()
    started = d.one("input_audio_buffer.speech_started")
    stopped = d.one("input_audio_buffer.speech_stopped")
    a, b = started["audio_start_ms"], stopped["audio_end_ms"]
    assert a > 0
    turn_bytes = sent[a * 8:b * 8]
    echoed = audio_of(d.events)
    if out_fmt == "pcmu":
        assert echoed == turn_bytes  # byte for byte: no codec touched it
    else:
        assert len(echoed) == 6 * len(turn_bytes)  # 8 kHz μ-law -> 24 kHz 16-bit: same duration
        assert len(echoed) / 48 == b - a
        assert echoed == encode("pcm16", decode("pcmu", turn_bytes), 8000)
    assert d.s.response_records[0]["reply"] == "echo"
    assert d.one("response.done")["response"]["status"] == "completed"


# ============================================================ 10. dialects


BETA_UPDATE = {"type": "session.update", "session": {
    "modalities": ["text", "audio"], "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
    "voice": "alloy", "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}


def test_beta_server_speaks_beta(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 100), seed=20), dialect="beta")
    out = d.send(BETA_UPDATE)
    assert d.types(out) == ["session.updated"]
    s = out[0]["session"]
    assert (s["input_audio_format"], s["output_audio_format"]) == ("g711_ulaw", "g711_ulaw")
    assert s["turn_detection"] == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                   "silence_duration_ms": 300, "create_response": True, "interrupt_response": True}
    assert "type" not in s
    n = len(d.events)
    d.append(ulaw("caller_greeting") + sil(800))
    d.settle()
    ev = since(d, n)
    assert shape(d.types(ev), BETA_AUDIO_DELTAS) == [
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
        "conversation.item.created", "response.created", "response.output_item.added", "conversation.item.created",
        "response.content_part.added", "DELTAS", "response.audio.done", "response.audio_transcript.done",
        "response.content_part.done", "response.output_item.done", "response.done", "rate_limits.updated"]
    assert not {"conversation.item.added", "conversation.item.done", "response.output_audio.delta"} & set(d.types())
    assert audio_of(ev, delta_type="response.audio.delta") == fixture_audio(SHORT, "pcmu")
    user = d.of("conversation.item.created")[0]["item"]
    assert user["object"] == "realtime.item" and user["role"] == "user"
    resp = d.one("response.done")["response"]
    assert resp["output_audio_format"] == "g711_ulaw" and resp["voice"] == "alloy" and "audio" not in resp
    assert resp["output"][0]["content"] == [{"type": "audio", "transcript": text(SHORT)}]
    assert d.one("response.audio_transcript.done")["transcript"] == text(SHORT)


def test_beta_tool_call_arguments_done_has_no_name(drive):
    tool = ToolCall("get_weather", {"city": "Paris"})
    d = drive(Behaviour(think=ThinkTime("fixed", 0), rules=(Rule("caller_weather_question", tool=tool),), seed=21),
              dialect="beta")
    d.send({"type": "session.update", "session": {"input_audio_format": "g711_ulaw", "turn_detection": None,
                                                  "tools": declared("get_weather")}})
    d.append(ulaw("caller_weather_question"))
    d.send({"type": "input_audio_buffer.commit"})
    d.send({"type": "response.create"})
    d.settle()
    done = d.one("response.function_call_arguments.done")
    assert "name" not in done and done["arguments"] == '{"city": "Paris"}'
    assert d.one("response.output_item.added")["item"]["name"] == "get_weather"
    assert "conversation.item.done" not in d.types()


def test_ga_server_refuses_beta_header(drive):
    d = drive(beta_header=True, open=False)
    out = d.open()
    assert [e["error"] for e in out] == [err("beta_api_shape_disabled",
                                             "The Realtime Beta API is no longer supported. Please use /v1/realtime "
                                             "for the GA API.")]
    assert d.s.close_request == (4000, "beta_api_shape_disabled")
    assert d.send({"type": "response.create"}) == []
    assert d.s.next_deadline_ns() is None


def test_ga_server_refuses_beta_shaped_update(drive):
    d = drive()
    out = d.send(BETA_UPDATE)
    assert [e["error"]["code"] for e in out] == ["beta_api_shape_disabled"]
    assert d.s.close_request == (4000, "beta_api_shape_disabled")
    assert d.send(ga_update()) == []


def test_auto_dialect(drive):
    # header -> beta from the start
    d = drive(dialect="auto", beta_header=True)
    assert d.s.dialect == "beta"
    s = d.events[0]["session"]
    assert "type" not in s and s["input_audio_format"] == "pcm16"
    # no header: GA, until a beta-shaped first update switches to beta
    d = drive(Behaviour(think=ThinkTime("fixed", 0), seed=22), dialect="auto")
    created = d.events[0]["session"]
    assert created["type"] == "realtime"
    out = d.send(BETA_UPDATE)
    assert d.types(out) == ["session.updated"] and d.s.dialect == "beta"
    s = out[0]["session"]
    assert "type" not in s and "audio" not in s
    assert s["id"] == created["id"] and s["input_audio_format"] == "g711_ulaw"
    assert d.s.close_request is None
    greet(d)
    d.settle()
    assert "response.audio.delta" in d.types() and "response.output_audio.delta" not in d.types()
    # once audio flowed, a beta-shaped update is just an invalid GA update
    d = drive(dialect="auto")
    configure(d)
    d.append(sil(100))
    out = d.send(BETA_UPDATE)
    assert d.types(out) == ["error"] and d.s.dialect == "ga" and d.s.close_request is None


# ============================================================ 11. invalid client events


def test_invalid_client_events_then_a_turn_still_works(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 50), seed=23))
    configure(d)
    cases: list[tuple[str | bytes, str, str | None, str | None]] = [
        ("not json", "invalid_json", None, None),
        (b"\x00\x01binary", "invalid_event", None, None),
        ("[1, 2]", "invalid_event", None, None),
        ('{"event_id": "e_notype"}', "invalid_event", "e_notype", None),
        ('{"type": "nope", "event_id": "e_unknown"}', "invalid_value", "e_unknown", "type"),
        ('{"type": "conversation.item.truncate", "event_id": "e_missing", "content_index": 0, "audio_end_ms": 5}',
         "missing_required_parameter", "e_missing", "item_id"),
        ('{"type": "conversation.item.truncate", "event_id": "e_type", "item_id": "x", "content_index": 0,'
         ' "audio_end_ms": "5"}', "invalid_type", "e_type", "audio_end_ms"),
        ('{"type": "input_audio_buffer.append", "event_id": "e_b64", "audio": "!!!not base64"}',
         "invalid_event", "e_b64", "audio"),
        ('{"type": "input_audio_buffer.append", "event_id": "e_noaudio"}', "missing_required_parameter",
         "e_noaudio", "audio"),
        ('{"type": "input_audio_buffer.append", "event_id": "e_int", "audio": 5}', "invalid_type", "e_int", "audio"),
        ('{"type": "response.create", "event_id": "e_extra", "bogus": true}', "unknown_parameter", "e_extra", "bogus"),
        ('{"type": "conversation.item.delete", "event_id": "e_del", "item_id": "item_nope"}', "item_not_found",
         "e_del", "item_id"),
    ]
    for raw, code, eid, param in cases:
        out = d.send(raw)
        assert d.types(out) == ["error"], (raw, out)
        e = out[0]["error"]
        assert (e["type"], e["code"], e["event_id"], e["param"]) == ("invalid_request_error", code, eid, param), raw
        assert e["message"]
    assert d.errors()[0]["message"] == "Invalid event: failed to parse JSON value."
    assert d.errors()[1]["message"] == "Expected a text WebSocket message; binary frames are not supported."
    assert d.errors()[3]["message"] == "The 'type' field is missing."
    assert d.errors()[4]["message"].startswith("Invalid value: 'nope'. Supported values are: 'session.update', ")
    assert d.errors()[5]["message"] == "Missing required parameter: 'item_id'."
    assert d.errors()[6]["message"] == ("Invalid type for 'audio_end_ms': expected an integer, "
                                        "but got a string instead.")
    assert len(d.s.errors_sent) == len(cases)
    assert d.s.counts["appends"] == 0 and d.s.order == []
    # still fully working
    d.append(ulaw("caller_stop") + sil(800))
    d.settle()
    assert d.one("response.done")["response"]["status"] == "completed"
    assert d.s.turns[0]["heard"] == "caller_stop"


# ============================================================ 12. faults


def test_fault_fail_response_nth(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 100), faults=(Fault("fail_response", nth=2),), seed=24))
    configure(d)
    for _ in range(3):
        greet(d)
        d.settle()
    dones = d.of("response.done")
    assert [x["response"]["status"] for x in dones] == ["completed", "failed", "completed"]
    failed = dones[1]["response"]
    assert failed["status_details"] == {"type": "failed",
                                        "error": {"type": "server_error", "code": "injected_failure"}}
    assert failed["output"] == []
    created2 = d.of("response.created")[1]
    assert d.time_of(dones[1]) == d.time_of(created2) + 100 * MS  # fails when the output would start
    assert len(audio_of(d.events)) == 2 * len(fixture_audio(SHORT, "pcmu"))


@pytest.mark.parametrize(("code", "want"), [(None, err(None, errors.server_error()["error"]["message"],
                                                        type_="server_error")),
                                            ("rate_limit_exceeded", err("rate_limit_exceeded", "Injected fault",
                                                                        type_="server_error"))])
def test_fault_error_event(drive, code, want):
    d = drive(Behaviour(faults=(Fault("error", after_ms=500, code=code),), seed=25))
    assert d.s.next_deadline_ns() == T0 + 500 * MS
    assert d.advance_ms(499) == []
    out = d.advance_ms(1)
    assert [e["error"] for e in out] == [want] and d.time_of(out[0]) == T0 + 500 * MS
    assert d.s.close_request is None
    greet(d)
    d.settle()
    assert d.one("response.done")["response"]["status"] == "completed"


def test_fault_expire_mid_response(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 0), replies=(LONG,), faults=(Fault("expire", after_ms=1000),),
                        seed=26))
    configure(d)
    greet(d)
    d.advance_ms(990)
    n_before = len(d.of("response.output_audio.delta"))
    out = d.advance_ms(10)
    assert d.types(out) == ["error"]
    assert out[0]["error"] == err("session_expired", "Your session hit the maximum duration of 60 minutes.")
    assert d.time_of(out[0]) == T0 + 1000 * MS
    assert d.s.close_request == (1000, "session expired")
    assert d.s.next_deadline_ns() is None and d.settle() == []
    assert d.send({"type": "response.create"}) == []
    assert 0 < n_before < len(fixture_audio(LONG, "pcmu")) // 800


def test_fault_slow_start(drive):
    d = drive(Behaviour(faults=(Fault("slow_start", after_ms=700),), seed=27), open=False)
    assert d.open() == []
    assert d.s.next_deadline_ns() == T0 + 700 * MS
    out = d.advance_ms(700)
    assert d.types(out) == ["session.created"] and d.time_of(out[0]) == T0 + 700 * MS


@pytest.mark.parametrize("kind", ["drop", "close", "stall"])
def test_fault_mid_response(drive, kind):
    faults = (Fault(kind, after_ms=50, nth=2),) if kind != "close" else (Fault(kind, after_ms=50, nth=2, code=4001),)
    d = drive(Behaviour(think=ThinkTime("fixed", 100), replies=(LONG,), faults=faults, seed=28))
    configure(d)
    greet(d)
    d.settle()  # response 1 is untouched
    assert d.one("response.done")["response"]["status"] == "completed"
    assert (d.s.abort_request, d.s.close_request, d.s.stalled) == (False, None, False)
    n = len(d.events)
    d.send({"type": "response.create"})
    d.settle()
    ev = since(d, n)
    first = d.of("response.output_audio.delta", ev)[0]
    t_fault = d.time_of(first) + 50 * MS
    # deltas at +0, +20, +40 ms; the fault at +50 stops the rest
    assert len(d.of("response.output_audio.delta", ev)) == 3
    assert max(d.times[n:]) <= t_fault
    assert [(x["t_ns"], x["type"]) for x in d.s.log if x["dir"] == "fault"] == [(t_fault, kind)]
    assert (d.s.abort_request, d.s.close_request, d.s.stalled) == {
        "drop": (True, None, False), "close": (False, (4001, "injected fault"), False),
        "stall": (False, None, True)}[kind]
    assert d.s.next_deadline_ns() is None
    assert d.send({"type": "response.cancel"}) == []
    assert d.advance_ms(10_000) == []
    if kind == "stall":
        assert not d.s.advance(d.t + 1)
    d.s.on_closed(d.t, "abort" if kind == "drop" else "client")
    rec = d.s.response_records[-1]
    assert (rec["status"], rec["reason"], rec["audio_ms_sent"]) == ("incomplete", "connection_closed", 300)


def test_fault_close_default_code(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 0), faults=(Fault("close", after_ms=0, nth=0),), seed=29))
    configure(d)
    greet(d)
    d.settle()
    assert d.s.close_request == (1011, "injected fault")
    assert len(d.of("response.output_audio.delta")) == 1  # the first delta, then the fault at +0


def test_fault_parse_and_applies(drive):
    assert Fault.parse("refuse:status=429") == Fault("refuse", status=429)
    assert Fault.parse("drop:after_ms=500,nth=2") == Fault("drop", after_ms=500.0, nth=2)
    assert Fault.parse("expire:after_s=2.5") == Fault("expire", after_ms=2500.0)
    assert Fault.parse("close:code=4001") == Fault("close", code=4001)
    assert Fault.parse("error:code=rate_limit_exceeded,after_ms=10") == Fault("error", after_ms=10.0,
                                                                              code="rate_limit_exceeded")
    assert Fault.parse("stall: sessions=1+3 , prob=0.5") == Fault("stall", sessions=(1, 3), prob=0.5)
    assert Fault.parse("slow_start") == Fault("slow_start")
    for bad in ("bogus", "drop:after_ms", "drop:speed=2", "drop:nth=x"):
        with pytest.raises(ValueError):
            Fault.parse(bad)

    only = Fault("drop", sessions=(2, 4))
    assert [only.applies(i, random.Random(0)) for i in range(1, 6)] == [False, True, False, True, False]
    half = Fault("drop", prob=0.5)
    a = [half.applies(1, random.Random(f"s{i}")) for i in range(400)]
    b = [half.applies(1, random.Random(f"s{i}")) for i in range(400)]
    assert a == b and 140 < sum(a) < 260
    # through sessions: which ones a seeded fault hits is reproducible per (seed, index)
    beh = Behaviour(faults=(Fault("drop", prob=0.5), Fault("stall", sessions=(3,))), seed=77)

    def hit(i: int) -> tuple[str, ...]:
        return tuple(f.kind for f in drive(beh, index=i, open=False).s.faults)

    first = [hit(i) for i in range(1, 21)]
    assert first == [hit(i) for i in range(1, 21)]
    assert {"drop" in h for h in first} == {True, False}
    assert [("stall" in h) for h in first] == [i == 3 for i in range(1, 21)]


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
    _truncate(d, asst, 1000, "t1")
    _truncate(d, asst, 99_999, "t2")
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
