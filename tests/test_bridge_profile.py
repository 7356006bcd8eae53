"""The bridge profile, its lints and the truncate diagnosis (simulator/measure/bridge_profile.py).

Two kinds of evidence: real calls (the barge_in scenario through our bridge and
through a broken one that counts audio as heard when sent), run once per
module; and synthetic calls, where a test plays the bridge against the real
sans-IO caller core and the real sans-IO mock session at chosen times, so each
way of getting ``audio_end_ms`` wrong is produced on purpose and must be named.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest
import trio
from callsim.simulator.audio.utterances import UtteranceBank
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.core import FRAME_NS, CallerConfig, CallerCore
from callsim.simulator.caller.script import Pause, Say
from callsim.simulator.caller.sids import make_sid
from callsim.simulator.measure.bridge_profile import (
    BridgeProfile,
    Varies,
    diagnose_truncate,
    merge_profiles,
    profile_call,
)
from callsim.simulator.measure.measurements import BargeInMetrics
from callsim.simulator.measure.truncate_diagnosis import explain_truncate
from callsim.simulator.mock.session import MockSession
from callsim.simulator.runner import run_embedded
from callsim.simulator.scenario import find_scenario

MS = 1_000_000
T0 = 50_000_000_000
_rng = random.Random(7)
IDENT = tw.StreamIdentity(make_sid("AC", _rng), make_sid("CA", _rng), make_sid("MZ", _rng))
BANK = UtteranceBank()
DELTA = bytes(i % 100 for i in range(800))  # 100 ms of loud μ-law (never 0xFF, the silence byte)

GA_PCMU = {"type": "realtime", "audio": {
    "input": {"format": {"type": "audio/pcmu"},
              "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
    "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
    "instructions": "Be brief.", "tools": [{"type": "function", "name": "get_weather", "parameters": {}}]}


# ================================================================ helpers


def media(payload: bytes = DELTA) -> str:
    return json.dumps({"event": "media", "streamSid": IDENT.stream_sid,
                       "media": {"payload": base64.b64encode(payload).decode()}})


def mark(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": IDENT.stream_sid, "mark": {"name": name}})


def clear() -> str:
    return json.dumps({"event": "clear", "streamSid": IDENT.stream_sid})


def run_call(app: list[tuple[float, str]], until_ms: int, script: list | None = None) -> CallerCore:
    """Play a bridge: ``app`` = (ms after the stream start, message) fed to a real caller core,
    whose 20 ms ticks run exactly on the grid."""
    core = CallerCore(CallerConfig(IDENT), script or [Pause(until_ms + 1000)], BANK)
    core.begin(T0)
    pending = sorted(app, key=lambda x: x[0])
    for k in range(until_ms // 20 + 1):
        t = T0 + k * FRAME_NS
        while pending and T0 + int(pending[0][0] * MS) <= t:
            at, msg = pending.pop(0)
            core.receive(T0 + int(at * MS), msg)
        core.advance(t)
    return core


def reply(at_ms: float, deltas: int, mark_after: set[int] | None = None, tag: str = "r",
          same_name: bool = False) -> list[tuple[float, str]]:
    """A reply forwarded all at once (faster than real time), a mark after the deltas in ``mark_after``
    (1-based; None = after every delta), each named apart unless ``same_name``."""
    out: list[tuple[float, str]] = []
    for i in range(1, deltas + 1):
        out.append((at_ms, media()))
        if mark_after is None or i in mark_after:
            out.append((at_ms, mark(tag if same_name else f"{tag}{i}")))
    return out


def heard_ms(core: CallerCore, from_ms: float, until_ms: float) -> float:
    """App audio played by ticks in [from, until)."""
    return sum(b for k, b in enumerate(core.played_bytes) if from_ms <= k * 20 < until_ms) / 8


def mock_snapshot(update: dict[str, Any] | None = GA_PCMU, *, first_audio_ms: float = 50.0,
                  truncate: tuple[float, int] | None = None, **over: Any) -> dict[str, Any]:
    """A real mock session's snapshot after the bridge's session.update (if any); a response
    whose item started streaming at ``first_audio_ms``; the truncate (ms, audio_end_ms)."""
    s = MockSession(dialect="ga")
    s.open(T0 - 200 * MS)
    if update is not None:
        s.receive(T0 - 100 * MS, json.dumps({"type": "session.update", "session": update}))
    snap = s.snapshot(full=True)
    snap["responses"] = [{"id": "resp_1", "trigger": "vad", "item_ids": ["item_1"], "audio_ms_sent": 2000.0,
                          "t_first_audio_ns": T0 + int((first_audio_ms - 1) * MS)}]
    if truncate is not None:
        snap["truncates"] = [{"t_ns": T0 + int(truncate[0] * MS), "item_id": "item_1",
                              "audio_end_ms": truncate[1], "accepted": True, "audio_sent_ms": 2000.0}]
    snap.update(over)
    return snap


def barge(core: CallerCore, snap: dict[str, Any], *, reply_ms: float, clear_ms: float) -> BargeInMetrics:
    tr = snap["truncates"][0]
    b = BargeInMetrics(onset_ns=T0 + int(clear_ms * MS), fixture="caller_stop", clear_ns=T0 + int(clear_ms * MS),
                       heard_ms=heard_ms(core, reply_ms, clear_ms), truncate_audio_end_ms=tr["audio_end_ms"],
                       reply_start_ns=T0 + int(reply_ms * MS), truncate_ns=tr["t_ns"])
    b.truncate_error_ms = abs(b.truncate_audio_end_ms - b.heard_ms)
    return b


def codes(p: BridgeProfile) -> set[str]:
    return {x.code for x in p.lints}


# ============================================================ real calls


@pytest.fixture(scope="module")
def real_calls() -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        good = await run_embedded(find_scenario("barge_in"))
        bad = await run_embedded(find_scenario("barge_in"), hook="tests.broken_bridges:bytes_sent_truncate")
        return {"good": good.calls[0], "bytes_sent": bad.calls[0]}
    return trio.run(go)


def test_real_call_profile_of_our_bridge(real_calls):
    c = real_calls["good"]
    p = profile_call(c.mock_snapshot, c.result.core, c.metrics.barge_ins)
    assert (p.dialect, p.beta_header, p.refused, p.session_updates) == ("ga", False, False, 1)
    assert (p.input_format, p.output_format) == ("audio/pcmu", "audio/pcmu")
    assert p.vad_type == "server_vad" and p.vad["interrupt_response"] is True
    assert set(p.tools) >= {"get_weather"} and p.transcription not in (None, "off")
    assert p.offers == {"tools", "passthrough", "transcription"}
    assert "transcode" in p.missing_reason("transcoding") and "speak first" in p.missing_reason("greeting")
    assert p.missing_reason("tools") == "" and "lookup_order" in p.missing_reason("tools", ["lookup_order"])
    assert p.mark_gap_p50_ms == pytest.approx(100, abs=1)  # our bridge marks every 100 ms delta
    assert (p.barge_ins, p.barge_in_clears) == (1, 1)
    assert [t["cause"] for t in p.truncates] == ["heard"]
    assert p.lints == []
    lines = p.lines()
    assert all(len(x) <= 80 for x in lines) and not any(x.startswith("lint:") for x in lines)
    assert json.loads(json.dumps(p.to_json()))["offers"] == ["passthrough", "tools", "transcription"]


def test_real_call_truncate_from_bytes_sent_is_diagnosed(real_calls):
    c = real_calls["bytes_sent"]
    (b,) = c.metrics.barge_ins
    text = diagnose_truncate(b, c.result.core, c.mock_snapshot)
    assert "counted audio as heard when it was sent" in text, text
    assert text.rstrip(".").endswith("time since the last)")
    good = real_calls["good"]
    assert "nothing to fix" in diagnose_truncate(good.metrics.barge_ins[0], good.result.core, good.mock_snapshot)


def test_without_the_mock_the_openai_side_is_unknown_not_absent(real_calls):
    c = real_calls["good"]
    p = profile_call(None, c.result.core)
    assert p.offers == set() and set(p.caps.values()) == {"unknown"}
    assert all(p.missing_reason(cap).startswith("unknown") for cap in p.caps)
    assert p.dialect is None and p.tools is None and p.lints == []
    assert p.mark_gap_p50_ms == pytest.approx(100, abs=1) and p.barge_in_clears == 1  # the Twilio side is known
    assert any(line.startswith("openai: unknown") for line in p.lines())


def test_merge_shows_what_differs_between_calls(real_calls):
    a = profile_call(real_calls["good"].mock_snapshot, real_calls["good"].result.core)
    b = profile_call(mock_snapshot({**GA_PCMU, "audio": {**GA_PCMU["audio"], "output": {
        "format": {"type": "audio/pcm", "rate": 24000}}}}), None)
    m = merge_profiles([a, b])
    assert m.calls == 2 and m.input_format == "audio/pcmu"
    assert m.output_format == Varies(("audio/pcmu", "audio/pcm"))
    assert m.caps["passthrough"] == "varies" and "passthrough" not in m.offers
    assert "1 of 2 calls" in m.missing_reason("passthrough")
    assert m.to_json()["output_format"] == {"varies": ["audio/pcmu", "audio/pcm"]}
    assert any("audio/pcmu|audio/pcm out" in line for line in m.lines())
    # the values that vary make the audio line longer than 80 columns: it goes on under its label
    audio = [line for line in m.lines() if line.startswith("audio: ")]
    assert len(audio) == 2 and audio[1].startswith("audio: instructions"), m.lines()
    assert all(len(x) <= 80 for x in m.lines()) and not any(x.endswith("…") for x in m.lines())
    assert m.mark_gaps_ms == a.mark_gaps_ms  # pooled: the second call sent no audio
    assert merge_profiles([a]).to_json() == a.to_json()


# ====================================================== synthetic: lints


def test_beta_dialect_is_linted_and_nothing_is_offered():
    s = MockSession(dialect="ga", beta_header=True)
    s.open(T0)
    p = profile_call(s.snapshot(full=True), run_call([], 100))
    assert p.refused and p.dialect == "beta" and p.beta_header is True
    assert "beta_dialect" in codes(p)
    assert p.offers == set()
    assert "refused its dialect" in p.missing_reason("tools")
    shaped = MockSession(dialect="ga")
    shaped.open(T0)
    shaped.receive(T0 + MS, json.dumps({"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}))
    q = profile_call(shaped.snapshot(full=True), None)
    assert q.refused and q.beta_header is False and "beta_dialect" in codes(q)


def test_no_session_update_and_unconverted_pcm16_output_are_linted():
    p = profile_call(mock_snapshot(None), None)
    assert p.session_updates == 0 and "no_session_update" in codes(p)
    assert (p.input_format, p.output_format) == ("audio/pcm", "audio/pcm")
    assert "transcoding" in p.offers and "audio/pcm 24 kHz" in p.missing_reason("passthrough")
    # pcm16 deltas forwarded to Twilio as they came: 6 bytes reach the caller per μ-law byte's worth
    pcm_out = {**GA_PCMU, "audio": {**GA_PCMU["audio"], "output": {"format": {"type": "audio/pcm", "rate": 24000}}}}
    snap = mock_snapshot(pcm_out)
    snap["responses"][0]["audio_ms_sent"] = 100.0
    core = run_call([(50, media(DELTA * 6))], 200)
    p = profile_call(snap, core)
    assert "output_unconverted" in codes(p) and p.audio_out_ratio == pytest.approx(6.0)
    ok = profile_call(mock_snapshot(pcm_out) | {"responses": [{"audio_ms_sent": 600.0}]}, core)
    assert "output_unconverted" not in codes(ok)  # converted: as much audio out as OpenAI sent


def test_vad_that_cuts_callers_off_is_linted():
    update = {**GA_PCMU, "audio": {**GA_PCMU["audio"], "input": {
        "format": {"type": "audio/pcmu"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 200, "threshold": 0.9}}}}
    p = profile_call(mock_snapshot(update), None)
    assert p.vad["silence_duration_ms"] == 200
    assert {"vad_silence_short", "vad_threshold_high"} <= codes(p)
    assert all(len(x.message) <= 66 for x in p.lints)
    assert "vad_silence_short" not in codes(profile_call(mock_snapshot(), None))


def test_no_tools_no_greeting_no_transcription_give_reasons():
    p = profile_call(mock_snapshot({**GA_PCMU, "tools": []}), None)
    assert "tools" not in p.offers and p.missing_reason("tools") == "the bridge declared no tools"
    assert p.missing_reason("transcription") == "the bridge did not turn on input transcription"
    s = MockSession(dialect="ga")
    s.open(T0)
    s.receive(T0 + MS, json.dumps({"type": "session.update", "session": GA_PCMU}))
    s.receive(T0 + 2 * MS, json.dumps({"type": "response.create"}))
    g = profile_call(s.snapshot(full=True), None)
    assert g.greets is True and "greeting" in g.offers and g.missing_reason("greeting") == ""
    with pytest.raises(ValueError):
        g.missing_reason("teleport")


def test_tool_not_declared_is_named():
    snap = mock_snapshot()
    snap["responses"].append({"trigger": "vad", "reply": "tool:lookup_order", "tool_not_declared": True})
    p = profile_call(snap, None)
    assert p.tools_not_declared == ("lookup_order",)
    assert "lookup_order" in p.missing_reason("tools") and "get_weather" in p.missing_reason("tools")


def test_coarse_marks_and_no_clear_on_barge_in_are_linted():
    script = [Pause(300), Say("caller_stop"), Pause(1500)]  # speech starts at 500 ms, mid-reply
    coarse = run_call(reply(50, 20, {5, 10, 15, 20}), 2400, script)
    p = profile_call(mock_snapshot(), coarse)
    assert p.mark_gap_p50_ms == pytest.approx(500) and p.media_per_mark == [5, 5, 5, 5]
    assert (p.barge_ins, p.barge_in_clears) == (1, 0)
    assert {"coarse_marks", "no_clear", "no_truncate"} <= codes(p)
    lines = p.lines()
    assert all(len(x) <= 80 for x in lines) and not any(x.endswith("…") for x in lines), lines
    assert sum(x.startswith("lint: ") for x in lines) == len(p.lints)
    assert all(len(x.message) <= 66 for x in p.lints)  # room for "lint: " and a merged run's " [2/3]"
    fine = run_call(reply(50, 20) + [(520, clear())], 2400, script)
    q = profile_call(None, fine)
    assert (q.barge_ins, q.barge_in_clears) == (1, 1) and q.mark_gap_p50_ms == pytest.approx(100)
    assert not {"coarse_marks", "no_clear"} & codes(q)


def test_openai_errors_and_twilio_warnings_are_summarised():
    s = MockSession(dialect="ga")
    s.open(T0)
    s.receive(T0 + MS, json.dumps({"type": "session.update", "session": GA_PCMU}))
    for i in range(2):
        s.receive(T0 + (2 + i) * MS, json.dumps({"type": "response.cancel"}))
    core = run_call([(50, json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": ""}}))], 100)
    p = profile_call(s.snapshot(full=True), core)
    assert p.openai_errors == {"response_cancel_not_active": 2}
    assert "openai_response_cancel_not_active" in codes(p)
    assert any(c.startswith("twilio_") for c in codes(p))
    assert all(len(x) <= 80 for x in p.lines())


def test_interrupt_response_off_without_cancel_is_linted():
    update = {**GA_PCMU, "audio": {**GA_PCMU["audio"], "input": {
        "format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad", "interrupt_response": False}}}}
    script = [Pause(300), Say("caller_stop"), Pause(1500)]
    core = run_call(reply(50, 20) + [(520, clear())], 2400, script)
    assert "no_cancel" in codes(profile_call(mock_snapshot(update), core))
    assert "no_cancel" not in codes(profile_call(mock_snapshot(), core))


# ============================================ synthetic: truncate diagnosis


def diagnose_case(app: list[tuple[float, str]], clear_ms: float, audio_end: int, *, reply_ms: float = 50,
                  until_ms: int = 2600) -> tuple[str, dict[str, Any], str]:
    core = run_call(app + [(clear_ms, clear())], until_ms)
    snap = mock_snapshot(first_audio_ms=reply_ms, truncate=(clear_ms + 1, audio_end))
    b = barge(core, snap, reply_ms=reply_ms, clear_ms=clear_ms)
    d = explain_truncate(b, core, snap)
    assert d.sentence == diagnose_truncate(b, core, snap)
    return d.cause, d.figures, d.sentence


def test_truncate_at_the_last_mark_with_coarse_marks():
    cause, fig, text = diagnose_case(reply(50, 20, {5, 10, 15, 20}), 1250, 1000)
    assert fig["heard_ms"] == pytest.approx(1200) and fig["mark_ms"] == pytest.approx(1000)
    assert cause == "mark"
    assert "truncated at the last echoed mark; marks come every 500 ms" in text
    assert text.endswith("mark every delta and add the time played since the last echo.")


def test_truncate_at_the_last_mark_with_a_mark_per_delta():
    cause, fig, text = diagnose_case(reply(50, 20), 1250, 1100)
    assert cause == "mark" and fig["mark_gap_ms"] == pytest.approx(100)
    assert "add the time played since the last echo" in text and "every 100 ms" in text


def test_marks_sharing_one_name_are_matched_in_queue_order():
    """The Twilio sample names every mark "responsePart": echoes pair with marks FIFO, not by name."""
    earlier = [(50, media()), (50, mark("responsePart"))]
    cause, fig, text = diagnose_case(earlier + reply(200, 20, tag="responsePart", same_name=True), 1250, 1000,
                                     reply_ms=200)
    assert fig["mark_gap_ms"] == pytest.approx(100) and fig["mark_ms"] == pytest.approx(1000)
    assert cause == "mark"


def test_truncate_from_media_timestamps():
    # deltas forwarded every 150 ms (slower than real time): playback underruns, timestamps run on
    app = [(50 + 150 * i, m) for i in range(12) for m in (media(), mark(f"d{i}"))]
    core = run_call(app, 1100)
    ts = (1000 // 20 * 20) - (50 // 20 * 20)  # latest caller timestamp at the truncate - at the first delta
    cause, fig, text = diagnose_case(app, 1010, ts)
    assert fig["timestamp_ms"] == ts and abs(fig["heard_ms"] - ts) > 100
    assert cause == "timestamps"
    assert "computed from Twilio media timestamps, which count the caller's audio, not what was played" in text
    assert core.timeline  # the same call, replayed


def test_truncate_from_timestamps_not_reset_per_item():
    first = [(50, media()), (50, media()), (50, mark("a"))]
    second = reply(1000, 20, tag="b")
    end = (1580 // 20 * 20) - 40  # since the call's first assistant audio, not this item's
    cause, fig, text = diagnose_case(first + second, 1590, end, reply_ms=1000)
    assert cause == "timestamps_not_reset" and "reset it when item_id changes" in text


def test_truncate_counting_marks_echoed_by_clear():
    cause, fig, text = diagnose_case(reply(50, 20, {5, 10, 15}), 1250, 1500)
    assert cause == "cleared_marks" and "echoed by clear" in text


def test_truncate_that_matches_nothing_says_what_was_seen():
    cause, fig, text = diagnose_case(reply(50, 20), 1250, 1550)
    assert cause is not None and cause == "unknown"
    assert "marks came with every delta" in text and "1200 ms heard" in text
    none = BargeInMetrics(onset_ns=T0, fixture="x", heard_ms=800.0)
    assert "No conversation.item.truncate" in diagnose_truncate(none, None, None)
    neutral = BargeInMetrics(onset_ns=T0, fixture="x", heard_ms=800.0, truncate_audio_end_ms=1300)
    assert "1300" in diagnose_truncate(neutral, None, None) and "800 ms heard" in diagnose_truncate(neutral, None, None)
