"""``MockSession`` driven sans-IO: the input audio buffer: a VAD turn in its exact event order, and the manual buffer.

A fake nanosecond clock, no sockets, no sleeping (see ``Driver`` in conftest.py and the
helpers in session_helpers.py).
"""

from __future__ import annotations

import random

from callsim.simulator.mock.audio import fixture_audio
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime
from callsim.simulator.mock.ids import ID_RE
from callsim.simulator.mock.input_audio import MIN_COMMIT_MS

from .conftest import CHUNK_MS, MS, T0
from .session_helpers import (
    GA_AUDIO_DELTAS,
    GA_REPLY,
    GA_USER_TURN,
    LIB,
    PCMU,
    SHORT,
    audio_of,
    configure,
    err,
    shape,
    sil,
    since,
    text,
    ulaw,
)

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
