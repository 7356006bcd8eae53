"""``MockSession`` driven sans-IO: what the mock says: the greeting, tool calls, scripted replies, transcription, echo.

A fake nanosecond clock, no sockets, no sleeping (see ``Driver`` in conftest.py and the
helpers in session_helpers.py).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from callsim.simulator.mock.audio import decode, encode, fixture_audio
from callsim.simulator.mock.behaviour import Behaviour, Rule, ThinkTime, ToolCall
from callsim.simulator.mock.ids import ID_RE

from .conftest import MS, Driver
from .session_helpers import (
    GA_REPLY,
    GA_USER_TURN,
    LONG,
    PCM,
    PCMU,
    SHORT,
    audio_of,
    configure,
    declared,
    err,
    greet,
    shape,
    sil,
    since,
    text,
    ulaw,
)

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
    from callsim.simulator.mock import conversation

    monkeypatch.setattr(conversation, "MAX_ITEMS", 10)
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
