"""``MockSession`` driven sans-IO: responses: delta pacing and think time, barge-in and cancel, truncation.

A fake nanosecond clock, no sockets, no sleeping (see ``Driver`` in conftest.py and the
helpers in session_helpers.py).
"""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest
from callsim.simulator.mock.audio import fixture_audio
from callsim.simulator.mock.behaviour import Behaviour, Rule, ThinkTime, ToolCall

from .conftest import MS, T0, Driver
from .session_helpers import (
    LONG,
    PCM,
    PCMU,
    SHORT,
    audio_of,
    configure,
    declared,
    err,
    greet,
    sil,
    since,
    text,
    truncate,
    ulaw,
    until_type,
)

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


@pytest.mark.parametrize("clamp", [False, True])
def test_truncate(drive, clamp):
    d = drive(Behaviour(think=ThinkTime("fixed", 100), seed=9, clamp_truncate_after_error=clamp))
    configure(d)
    user_out = greet(d)
    user_item = user_out[0]["item"]["id"]
    d.advance_ms(20 + 100 + 40)  # three 100 ms deltas sent
    asst = d.one("response.output_item.added")["item"]["id"]

    out = truncate(d, user_item, 0, "t_user")
    assert d.errors(out) == [err("unsupported_content_type", "Only model output audio messages can be truncated",
                                 "t_user")]
    out = truncate(d, "item_doesNotExist12345678", 10, "t_unknown")
    assert d.errors(out) == [err("item_not_found", "Item with item_id not found: item_doesNotExist12345678",
                                 "t_unknown", "item_id")]
    # mid-stream: X is what has been sent so far (300 ms), not the item's full length
    out = truncate(d, asst, 301, "t_long")
    assert d.errors(out) == [err("invalid_value", "Audio content of 300ms is already shorter than 301ms", "t_long",
                                 "audio_end_ms")]
    if clamp:  # ... then the clamped truncate some real traces show
        assert d.types(out) == ["error", "conversation.item.truncated"]
        assert {k: v for k, v in out[1].items() if k != "event_id"} == {
            "type": "conversation.item.truncated", "item_id": asst, "content_index": 0, "audio_end_ms": 300}
    else:
        assert d.types(out) == ["error"]
    d.advance_ms(20)  # one more delta: 400 ms
    out = truncate(d, asst, 401, "t_long2")
    assert d.errors(out)[0]["message"] == "Audio content of 400ms is already shorter than 401ms"
    assert d.types(out) == (["error", "conversation.item.truncated"] if clamp else ["error"])
    d.settle()
    # all sent: 19077 bytes = 2384.625 ms -> X = int(2384.625) = 2384
    total = len(fixture_audio(SHORT, "pcmu")) / 8
    assert int(total) == 2384 and total != int(total)
    out = truncate(d, asst, 2385, "t_long3")
    assert d.errors(out)[0]["message"] == "Audio content of 2384ms is already shorter than 2385ms"
    if clamp:
        assert d.of("conversation.item.truncated", out)[0]["audio_end_ms"] == 2384
    # a valid truncate: the same fields back, and the unheard transcript is dropped
    out = truncate(d, asst, 1000, "t_ok")
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
    out = truncate(d, fc, 0, "t_fc")
    assert d.errors(out) == [err("unsupported_content_type", "Only model output audio messages can be truncated",
                                 "t_fc")]
