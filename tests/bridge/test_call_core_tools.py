"""Sans-IO tests of ``callsim.bridge.call.CallCore``: function calls and the saved transcripts.

Driven on a synthetic clock with the hand-written messages and the Twilio playback model of
:mod:`tests.bridge.callcore_kit`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from callsim.bridge.call import (
    RunTool,
    SaveTranscript,
)
from callsim.bridge.realtime import SessionParams

from tests.bridge.callcore_kit import (
    MS,
    WEATHER_TOOL,
    Sim,
    audio_delta,
    b64,
    check_barge_in,
    oa,
    oa_out,
    response_created,
    response_done,
    run_until,
    schedule,
    started_core,
    tool_events,
    transcript_done,
    ulaw,
)

# ============================================================== tools


def output_item(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_tool_call_runs_and_result_then_response_done(dialect: str) -> None:
    core, _ = started_core(SessionParams(dialect=dialect, tools=(WEATHER_TOOL,)))
    core.openai_message(10 * MS, response_created("resp_1"))
    added, done = tool_events("call_1", "fc_1", "get_weather", '{"city": "Paris"}', "resp_1", dialect)
    assert core.openai_message(11 * MS, added) == []
    assert core.openai_message(12 * MS, done) == [RunTool("call_1", "get_weather", '{"city": "Paris"}')]
    assert core.stats["tool_calls"] == 1
    # result first: not yet a response.create (the response is still active)
    assert oa_out(core.tool_result(13 * MS, "call_1", '{"temp_c": 21}')) == [output_item("call_1", '{"temp_c": 21}')]
    assert oa_out(core.openai_message(14 * MS, response_done("resp_1"))) == [{"type": "response.create"}]
    assert core.openai_message(15 * MS, response_done("resp_1")) == []


def test_tool_response_done_then_result() -> None:
    core, _ = started_core()
    core.openai_message(10 * MS, response_created("resp_1"))
    for ev in tool_events("call_1", "fc_1", "get_time", "{}", "resp_1"):
        core.openai_message(11 * MS, ev)
    assert core.openai_message(12 * MS, response_done("resp_1")) == []
    assert oa_out(core.tool_result(13 * MS, "call_1", '"12:00"')) == [output_item("call_1", '"12:00"'),
                                                                      {"type": "response.create"}]
    assert core.tool_result(14 * MS, "call_1", '"again"') == []  # not pending any more
    assert core.tool_result(14 * MS, "call_unknown", '"x"') == []


def test_beta_tool_name_comes_from_output_item_added() -> None:
    core, _ = started_core(SessionParams(dialect="beta"))
    core.openai_message(10 * MS, response_created("resp_1"))
    added, done = tool_events("call_9", "fc_9", "get_time", '{"tz": "UTC"}', "resp_1", "beta")
    assert "name" not in json.loads(done)
    core.openai_message(11 * MS, added)
    assert core.openai_message(12 * MS, done) == [RunTool("call_9", "get_time", '{"tz": "UTC"}')]


@pytest.mark.parametrize("order", ["done_first", "results_first", "interleaved"])
def test_two_parallel_tool_calls_get_one_response_create(order: str) -> None:
    core, _ = started_core()
    core.openai_message(10 * MS, response_created("resp_1"))
    runs = []
    for i, (cid, name) in enumerate((("call_a", "get_time"), ("call_b", "get_weather"))):
        for ev in tool_events(cid, f"fc_{i}", name, "{}", "resp_1"):
            runs += core.openai_message(11 * MS, ev)
    assert runs == [RunTool("call_a", "get_time", "{}"), RunTool("call_b", "get_weather", "{}")]
    steps = {
        "done_first": [("done",), ("res", "call_a"), ("res", "call_b")],
        "results_first": [("res", "call_b"), ("res", "call_a"), ("done",)],
        "interleaved": [("res", "call_a"), ("done",), ("res", "call_b")],
    }[order]
    out: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        t = (20 + i) * MS
        acts = core.openai_message(t, response_done("resp_1")) if step[0] == "done" else \
            core.tool_result(t, step[1], f'"{step[1]}"')
        msgs = oa_out(acts)
        if i < len(steps) - 1:
            assert {"type": "response.create"} not in msgs, (order, i)
        out += msgs
    assert out.count({"type": "response.create"}) == 1
    assert out[-1] == {"type": "response.create"}
    assert output_item("call_a", '"call_a"') in out and output_item("call_b", '"call_b"') in out


# ============================================================== transcripts


def test_caller_and_assistant_transcripts_are_saved() -> None:
    core, _ = started_core()
    acts = core.openai_message(10 * MS, oa("conversation.item.input_audio_transcription.completed",
                                           item_id="item_u1", content_index=0, transcript="Hey, can you hear me?"))
    assert acts == [SaveTranscript("item_u1", "caller", "Hey, can you hear me?")]
    core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    acts = core.openai_message(12 * MS, transcript_done("item_A", "resp_1", "Loud and clear!"))
    assert acts == [SaveTranscript("item_A", "assistant", "Loud and clear!")]
    # a text-only item (no audio) is saved as is
    acts = core.openai_message(13 * MS, transcript_done("item_T", "resp_2", "Text only."))
    assert acts == [SaveTranscript("item_T", "assistant", "Text only.")]


def test_beta_assistant_transcript_name() -> None:
    core, _ = started_core(SessionParams(dialect="beta"))
    acts = core.openai_message(12 * MS, transcript_done("item_A", "resp_1", "Hello there.", "beta"))
    assert acts == [SaveTranscript("item_A", "assistant", "Hello there.")]


def test_assistant_transcript_after_truncate_is_cut() -> None:
    words = " ".join(f"w{i}" for i in range(1, 21))
    sim = Sim(to_twilio_ms=1, echo_ms=2)
    evs = [ev for ev in schedule(n_deltas=10) if "response.done" not in ev[1]]
    T = 102 * MS + 390 * MS  # 20 frames begun = 400 ms of the 1000 received
    run_until(sim, evs, T)
    info = check_barge_in(sim, T, "item_A")
    assert info["truncate"]["audio_end_ms"] == 400
    acts = sim.openai(T + 5 * MS, transcript_done("item_A", "resp_1", words))
    assert acts == [SaveTranscript("item_A", "assistant", "w1 w2 w3 w4 w5 w6 w7 w8", truncated=True,
                                   audio_end_ms=400)]
