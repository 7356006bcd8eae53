"""Expectations: each one passes, fails with a message carrying the numbers, or is skipped without the mock."""

from __future__ import annotations

import dataclasses

import pytest
from callsim.simulator.measure.expectations import CHECKS, SKIP_NO_MOCK, evaluate, judge
from callsim.simulator.measure.measurements import (
    BargeInMetrics,
    CallMetrics,
    CodecMetrics,
    TurnMetrics,
)
from callsim.simulator.scenario import Expectations, find_scenario

MOCK = {"id": "sess", "close": {"t_ns": 1, "by": "client"}, "truncates": [], "responses": [], "turns": []}


def call(i: int = 0, *, latencies=(600.0,), overheads=None, barge_ins=(), mock=MOCK, **kw) -> CallMetrics:
    kw.setdefault("heard_ms", 5000.0)
    kw.setdefault("end_reason", "hangup")
    c = CallMetrics("scn", i, f"CA{i}", mock=dict(mock) if mock is not None else None, **kw)
    overheads = overheads or [None if v is None else v / 10 for v in latencies]
    c.turns = [TurnMetrics(j, "caller_stop", 0, latency_ms=v, overhead_ms=o)
               for j, (v, o) in enumerate(zip(latencies, overheads))]
    c.barge_ins = list(barge_ins)
    return c


def bi(clear=120.0, talk=140.0, heard=3140.0, end=3130, accepted=True) -> BargeInMetrics:
    return BargeInMetrics(0, "caller_barge_in", clear_ns=None if clear is None else 1, clear_ms=clear,
                          talk_over_ms=talk, heard_ms=heard, truncate_audio_end_ms=end,
                          truncate_error_ms=None if end is None else abs(end - heard), truncate_accepted=accepted)


def one(expect: Expectations, calls, mock_in_loop=True):
    (r,) = evaluate(expect, calls, mock_in_loop=mock_in_loop)
    return r


def test_every_expectation_has_a_check():
    # + openai_session: implicit, checked on every call with the mock in the loop
    assert {f.name for f in dataclasses.fields(Expectations)} | {"openai_session"} == set(CHECKS)


# ---------------------------------------------------------------- latency


def test_turn_latency_p95_pass_and_fail():
    ok = one(Expectations(turn_latency_p95_ms=1500), [call(latencies=[600, 700])])
    assert ok.status == "passed" and ok.measured == pytest.approx(695.0) and ok.limit == 1500
    assert "≤ 1500 ms" in ok.message

    calls = [call(0, latencies=[600, 2310]), call(1, latencies=[500, 550])]
    r = one(Expectations(turn_latency_p95_ms=1500), calls)
    assert r.status == "failed"
    assert r.message.startswith("turn latency p95 2053 ms > 1500 ms: turn 2 took 2310 ms (call 0)")
    assert r.measured == 2053.5
    assert [f["call_index"] for f in r.failures] == [0]


def test_no_reply_fails_latency_whatever_the_p95():
    r = one(Expectations(turn_latency_p95_ms=1500), [call(latencies=[600, None])])
    assert r.status == "failed" and r.message.startswith("no reply to turn 2:")
    r = one(Expectations(turn_latency_p95_ms=1500), [call(latencies=[])])
    assert r.status == "failed" and "finished no turn" in r.message


def test_overhead_p95():
    c = call(latencies=[600, 800], overheads=[90, 400])
    r = one(Expectations(overhead_p95_ms=150), [c])
    assert r.status == "failed" and "bridge overhead p95 384 ms > 150 ms: turn 2 took 400 ms" in r.message
    assert "the bridge's and the transport's share" in r.message
    assert one(Expectations(overhead_p95_ms=500), [c]).status == "passed"
    r = one(Expectations(overhead_p95_ms=500), [call(latencies=[600], overheads=[None])])
    assert r.status == "failed" and "could not be matched" in r.message
    assert one(Expectations(overhead_p95_ms=150), [c], mock_in_loop=False).status == "skipped"


# --------------------------------------------------------------- barge-in


def test_barge_in_clear():
    assert one(Expectations(barge_in_clear_max_ms=500), [call(barge_ins=[bi(clear=120)])]).status == "passed"
    r = one(Expectations(barge_in_clear_max_ms=500), [call(barge_ins=[bi(clear=640)])])
    assert r.status == "failed" and r.measured == 640.0
    assert r.message.startswith("barge-in clear 640 ms > 500 ms")
    calls = [call(1, barge_ins=[bi(clear=100)]), call(2, barge_ins=[bi(clear=None)])]
    r = one(Expectations(barge_in_clear_max_ms=500), calls)
    assert r.message == ("barge-in clear: no clear received after the caller started talking over the assistant "
                         "(call 2) — the bridge must send Twilio a clear on input_audio_buffer.speech_started")
    assert [f["call_index"] for f in r.failures] == [2] and r.measured is None
    r = one(Expectations(barge_in_clear_max_ms=500), [call(barge_ins=[])])
    assert r.status == "failed" and "no barge-in happened" in r.message


def test_talk_over():
    assert one(Expectations(talk_over_max_ms=500), [call(barge_ins=[bi(talk=140)])]).status == "passed"
    r = one(Expectations(talk_over_max_ms=500), [call(barge_ins=[bi(talk=900)])])
    assert r.status == "failed" and r.message.startswith("talk-over 900 ms > 500 ms: the assistant kept playing")


def test_truncate_error():
    assert one(Expectations(truncate_error_max_ms=20), [call(barge_ins=[bi(heard=3140, end=3130)])]).status == "passed"
    r = one(Expectations(truncate_error_max_ms=20), [call(barge_ins=[bi(heard=3140, end=3000)])])
    assert r.status == "failed" and r.measured == 140.0
    assert r.message == ("truncate error 140 ms > 20 ms: the bridge told OpenAI the caller heard 3000 ms but the "
                         "caller heard 3140 ms — compute audio_end_ms from the audio Twilio played (marks and the "
                         "time since the last one), not from what was sent")
    diagnosed = bi(heard=3140, end=3000)
    diagnosed.truncate_cause = "it truncated at the last echoed mark — mark every delta"
    r = one(Expectations(truncate_error_max_ms=20), [call(barge_ins=[diagnosed])])
    assert r.message.endswith("caller heard 3140 ms — it truncated at the last echoed mark — mark every delta")
    r = one(Expectations(truncate_error_max_ms=20), [call(barge_ins=[bi(end=None)])])
    assert r.status == "failed" and r.message.startswith("truncate error: no truncate sent")
    r = one(Expectations(truncate_error_max_ms=20), [call(barge_ins=[bi()], mock=None)])
    assert r.status == "failed" and "no session for this call" in r.message
    r = one(Expectations(truncate_error_max_ms=20), [call(barge_ins=[bi()])], mock_in_loop=False)
    assert r.status == "skipped" and r.message == SKIP_NO_MOCK


def test_no_rejected_truncate():
    good = {**MOCK, "truncates": [{"accepted": True, "audio_end_ms": 3000}]}
    r = one(Expectations(no_rejected_truncate=True), [call(mock=good)])
    assert r.status == "passed" and r.measured == 0 and "1 sent" in r.message
    bad = {**MOCK, "truncates": [{"accepted": False, "audio_end_ms": 5200, "error": "audio_too_short",
                                  "audio_sent_ms": 5000.0}]}
    r = one(Expectations(no_rejected_truncate=True), [call(mock=bad)])
    assert r.status == "failed" and r.measured == 1
    assert "audio_too_short (audio_end_ms 5200 ms, 5000 ms of audio sent for the item)" in r.message
    assert evaluate(Expectations(no_rejected_truncate=False), [call(mock=bad)], mock_in_loop=True) == []


def test_barge_in_count():
    assert one(Expectations(barge_ins=1), [call(barge_ins=[bi()])]).status == "passed"
    r = one(Expectations(barge_ins=1), [call(barge_ins=[])])
    assert r.status == "failed" and r.message.startswith("expected 1 barge-in(s), detected 0")
    assert r.measured == 0


# ------------------------------------------------------------ mock-side


def test_transcript_contains():
    c = call(transcript=["Hello, I'd like some help please.", "What is the weather like in Paris today?"])
    assert one(Expectations(transcript_contains=("help please", "weather LIKE in paris")), [c]).status == "passed"
    r = one(Expectations(transcript_contains=("help please", "tomorrow")), [c])
    assert r.status == "failed" and 'never heard "tomorrow"' in r.message and "Paris today" in r.message
    r = one(Expectations(transcript_contains=("x",)), [call(transcript=[])])
    assert "recognised nothing" in r.message
    assert one(Expectations(transcript_contains=("x",)), [c], mock_in_loop=False).status == "skipped"


def test_tool_called():
    assert one(Expectations(tool_called="get_weather"),
               [call(tools_called=["get_weather"], tools_completed=["get_weather"])]).status == "passed"
    r = one(Expectations(tool_called="get_weather"), [call(tools_called=[])])
    assert r.status == "failed" and "tool get_weather was never called (tools called: none)" in r.message
    r = one(Expectations(tool_called="get_weather"), [call(tools_called=["get_weather"])])
    assert r.status == "failed" and "never answered it" in r.message


def test_transferred_to_is_judged_from_twilio_s_records_and_skipped_without_them():
    desk, child = "+15550009999", {"sid": "CA1", "parent_call_sid": "CA0", "direction": "outbound-dial",
                                   "from": "+15550002222", "to": "+15550009999", "status": "completed"}
    r = one(Expectations(transferred_to=desk), [call(twilio_calls=[child])], mock_in_loop=False)
    assert (r.status, r.measured) == ("passed", desk)
    # measured is what Twilio dialled (the first child call), not the limit repeated
    r = one(Expectations(transferred_to=desk), [call(twilio_calls=[{**child, "to": "+19005550000"}, child])],
            mock_in_loop=False)
    assert (r.status, r.measured) == ("passed", "+19005550000")
    r = one(Expectations(transferred_to=desk), [call(twilio_calls=[])], mock_in_loop=False)
    assert r.status == "failed" and r.message.startswith("the call was never transferred")
    r = one(Expectations(transferred_to=desk), [call(twilio_calls=[{**child, "to": "+19005550000"}])])
    assert r.status == "failed" and "transferred to +19005550000, expected +15550009999" in r.message
    inbound = {**child, "direction": "inbound"}  # not a call Twilio dialled from ours
    assert one(Expectations(transferred_to=desk), [call(twilio_calls=[inbound])]).status == "failed"
    r = one(Expectations(transferred_to=desk), [call()], mock_in_loop=False)  # no records: callsim call
    assert r.status == "skipped" and "callsim dial" in r.message
    # Twilio in the loop but its records unreadable: a transfer nobody could confirm fails, never skips
    r = one(Expectations(transferred_to=desk), [call(twilio_records_error="HTTP 401 Authenticate")],
            mock_in_loop=False)
    assert r.status == "failed" and "could not be confirmed" in r.message and "HTTP 401" in r.message


def test_codec_bit_exact_and_snr():
    exact = call(codec=CodecMetrics(checked=True, bit_exact=True, snr_db=100.0))
    altered = call(codec=CodecMetrics(checked=True, bit_exact=False, snr_db=12.3))
    assert one(Expectations(codec="bit_exact"), [exact]).status == "passed"
    r = one(Expectations(codec="bit_exact"), [altered])
    assert r.message == ("codec: the caller's audio did not come back bit-exact (best SNR 12.3 dB) — "
                         "μ-law passthrough must not re-encode")
    r = one(Expectations(codec="bit_exact"), [call(codec=CodecMetrics(note="not checked: the mock is not in echo mode"))])
    assert r.status == "failed" and "not in echo mode" in r.message
    assert one(Expectations(snr_min_db=30), [exact]).status == "passed"
    r = one(Expectations(snr_min_db=30), [altered])
    assert r.status == "failed" and r.message.startswith("codec: echo SNR 12.3 dB < 30 dB") and r.measured == 12.3
    assert one(Expectations(snr_min_db=30), [altered], mock_in_loop=False).status == "skipped"


def test_openai_closed_within():
    c = call(openai_closed_after_hangup_ms=120.0)
    r = one(Expectations(openai_closed_within_ms=1000), [c])
    assert r.status == "passed" and r.measured == 120.0
    r = one(Expectations(openai_closed_within_ms=1000), [call(openai_closed_after_hangup_ms=5000.0)])
    assert r.status == "failed"
    assert r.message.startswith("OpenAI session closed 5000 ms after the caller hung up > 1000 ms")
    r = one(Expectations(openai_closed_within_ms=1000), [call(mock={**MOCK, "close": None})])
    assert r.status == "failed" and r.message.startswith("OpenAI session still open after the caller hung up")
    r = one(Expectations(openai_closed_within_ms=1000), [c], mock_in_loop=False)
    assert r.status == "skipped" and "callsim mock-openai" in r.message
    # OpenAI closing first is no leak, and is never shown as "closed 0 ms after the hang-up"
    first = call(openai_closed_after_hangup_ms=-15000.0,
                 mock={**MOCK, "close": {"t_ns": 1, "by": "server", "code": 1011, "reason": "drop"}})
    r = one(Expectations(openai_closed_within_ms=1000), [first])
    assert r.status == "passed" and r.measured == -15000.0
    assert r.message == "OpenAI closed the session first, 15000 ms before the call ended (code 1011, drop)"


BETA_CLOSE = {**MOCK, "close": {"t_ns": 1, "by": "server", "code": 4000, "reason": "beta_api_shape_disabled"}}


def test_a_refused_beta_session_fails_by_name_and_nothing_else_is_judged():
    calls = [call(0, mock=BETA_CLOSE, openai_closed_after_hangup_ms=-9000.0), call(1)]
    results = evaluate(Expectations(turn_latency_p95_ms=10, openai_closed_within_ms=1000), calls,
                       mock_in_loop=True, implicit_session_check=True)
    by = {r.name: r for r in results}
    assert [r.name for r in results] == ["openai_session", "turn_latency_p95_ms", "openai_closed_within_ms"]
    assert by["openai_session"].status == "failed"
    assert "retired beta dialect" in by["openai_session"].message and "4000" in by["openai_session"].message
    assert [f["call_index"] for f in by["openai_session"].failures] == [0]
    judge(calls, results)
    assert calls[0].status == "failed"
    assert {e["name"]: e["status"] for e in calls[0].expectations} == {
        "openai_session": "failed", "turn_latency_p95_ms": "skipped", "openai_closed_within_ms": "skipped"}
    assert calls[0].expectations[1]["message"] == "not judged: OpenAI refused the session"
    assert by["turn_latency_p95_ms"].failures[0]["call_index"] == 1  # the other call is judged as usual


def test_dead_air():
    r = one(Expectations(dead_air_max_ms=3000), [call(dead_air_ms=16500.0)])
    assert r.status == "failed" and r.message.startswith("dead air: the caller waited 16500 ms in silence")
    assert one(Expectations(dead_air_max_ms=3000), [call(dead_air_ms=900.0)]).status == "passed"


def test_no_barge_in_says_what_the_caller_heard():
    r = one(Expectations(barge_in_clear_max_ms=500), [call(barge_ins=[], heard_ms=0.0)])
    assert "heard no assistant audio at all" in r.message
    r = one(Expectations(barge_in_clear_max_ms=500), [call(barge_ins=[], heard_ms=2400.0)])
    assert "had stopped before the caller spoke" in r.message and "did the reply come" not in r.message


# ------------------------------------------------------------ caller-side


def test_underruns():
    assert one(Expectations(no_underruns=True), [call(underrun_ms=0.0)]).status == "passed"
    r = one(Expectations(no_underruns=True), [call(underrun_ms=100.0)])
    assert r.status == "failed" and r.message.startswith("underruns: 100 ms of silence inserted inside assistant replies")
    assert r.measured == 100.0
    assert one(Expectations(underrun_max_ms=120), [call(underrun_ms=100.0)]).status == "passed"
    r = one(Expectations(underrun_max_ms=50), [call(underrun_ms=100.0)])
    assert r.status == "failed" and r.message.startswith("underruns 100 ms > 50 ms")
    # caller-side: judged without the mock too
    assert one(Expectations(no_underruns=True), [call(underrun_ms=100.0, mock=None)], mock_in_loop=False).status == "failed"


def test_end_reason():
    assert one(Expectations(end_reason="hangup"), [call()]).status == "passed"
    c = call()
    c.end_reason = "closed_by_app"
    r = one(Expectations(end_reason="hangup"), [c])
    assert r.status == "failed" and r.measured == "closed_by_app"
    assert "the bridge ended the call before the caller was done" in r.message


def test_heard_min_max_and_warnings():
    c = call()
    c.heard_ms = 400.0
    r = one(Expectations(heard_min_ms=7000), [c])
    assert r.status == "failed" and "heard 400 ms of assistant audio, expected at least 7000 ms" in r.message
    assert one(Expectations(heard_max_ms=7000), [c]).status == "passed"
    assert one(Expectations(heard_max_ms=100), [c]).status == "failed"
    w = call(warnings={"31951": 3}, warning_reasons=["media payload is not base64"])
    r = one(Expectations(no_twilio_warnings=True), [w])
    assert r.status == "failed" and "3 message(s) Twilio would reject: 31951 ×3; first: media payload" in r.message
    assert one(Expectations(no_twilio_warnings=True), [call()]).status == "passed"


# ------------------------------------------------------------------ judge


def test_judge_sets_status_and_per_call_expectations():
    calls = [call(0, barge_ins=[bi(clear=100)]), call(1, barge_ins=[bi(clear=None)]),
             CallMetrics("scn", 2, None, status="error", error="stream broke")]
    expect = Expectations(barge_in_clear_max_ms=500, end_reason="hangup", tool_called="x")
    results = evaluate(expect, calls, mock_in_loop=False)
    assert [(r.name, r.status) for r in results] == [
        ("barge_in_clear_max_ms", "failed"), ("tool_called", "skipped"), ("end_reason", "passed")]
    judge(calls, results)
    assert [c.status for c in calls] == ["passed", "failed", "error"]
    e0 = {e["name"]: e for e in calls[0].expectations}
    e1 = {e["name"]: e for e in calls[1].expectations}
    assert e0["barge_in_clear_max_ms"]["status"] == "passed"
    assert e1["barge_in_clear_max_ms"]["status"] == "failed" and "(call 1)" in e1["barge_in_clear_max_ms"]["message"]
    assert e1["tool_called"]["status"] == "skipped" and e1["tool_called"]["message"] == SKIP_NO_MOCK
    assert all(e["status"] == "skipped" for e in calls[2].expectations)


def test_all_calls_errored_skips_everything():
    calls = [CallMetrics("scn", 0, None, status="error", error="refused")]
    (r,) = evaluate(Expectations(heard_min_ms=1), calls, mock_in_loop=True)
    assert r.status == "skipped" and "error" in r.message
    judge(calls, [r])
    assert calls[0].status == "error"


# ------------------------------------------------------------ heard_goodbye


def _goodbye(**kw):
    return evaluate(Expectations(heard_goodbye=True), [call(**kw)], mock_in_loop=True)[0]


def test_heard_goodbye_needs_the_bridge_to_end_the_call():
    r = _goodbye()  # the caller hung up
    assert r.status == "failed" and r.message.startswith("no goodbye: the bridge never ended the call")
    # a bridge hanging up over REST is invisible to Media Streams alone: the message says where it is seen
    assert "REST API" in r.message and "`callsim dial` with `callsim twilio-emulator`" in r.message
    (e,) = evaluate(Expectations(end_reason="closed_by_app"), [call()], mock_in_loop=True)
    assert e.status == "failed" and "`callsim dial` with `callsim twilio-emulator`" in e.message


def test_heard_goodbye_fails_when_the_goodbye_was_still_queued():
    c = call(end_reason="closed_by_app", unheard_at_end_ms=1400.0)
    r = evaluate(Expectations(heard_goodbye=True), [c], mock_in_loop=True)[0]
    assert r.status == "failed" and "1400 ms of its last reply still queued" in r.message and r.measured == 1400.0


def test_heard_goodbye_fails_when_openai_was_closed_before_the_reply_was_sent():
    mock = dict(MOCK, responses=[{"reply": "assistant_goodbye", "audio_ms_sent": 900.0, "audio_ms_total": 3550.0}])
    c = call(end_reason="closed_by_app", mock=mock)
    r = evaluate(Expectations(heard_goodbye=True), [c], mock_in_loop=True)[0]
    assert r.status == "failed" and "at the source" in r.message and "900 of the 3550 ms" in r.message


def test_heard_goodbye_fails_when_openai_was_closed_while_the_goodbye_was_being_prepared():
    """The bridge closes right after the tool's output and response.create: the mock was still thinking, so the
    goodbye has no audio at all (sent 0, total 0) — an earlier reply that played whole must not hide it."""
    mock = dict(MOCK, responses=[
        {"reply": "assistant_answer", "status": "completed", "audio_ms_sent": 2000.0, "audio_ms_total": 2000.0},
        {"reply": "tool:end_call", "status": "completed", "audio_ms_sent": 0.0, "audio_ms_total": 0},
        {"reply": "assistant_goodbye", "status": "incomplete", "reason": "connection_closed",
         "audio_ms_sent": 0.0, "audio_ms_total": 0}])
    c = call(end_reason="closed_by_app", unheard_at_end_ms=0.0, mock=mock)
    r = evaluate(Expectations(heard_goodbye=True), [c], mock_in_loop=True)[0]
    assert r.status == "failed" and "being prepared" in r.message and "connection_closed" in r.message
    # the goodbye sent whole before the close is no cut, even with a tool call after it
    mock["responses"][2].update(status="completed", reason=None, audio_ms_sent=3550.0, audio_ms_total=3550.0)
    mock["responses"].append({"reply": "tool:end_call", "status": "incomplete", "reason": "connection_closed",
                              "audio_ms_sent": 0.0, "audio_ms_total": 0})
    assert evaluate(Expectations(heard_goodbye=True), [c], mock_in_loop=True)[0].status == "passed"


def test_heard_goodbye_passes_when_it_played_whole():
    mock = dict(MOCK, responses=[{"reply": "assistant_goodbye", "audio_ms_sent": 3550.0, "audio_ms_total": 3550.0}])
    c = call(end_reason="closed_by_app", unheard_at_end_ms=20.0, mock=mock)
    r = evaluate(Expectations(heard_goodbye=True), [c], mock_in_loop=True)[0]
    assert r.status == "passed" and "played whole" in r.message
    # without the mock only the caller's side is judged
    r = evaluate(Expectations(heard_goodbye=True), [call(end_reason="closed_by_app", mock=None)], mock_in_loop=False)[0]
    assert r.status == "passed"


# ------------------------------------------------------------ replies_after_last_utterance, dtmf_heard

def test_replies_after_last_utterance_counts_exactly():
    ok = evaluate(Expectations(replies_after_last_utterance=4), [call(replies_after_last_utterance=4)],
                  mock_in_loop=True)[0]
    assert ok.status == "passed" and ok.measured == 4
    dead = evaluate(Expectations(replies_after_last_utterance=4), [call(replies_after_last_utterance=1)],
                    mock_in_loop=True)[0]
    assert dead.status == "failed" and "dead air" in dead.message and dead.measured == 1


def test_replies_after_last_utterance_min_counts_at_least():
    def judged(n):
        return evaluate(Expectations(replies_after_last_utterance_min=3), [call(replies_after_last_utterance=n)],
                        mock_in_loop=True)[0]
    for n in (3, 4, 5):  # one, two or three re-prompts: the count is the bridge's own setting
        assert judged(n).status == "passed" and judged(n).measured == n
    dead = judged(1)
    assert dead.status == "failed" and "dead air" in dead.message and "at least 3" in dead.message
    assert dead.measured == 1
    assert judged(2).status == "failed" and "no re-prompt" in judged(2).message


def test_silent_caller_accepts_any_number_of_re_prompts_but_none():
    """silent_caller is for any bridge: its [bridge] table (our re-prompt count) is never seen by another."""
    expect = dataclasses.replace(find_scenario("silent_caller").expect, heard_goodbye=None, end_reason=None,
                                 dead_air_max_ms=None, no_twilio_warnings=None)
    for n, status in ((3, "passed"), (4, "passed"), (5, "passed"), (2, "failed"), (1, "failed")):
        (r,) = evaluate(expect, [call(replies_after_last_utterance=n)], mock_in_loop=True)
        assert r.status == status, (n, r)


def test_dtmf_heard_compares_the_keys_the_mock_was_told_of():
    def judged(keys, mock_in_loop=True):
        return evaluate(Expectations(dtmf_heard="1#"), [call(mock={**MOCK, "dtmf": keys})],
                        mock_in_loop=mock_in_loop)[0]
    assert judged(["1", "#"]).status == "passed"
    never = judged([])
    assert never.status == "failed" and "never told of a keypress" in never.message
    assert "expected '1#'" in judged(["1"]).message
    assert judged(["1", "#"], mock_in_loop=False).status == "skipped"
