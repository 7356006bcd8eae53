"""Every buffer a peer can fill is bounded in bytes, not only in count (issue 18 item 4).

The early-audio buffer held 500 frames whatever their size: 500 payloads of 1 MB
(the stream's message limit) was 477 MB for one connection that had not even
proved it came from our webhook. The same shape — a count bound and no size
bound, or no bound at all — was in the marks pending per item, the items queued
for playback, the transcripts, the tool calls and the remembered cancelled ids.
Each test feeds the core far more than any real call would and checks what it
holds; tracemalloc measures the early buffer in bytes.
"""

from __future__ import annotations

import json
import tracemalloc

from callsim.bridge.call import (
    MAX_EARLY_MS,
    MAX_MEDIA_CHARS,
    MAX_PENDING_MARKS,
    MAX_PENDING_TOOLS,
    MAX_TOOL_ARGS_CHARS,
    CallCore,
    RunTool,
    SaveTranscript,
    ToOpenAI,
)
from callsim.bridge.call_playback import MAX_ITEMS
from callsim.bridge.call_values import MAX_ID_CHARS, MAX_REMEMBERED, MAX_TRANSCRIPT_CHARS
from callsim.bridge.realtime import SessionParams

from tests.bridge.callcore_kit import (
    MS,
    TwilioMsgs,
    audio_delta,
    b64,
    oa,
    oa_out,
    response_created,
    session_updated,
    speech_started,
    started_core,
    transcript_done,
    ulaw,
)


def not_ready_core() -> tuple[CallCore, TwilioMsgs]:
    """Started, OpenAI not configured yet: caller audio goes to the early buffer."""
    core, tw = CallCore(SessionParams()), TwilioMsgs()
    core.twilio_message(0, tw.start())
    return core, tw


def test_the_early_buffer_holds_at_most_ten_seconds_of_audio_in_bytes() -> None:
    core, tw = not_ready_core()
    big = b64(ulaw(8000, 1))  # one second per message: the largest payload still accepted
    assert len(big) <= MAX_MEDIA_CHARS
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(500):  # 500 frames, as before; 500 s of audio
            assert core.twilio_message((10 + i) * MS, tw.media(big)) == []
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    limit = MAX_EARLY_MS * 8  # μ-law bytes
    print(f"early buffer after 500 one-second payloads: {held / 1024:.0f} KiB traced")
    assert held < 2 * limit, held  # the base64 text of 10 s, plus overhead; before: 500 × 10.7 KB = 5.2 MB
    core.openai_opened(600 * MS)
    appends = [json.loads(a.text)["audio"] for a in core.openai_message(601 * MS, session_updated())]
    assert appends == [big] * (limit // 8000)  # the newest 10 s, in order
    assert core.early_dropped == 500 - limit // 8000


def test_a_payload_over_a_second_of_audio_is_a_bad_message() -> None:
    core, tw = not_ready_core()
    huge = b64(ulaw(3 * 2**18, 2))  # 1 MB of base64: what the stream's message limit let through
    assert core.twilio_message(10 * MS, tw.media(huge)) == []
    assert core.stats["twilio_bad"] == 1 and core.stats["frames_in"] == 0
    assert not core._early


def test_a_transcoded_early_buffer_is_bounded_too() -> None:
    from callsim.bridge.codec import Transcoder

    core, tw = CallCore(SessionParams(audio_mode="transcode"), transcoder=Transcoder()), TwilioMsgs()
    core.twilio_message(0, tw.start())
    for i in range(500):  # 500 × 1 s of μ-law → 500 s of pcm16 24 kHz
        core.twilio_message((10 + i) * MS, tw.media(b64(ulaw(8000, 3))))
    held = sum(len(p) for p in core._early) * 3 // 4
    assert held <= MAX_EARLY_MS * 48, held  # 10 s of pcm16 at 24 kHz


def test_pending_marks_per_item_are_bounded() -> None:
    core, _ = started_core()
    for i in range(MAX_PENDING_MARKS + 500):  # tiny deltas, no mark ever echoed
        core.openai_message((10 + i) * MS, audio_delta("item_A", "resp_1", b64(ulaw(3, i))))
    assert len(core.items["item_A"].pending) == MAX_PENDING_MARKS


def test_items_queued_for_playback_are_bounded() -> None:
    core, _ = started_core()
    for i in range(MAX_ITEMS + 20):  # a new item per delta, none ever played out
        core.openai_message((10 + i) * MS, audio_delta(f"item_{i}", "resp_1", b64(ulaw(160, i))))
    assert len(core.queue) == MAX_ITEMS and len(core.items) <= MAX_ITEMS
    assert core.stats["openai_bad"] == 20


def test_transcripts_are_cut_to_a_bound() -> None:
    core, _ = started_core()
    core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160))))
    acts = core.openai_message(11 * MS, transcript_done("item_A", "resp_1", "word " * 200_000))
    (saved,) = [a for a in acts if isinstance(a, SaveTranscript)]
    assert len(saved.text) <= MAX_TRANSCRIPT_CHARS + 2 and len(core.items["item_A"].transcript) == len(saved.text)
    acts = core.openai_message(12 * MS, oa("conversation.item.input_audio_transcription.completed",
                                           item_id="item_U", content_index=0, transcript="x" * 10**6))
    assert len(acts[0].text) <= MAX_TRANSCRIPT_CHARS + 2


def _tool_call(call_id: str, arguments: str) -> str:
    return oa("response.function_call_arguments.done", response_id="resp_1", item_id="item_F", output_index=0,
              call_id=call_id, name="get_weather", arguments=arguments)


def test_oversized_tool_arguments_are_answered_with_an_error_not_run() -> None:
    core, _ = started_core()
    core.openai_message(5 * MS, response_created("resp_1"))
    acts = core.openai_message(10 * MS, _tool_call("call_1", '{"city": "' + "P" * MAX_TOOL_ARGS_CHARS + '"}'))
    assert not [a for a in acts if isinstance(a, RunTool)]
    (out,) = oa_out(acts)
    assert out["item"]["type"] == "function_call_output" and out["item"]["call_id"] == "call_1"
    assert "too long" in json.loads(out["item"]["output"])["error"]
    # the model still gets its next turn once the response is done
    acts = core.openai_message(11 * MS, oa("response.done", response={"id": "resp_1", "status": "completed"}))
    assert [json.loads(a.text)["type"] for a in acts if isinstance(a, ToOpenAI)] == ["response.create"]


def test_tool_calls_running_at_once_are_bounded() -> None:
    core, _ = started_core()
    core.openai_message(5 * MS, response_created("resp_1"))
    runs, refused = 0, 0
    for i in range(MAX_PENDING_TOOLS + 3):
        acts = core.openai_message((10 + i) * MS, _tool_call(f"call_{i}", '{"city": "Paris"}'))
        runs += sum(isinstance(a, RunTool) for a in acts)
        refused += sum("too many" in a.text for a in acts if isinstance(a, ToOpenAI))
    assert (runs, refused) == (MAX_PENDING_TOOLS, 3)


def test_overlong_ids_and_tool_names_are_bad_messages() -> None:
    core, _ = started_core()
    long_id = "item_" + "x" * MAX_ID_CHARS
    for msg in (audio_delta(long_id, "resp_1", b64(ulaw(160))), response_created("r" * (MAX_ID_CHARS + 1)),
                _tool_call("c" * (MAX_ID_CHARS + 1), "{}"),
                oa("response.output_item.added", item={"type": "function_call", "id": "item_F", "name": "n" * 65})):
        assert core.openai_message(10 * MS, msg) == []
    assert core.stats["openai_bad"] == 4 and not core.items and not core._tool_names


def test_remembered_cancelled_responses_items_and_truncates_are_bounded() -> None:
    core, _ = started_core()
    t = 10 * MS
    for i in range(MAX_REMEMBERED + 100):  # a reply, cut off at once by the caller, again and again
        core.openai_message(t, response_created(f"resp_{i}"))
        core.openai_message(t + 1 * MS, audio_delta(f"item_{i}", f"resp_{i}", b64(ulaw(160, i))))
        core.openai_message(t + 5 * MS, speech_started())
        t += 10 * MS
    assert core.stats["barge_ins"] == MAX_REMEMBERED + 100
    assert len(core._dropped_responses) == len(core._dropped_items) == MAX_REMEMBERED
    assert len(core.truncates) == MAX_REMEMBERED
    # the newest are the ones kept: a late delta of the last cancelled response is still dropped
    last = MAX_REMEMBERED + 99
    assert core.openai_message(t, audio_delta(f"item_{last}", f"resp_{last}", b64(ulaw(160)))) == []
