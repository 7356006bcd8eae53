"""Renewal seen from the wire: a call's several mock sessions, the switch-over gap and the caller
audio lost, from the sessions' per-block receive times and CRCs (simulator/measure/renewals.py),
and the merged view pairing gives the rest of the metrics (pairing.merge_sessions)."""

from __future__ import annotations

from array import array
from types import SimpleNamespace

import httpx

from callsim.simulator.measure.expectations import evaluate
from callsim.simulator.measure.bridge_share import attach_mock
from callsim.simulator.measure.measurements import CallMetrics, TurnMetrics
from callsim.simulator.measure.pairing import merge_sessions
from callsim.simulator.measure.renewals import measure_renewals, needs_frame_timings
from callsim.simulator.runner import HttpMock
from callsim.simulator.scenario import Expectations, find_scenario

MS = 1_000_000
T0 = 1_000 * MS


def _core(n: int) -> SimpleNamespace:
    sent = array("q", [T0 + i * 20 * MS for i in range(n)])
    end = sent[-1] + 500 * MS
    return SimpleNamespace(media_sent_ns=sent, media_sent_crc=array("I", [1000 + i for i in range(n)]), t0_ns=T0,
                           timeline=SimpleNamespace(end_ns=lambda: end))


def _session(sid: str, frames: range, delay_ms: float = 1.0, extra: dict | None = None) -> dict:
    return {"id": sid, "t_open_ns": T0 + frames.start * 20 * MS, "block_ns": [T0 + i * 20 * MS + int(delay_ms * MS) for i in frames],
            "block_crc": [1000 + i for i in frames], **(extra or {})}


def test_a_seamless_switch_has_no_gap_and_loses_nothing():
    r = measure_renewals(_core(300), [_session("s1", range(0, 150)), _session("s2", range(150, 300))])
    assert (r.sessions, r.renewals, r.switch_gap_ms, r.caller_audio_lost_ms) == (2, 1, 0.0, 0.0)
    assert r.switches[0]["frames_missing"] == 0 and r.switches[0]["t_ms"] == 3001


def test_frames_dropped_at_the_switch_are_lost_audio_and_gap():
    r = measure_renewals(_core(300), [_session("s1", range(0, 150)), _session("s2", range(165, 300))])
    assert r.caller_audio_lost_ms == 15 * 20
    assert r.switch_gap_ms == 300.0 and r.switches[0]["frames_missing"] == 15


def test_frames_held_then_flushed_count_as_their_delay():
    held = _session("s2", range(150, 300))
    held["block_ns"][:5] = [T0 + 155 * 20 * MS] * 5  # held while it was set up, flushed together
    r = measure_renewals(_core(300), [_session("s1", range(0, 150)), held])
    assert r.caller_audio_lost_ms == 0 and r.switch_gap_ms == 99.0  # frame 150 arrived 100 ms after sending, not 1


def test_expectations_judge_the_renewal():
    r = measure_renewals(_core(300), [_session("s1", range(0, 150)), _session("s2", range(165, 300))])
    c = CallMetrics("long_call", 0, "CA1", renewal=r)
    res = {e.name: e for e in evaluate(Expectations(renewals_min=2, switch_gap_max_ms=20, no_caller_audio_lost=True),
                                       [c], mock_in_loop=True)}
    assert res["renewals_min"].status == "failed" and res["renewals_min"].measured == 1
    assert res["switch_gap_max_ms"].status == "failed" and "15 caller frame(s)" in res["switch_gap_max_ms"].message
    assert res["no_caller_audio_lost"].status == "failed" and res["no_caller_audio_lost"].measured == 300
    ok = measure_renewals(_core(300), [_session("s1", range(0, 150)), _session("s2", range(150, 300))])
    c = CallMetrics("long_call", 0, "CA1", renewal=ok)
    assert all(e.status == "passed" for e in evaluate(
        Expectations(renewals_min=1, switch_gap_max_ms=20, no_caller_audio_lost=True), [c], mock_in_loop=True))
    res = evaluate(Expectations(renewals_min=1), [CallMetrics("x", 0, None)], mock_in_loop=False)
    assert res[0].status == "skipped"  # needs the mock


def test_merged_view_orders_records_and_keeps_the_last_close():
    a = _session("s1", range(0, 10), extra={"turns": [{"item_id": "t1"}], "counts": {"appends": 10},
                                            "close": {"by": "client"}, "behaviour_tag": "x", "open": False})
    b = _session("s2", range(10, 20), extra={"turns": [{"item_id": "t2"}], "counts": {"appends": 10},
                                             "close": {"by": "server"}, "behaviour_tag": "y", "open": False})
    m = merge_sessions([a, b])
    assert [t["item_id"] for t in m["turns"]] == ["t1", "t2"] and m["counts"] == {"appends": 20}
    assert m["close"] == {"by": "server"} and m["id"] == "s1" and [s["id"] for s in m["sessions"]] == ["s1", "s2"]
    assert m["behaviour_tag"] == "y"  # a session that ran another behaviour is not hidden
    assert "block_ns" not in m


def test_a_bridge_that_converts_the_audio_leaves_the_switch_unmeasured_not_failed():
    """Transcoded frames match no CRC: the gap and the loss are skipped with the reason, not failed."""
    core = _core(300)
    sessions = [_session("s1", range(0, 150)), _session("s2", range(150, 300))]
    for s in sessions:
        s["block_crc"] = [7 + x for x in s["block_crc"]]  # what a pcm16 bridge sends: other bytes
    r = measure_renewals(core, sessions)
    assert r.sessions == 2 and r.caller_audio_lost_ms is None
    c = CallMetrics("long_call", 0, "CA1", renewal=r)
    res = {e.name: e for e in evaluate(Expectations(renewals_min=1, switch_gap_max_ms=20, no_caller_audio_lost=True),
                                       [c], mock_in_loop=True)}
    assert res["renewals_min"].status == "passed"
    for name in ("switch_gap_max_ms", "no_caller_audio_lost"):
        assert res[name].status == "skipped" and "converts the audio" in res[name].message, res[name]
        assert res[name].failures == []


def test_no_switch_over_still_fails_when_the_audio_cannot_be_followed():
    s = _session("s1", range(0, 300))
    s["block_crc"] = [7 + x for x in s["block_crc"]]
    c = CallMetrics("long_call", 0, "CA1", renewal=measure_renewals(_core(300), [s]))
    res = {e.name: e for e in evaluate(Expectations(switch_gap_max_ms=20), [c], mock_in_loop=True)}
    assert res["switch_gap_max_ms"].status == "failed" and "no switch-over" in res["switch_gap_max_ms"].message


def test_a_session_that_got_no_caller_frame_still_fails():
    """Frames were followed, but the new session received none of them: the bridge's fault, not unmeasured."""
    s2 = _session("s2", range(150, 300))
    s2["block_crc"] = [7 + x for x in s2["block_crc"]]
    c = CallMetrics("long_call", 0, "CA1", renewal=measure_renewals(_core(300), [_session("s1", range(0, 150)), s2]))
    res = {e.name: e for e in evaluate(Expectations(switch_gap_max_ms=20, no_caller_audio_lost=True), [c],
                                       mock_in_loop=True)}
    assert res["switch_gap_max_ms"].status == "failed" and res["no_caller_audio_lost"].status == "failed"


def test_merged_view_keeps_the_keys_every_session_was_told():
    """A renewed call told of one key per session: both keys, with their parallel times, in order."""
    a = _session("s1", range(0, 10), extra={"dtmf": ["1"], "dtmf_ns": [T0 + 50 * MS]})
    b = _session("s2", range(10, 20), extra={"dtmf": ["2", "3"], "dtmf_ns": [T0 + 300 * MS, T0 + 350 * MS]})
    m = merge_sessions([a, b])
    assert m["dtmf"] == ["1", "2", "3"] and m["dtmf_ns"] == [T0 + 50 * MS, T0 + 300 * MS, T0 + 350 * MS]


def test_merged_view_puts_turns_and_responses_in_time_order():
    """While switching, a bridge may feed both sessions: the old one's later response must not hide the
    new one's reply (attach_mock stops at the first response triggered after the reply was heard), and the
    caller turn takes the mock turn that came last in time, whichever session heard it."""
    at = lambda ms: T0 + ms * MS  # noqa: E731
    a = _session("s1", range(0, 10), extra={
        "turns": [{"item_id": "old", "t_speech_started_ns": at(1100), "t_speech_stopped_ns": at(1400)},
                  {"item_id": "old-late", "t_committed_ns": at(1700)}, {"item_id": "untimed"}],
        "responses": [{"id": "r_old", "t_trigger_ns": at(3500)}, {"id": "r_untimed"}]})
    b = _session("s2", range(10, 20), extra={
        "turns": [{"item_id": "new", "t_speech_started_ns": at(1600), "t_speech_stopped_ns": at(2000)}],
        "responses": [{"id": "r_new", "t_trigger_ns": at(2050), "t_first_audio_ns": at(2400)}]})
    m = merge_sessions([a, b])
    assert [t["item_id"] for t in m["turns"]] == ["old", "new", "old-late", "untimed"]
    assert [r["id"] for r in m["responses"]] == ["r_new", "r_old", "r_untimed"]
    m["turns"].pop(2)  # without the old session's late piece, the new session's turn is the one answered
    t = TurnMetrics(0, "hello", speech_end_ns=at(1900), first_audio_ns=at(3000))
    attach_mock(t, at(1000), None, m["turns"], m["responses"], 0.0)
    assert t.mock_item_id == "new" and t.response_ids == ["r_new"]


def test_frame_timings_are_fetched_only_for_the_expectations_that_read_them():
    """append_ns/delta_ns/block_ns/block_crc of every session (over HTTP for an external mock) are read by
    switch_gap_max_ms and no_caller_audio_lost alone: other scenarios do not ask the mock for them."""
    assert not needs_frame_timings(Expectations(renewals_min=1, turn_latency_p95_ms=1500))
    assert not needs_frame_timings(Expectations(no_caller_audio_lost=False))
    assert needs_frame_timings(Expectations(switch_gap_max_ms=20))
    assert needs_frame_timings(Expectations(no_caller_audio_lost=True))
    assert needs_frame_timings(find_scenario("long_call").expect)
    assert not needs_frame_timings(find_scenario("greeting_two_turns").expect)


async def test_an_external_mock_is_asked_for_frame_timings_only_when_they_are_needed():
    asked: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/_mock/sessions":
            return httpx.Response(200, json={"sessions": [{"id": "s1", "behaviour_tag": "t"}]})
        asked.append(request.url.params.get("timings"))
        return httpx.Response(200, json={"id": "s1"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        mock = HttpMock(http, "http://mock.invalid")
        assert await mock.snapshots("t", set(), 0) == [{"id": "s1"}]
        await mock.snapshots("t", set(), 0, timings=True)
    assert asked == ["0", "1"]
