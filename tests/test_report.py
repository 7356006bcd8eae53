"""report.json, junit.xml and report.html from hand-made metrics and synthetic calls.

The calls are real :class:`CallerCore` runs driven with synthetic times (as in
test_caller_core.py) and fed app media, marks and a clear, so the timelines,
the heard audio and the recordings have content; the metrics are written by
hand, so the reports can be checked against known numbers.
"""

from __future__ import annotations

import base64
import html
import json
import math
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from callsim.simulator.audio.utterances import UtteranceBank
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.core import FRAME_NS, CallerConfig, CallerCore
from callsim.simulator.caller.script import Hangup, Pause, Say
from callsim.simulator.caller.sids import make_sid
from callsim.simulator.caller.call_result import CallResult
from callsim.simulator.measure import charts
from callsim.simulator.measure import report as rp
from callsim.simulator.measure.expectation_text import limit_text, measured_text
from callsim.simulator.measure.measurements import (
    BargeInMetrics,
    CallMetrics,
    CodecMetrics,
    ExpectationResult,
    TurnMetrics,
)
from callsim.simulator.measure import report_html
from callsim.simulator.measure.report import CallArtifacts, write_reports
from callsim.simulator.measure.timeline import AudioOnset, ClearIn, Event, SpeechEnd, SpeechStart, Stop

T0 = 987_654_321_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_rng = random.Random(5)
BANK = UtteranceBank()
REPLY = BANK.get("assistant_short_reply").ulaw  # real speech, so the waveform looks like one


def ident() -> tw.StreamIdentity:
    return tw.StreamIdentity(make_sid("AC", _rng), make_sid("CA", _rng), make_sid("MZ", _rng), {})


def media(sid: str, payload: bytes) -> str:
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(payload).decode()}})


def mark(sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}})


def clear(sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": sid})


def run_call(script, inbound) -> CallResult:
    """Drive a CallerCore at its deadlines; ``inbound(sid)`` maps tick → app messages fed just before it."""
    core = CallerCore(CallerConfig(ident()), script, BANK)
    feed = inbound(core.stream_sid)
    core.begin(T0)
    while (d := core.next_deadline_ns()) is not None:
        for msg in feed.pop((d - T0) // FRAME_NS, []):
            core.receive(d, msg)
        core.advance(d)
    assert core.finished
    return CallResult(target="ws://bridge.test/stream", core=core, stream_url="ws://bridge.test/stream")


def first(core: CallerCore, event: type[Event], after_ns: int = 0) -> int:
    return next(t for t in core.timeline.times(event) if t >= after_ns)


FAIL_CLEAR = "barge-in clear took 700 ms, limit 600 ms <too slow> & late"
FAIL_TRUNC = "truncate error 45 ms > limit 20 ms: the bridge counted bytes sent, not audio heard"
SKIP_MSG = "needs the mock in the loop (target is a deployed bridge)"
ERROR_MSG = "could not connect: HTTP 503 <Service Unavailable> from ws://bridge.test/stream"


def greeting_call() -> CallArtifacts:
    """Passed: one turn, the reply played in full, a mark played and one echoed idle."""
    script = [Pause(100), Say("caller_stop"), Pause(1200), Hangup()]
    res = run_call(script, lambda sid: {50: [media(sid, REPLY[:6400]), mark(sid, "r1")], 100: [mark(sid, "idle1")]})
    core = res.core
    end = first(core, SpeechEnd)
    onset = first(core, AudioOnset, end)
    m = CallMetrics(
        scenario="greeting", call_index=0, call_sid=core.ident.call_sid, status="passed", end_reason="hangup",
        duration_ms=core.summary()["duration_ms"],
        turns=[TurnMetrics(0, "caller_stop", end, onset, (onset - end) / 1e6, 250.0, 300.0,
                           (onset - end) / 1e6 - 550.0, "caller_stop")],
        codec=CodecMetrics(checked=True, bit_exact=True, snr_db=float("inf"), note="echo: identical bytes"),
        heard_ms=core.summary()["audio_played_ms"], marks_echoed=dict(core.marks_echoed),
        expectations=[ExpectationResult("turn_latency_p95_ms", "passed", "turn latency p95 fine", 1.0, 800).to_json()],
    )
    return CallArtifacts(m, res)


def barge_in_call() -> CallArtifacts:
    """Failed: the caller barges in over a 2 s reply, the clear comes late; a truncate in the mock."""
    script = [Pause(100), Say("caller_stop"), Pause(200), Say("caller_stop"), Pause(600), Hangup()]
    res = run_call(script, lambda sid: {
        45: [media(sid, REPLY[:16000]), mark(sid, "a")],
        80: [clear(sid)],
        90: [media(sid, REPLY[8000:11200]), mark(sid, "b")],
    })
    core = res.core
    end = first(core, SpeechEnd)
    first_audio = first(core, AudioOnset)
    barge = core.timeline.times(SpeechStart)[1]
    clear_ns = first(core, ClearIn)
    m = CallMetrics(
        scenario="barge_in", call_index=0, call_sid=core.ident.call_sid, status="failed", end_reason="hangup",
        duration_ms=core.summary()["duration_ms"],
        turns=[TurnMetrics(0, "caller_stop", end, first_audio, 123.4, None, None, float("nan"))],
        barge_ins=[BargeInMetrics(barge, "caller_stop", clear_ns, (clear_ns - barge) / 1e6, 240.0, 700.0,
                                  745, 45.0, True)],
        underrun_ms=np.float64(40.0), clears=1, marks_echoed=dict(core.marks_echoed),
        expectations=[
            ExpectationResult("barge_in_clear_max_ms", "failed", FAIL_CLEAR, 700.0, 600).to_json(),
            ExpectationResult("truncate_error_max_ms", "failed", FAIL_TRUNC, 45.0, 20).to_json(),
            ExpectationResult("transcript_contains", "skipped", SKIP_MSG).to_json(),
        ],
    )
    snap = {"truncates": [{"t_ns": clear_ns + 30_000_000, "item_id": "item_1", "audio_end_ms": 745,
                           "accepted": True}]}
    return CallArtifacts(m, res, snap)


def error_calls() -> list[CallArtifacts]:
    """Errors: one whose stream never opened (a CallResult without a core), one never started."""
    m0 = CallMetrics(scenario="openai_drop", call_index=0, call_sid=None, status="error", error=ERROR_MSG,
                     duration_ms=0.0)
    m1 = CallMetrics(scenario="openai_drop", call_index=1, call_sid=None, status="error",
                     error="cancelled before dialling\x00\x07 (bell)", duration_ms=float("nan"))
    return [CallArtifacts(m0, CallResult(target="ws://bridge.test/stream", error=ERROR_MSG)),
            CallArtifacts(m1, None)]


def pct(p50, p95, p99, mx):
    return {"p50": p50, "p95": p95, "p99": p99, "max": mx}


SUMMARY = {
    "calls": 4, "passed": 1, "failed": 3,
    "turn_latency_ms": pct(612.3, 987.6, 1012.4, 1044.8),
    "overhead_ms": pct(41.7, 77.2, None, float("nan")),
    "barge_in_clear_ms": pct(701.9, 702.9, 703.9, 704.9),
    "talk_over_ms": pct(240.0, 240.0, 240.0, 240.0),
    "truncate_error_ms": {"max": 45.0},
    "codec": {"bit_exact_calls": 1, "min_snr_db": np.float64("inf")},
    "underrun_ms_total": 40.0,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    calls = [greeting_call(), barge_in_call(), *error_calls()]
    out = tmp_path_factory.mktemp("report")
    paths = write_reports(out, calls, SUMMARY, title="callsim <demo> & co",
                          meta={"target": "ws://bridge.test/stream", "command": "callsim demo --calls 1"})
    return out, calls, paths


# ----------------------------------------------------------------- report.json


def test_paths_returned(built):
    out, _, paths = built
    assert paths["json"] == out / "report.json" and paths["junit"] == out / "junit.xml"
    assert paths["html"] == out / "report.html" and paths["calls"] == out / "calls"
    assert all(p.exists() for p in paths.values())


def test_report_json_has_every_design_key(built):
    out, calls, _ = built
    raw = (out / "report.json").read_bytes()
    assert b"NaN" not in raw and b"Infinity" not in raw
    doc = json.loads(raw)
    assert set(doc) >= {"summary", "calls", "meta"}
    s = doc["summary"]
    for k in ("calls", "passed", "failed"):
        assert isinstance(s[k], int)
    for k in ("turn_latency_ms", "overhead_ms", "barge_in_clear_ms", "talk_over_ms"):
        assert set(s[k]) >= {"p50", "p95", "p99", "max"}
    assert "max" in s["truncate_error_ms"]
    assert set(s["codec"]) >= {"bit_exact_calls", "min_snr_db"}
    assert s["codec"]["min_snr_db"] is None and s["overhead_ms"]["max"] is None  # inf/NaN → null
    assert s["underrun_ms_total"] == 40.0
    assert len(doc["calls"]) == len(calls)
    for c, art in zip(doc["calls"], calls):
        assert set(c) >= {"scenario", "status", "turns", "barge_ins", "codec", "expectations", "artifacts"}
        assert set(c) >= set(art.metrics.to_json())  # everything in CallMetrics
        assert c["status"] in ("passed", "failed", "error")
    g, b, e0, e1 = doc["calls"]
    assert g["turns"][0]["latency_ms"] == pytest.approx(calls[0].metrics.turns[0].latency_ms)
    assert g["codec"]["bit_exact"] is True and g["codec"]["snr_db"] is None
    assert b["turns"][0]["overhead_ms"] is None and b["underrun_ms"] == 40.0
    assert b["barge_ins"][0]["truncate_error_ms"] == 45.0
    assert [x["status"] for x in b["expectations"]] == ["failed", "failed", "skipped"]
    assert e0["error"] == ERROR_MSG and e1["duration_ms"] is None
    assert doc["meta"]["target"] == "ws://bridge.test/stream" and doc["meta"]["command"].startswith("callsim")
    assert doc["meta"]["when"] and doc["meta"]["title"] == "callsim <demo> & co"


def test_artifacts_recorded_and_on_disk(built):
    out, calls, _ = built
    doc = json.loads((out / "report.json").read_bytes())
    g, b, e0, e1 = (c["artifacts"] for c in doc["calls"])
    assert g["dir"] == "calls/greeting-0" and b["dir"] == "calls/barge_in-0"
    for arts, art in ((g, calls[0]), (b, calls[1])):
        assert set(arts) == {"dir", "heard.wav", "heard.ulaw", "timeline.json"}
        assert arts == art.metrics.artifacts  # recorded on the metrics too
        for k in ("heard.wav", "heard.ulaw", "timeline.json"):
            assert not Path(arts[k]).is_absolute() and (out / arts[k]).is_file()
        heard = bytes(art.result.core.heard)
        assert (out / arts["heard.ulaw"]).read_bytes() == heard
        wav, rate = sf.read(out / arts["heard.wav"], dtype="int16")
        assert rate == 8000 and len(wav) == len(heard)
        tl = json.loads((out / arts["timeline.json"]).read_bytes())
        assert tl["t0_ns"] == T0 and tl["timeline"]
    assert set(e0) == {"dir", "timeline.json"}  # no stream: only the record of the attempt
    assert json.loads((out / e0["timeline.json"]).read_bytes())["error"] == ERROR_MSG
    assert e1 == {}  # never started: nothing to keep


# ----------------------------------------------------------------- junit.xml


def test_junit_structure_and_counts(built):
    out, calls, _ = built
    root = ET.parse(out / "junit.xml").getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("4", "1", "2", "0")
    suites = list(root)
    assert all(s.tag == "testsuite" for s in suites)
    assert [s.get("name") for s in suites] == ["greeting", "barge_in", "openai_drop"]
    allowed = {"properties", "failure", "error", "skipped", "system-out", "system-err"}
    for s in suites:
        cases = [c for c in s if c.tag == "testcase"]
        assert all(c.tag in ("testcase", "properties", "system-out", "system-err") for c in s)
        assert int(s.get("tests")) == len(cases)
        assert int(s.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(s.get("errors")) == sum(1 for c in cases if c.find("error") is not None)
        assert s.get("skipped") == "0"
        assert float(s.get("time")) == pytest.approx(sum(float(c.get("time")) for c in cases), abs=1e-3)
        for c in cases:
            assert c.get("classname") == f"callsim.{s.get('name')}"
            assert re.fullmatch(re.escape(s.get("name")) + r"\[call \d+\]", c.get("name"))
            assert float(c.get("time")) >= 0
            assert {x.tag for x in c} <= allowed
    g, b, e = suites
    (case,) = g.findall("testcase")
    assert float(case.get("time")) == pytest.approx(calls[0].metrics.duration_ms / 1000, abs=1e-3)
    assert [x.tag for x in case] == ["properties", "system-out"]  # no verdict element: a pass
    (case,) = b.findall("testcase")
    fail = case.find("failure")
    assert fail.get("message") == ("barge_in[call 0]: barge_in_clear_max_ms — measured 700 ms, limit ≤ 600 ms; "
                                   "truncate_error_max_ms — measured 45 ms, limit ≤ 20 ms")
    assert fail.text.splitlines() == [
        f"barge_in[call 0]: barge_in_clear_max_ms — measured 700 ms, limit ≤ 600 ms — {FAIL_CLEAR}",
        f"barge_in[call 0]: truncate_error_max_ms — measured 45 ms, limit ≤ 20 ms — {FAIL_TRUNC}"]
    assert f"transcript_contains — skipped: {SKIP_MSG}" in case.find("system-out").text.splitlines()
    assert (b.get("tests"), b.get("failures"), b.get("errors")) == ("1", "1", "0")
    e_cases = e.findall("testcase")
    assert [c.get("name") for c in e_cases] == ["openai_drop[call 0]", "openai_drop[call 1]"]
    assert e_cases[0].find("error").get("message") == ERROR_MSG
    assert "cancelled before dialling" in e_cases[1].find("error").get("message")  # control chars made safe
    assert e_cases[1].get("time") == "0.000"  # NaN duration
    assert (e.get("tests"), e.get("failures"), e.get("errors")) == ("2", "0", "2")


# ----------------------------------------------------------------- report.html


def images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_html_page(built):
    out, calls, _ = built
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    assert "callsim &lt;demo&gt; &amp; co" in page and "<demo>" not in page
    assert "\x00" not in page and "\x07" not in page and "cancelled before dialling" in page
    assert "ws://bridge.test/stream" in page and "callsim demo --calls 1" in page
    for v in ("612.3", "987.6", "1012.4", "1044.8", "41.7", "77.2", "701.9", "704.9", "45.0", "40.0"):
        assert v in page
    assert "—" in page  # missing p99 / NaN max / inf SNR
    assert html.escape(FAIL_CLEAR) in page and FAIL_CLEAR not in page
    assert html.escape(FAIL_TRUNC) in page and html.escape(SKIP_MSG) in page
    assert html.escape(ERROR_MSG) in page
    assert 'class="badge passed"' in page and 'class="badge failed"' in page and 'class="badge error"' in page
    assert "calls/greeting-0/heard.wav" in page
    lat = calls[0].metrics.turns[0].latency_ms
    assert f"{lat:.0f}" in page


def test_html_images_are_valid_small_pngs(built):
    out, _, _ = built
    imgs = images((out / "report.html").read_text(encoding="utf-8"))
    # 5 histograms (latency, overhead, clear, talk-over, truncate error) + (timeline, waveform) for 2 calls
    assert len(imgs) == 5 + 2 * 2
    for data in imgs:
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) < 100_000
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
        assert 500 <= w <= 1120 and 100 <= h <= 400


def test_figure_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(rp, "MAX_CALL_FIGURES", 1)
    calls = [greeting_call(), barge_in_call()]
    calls[1].metrics.call_index = 1
    write_reports(tmp_path, calls, SUMMARY)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "first 1 of 2 calls" in page
    assert len(images(page)) == 5 + 2  # figures for the first call only ...
    assert f'id="{report_html.anchor(calls[1].metrics)}"' in page  # ... but the failed one keeps its section
    assert page.count("<audio ") == 1
    doc = json.loads((tmp_path / "report.json").read_bytes())
    assert doc["meta"]["calls_with_figures"] == 1
    assert (tmp_path / calls[1].metrics.artifacts["heard.wav"]).is_file()  # recordings for every call


def test_no_turns_no_histogram_and_duplicate_names(tmp_path):
    a, b = error_calls()
    b.metrics.call_index = 0  # the same scenario and index twice: both kept
    b.result = CallResult(target="x", error="boom")
    write_reports(tmp_path, [a, b], {"calls": 2, "passed": 0, "failed": 2})
    assert a.metrics.artifacts["dir"] == "calls/openai_drop-0" and b.metrics.artifacts["dir"] == "calls/openai_drop-0.2"
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Histograms: no turn or barge-in was measured" in page and images(page) == []
    assert page.count("—") >= 20  # every missing summary figure shows a dash


def test_with_real_summarize(tmp_path):
    metrics = pytest.importorskip("callsim.simulator.measure.metrics")
    calls = [greeting_call(), barge_in_call(), *error_calls()]
    summary = metrics.summarize([c.metrics for c in calls])
    write_reports(tmp_path, calls, summary)
    doc = json.loads((tmp_path / "report.json").read_bytes())
    assert set(doc["summary"]) >= {"calls", "passed", "failed", "turn_latency_ms", "codec", "underrun_ms_total"}


# ----------------------------------------------------------------- helpers


def test_heard_spans_are_runs_of_played_ticks():
    assert charts.heard_spans([]) == []
    spans = charts.heard_spans([0, 160, 160, 0, 0, 80, 0, 160])
    assert [x for span in spans for x in span] == pytest.approx([0.02, 0.06, 0.1, 0.12, 0.14, 0.16])


def test_speech_spans_pair_start_and_end():
    tl = [SpeechStart(T0 + 100_000_000, "a"), SpeechEnd(T0 + 500_000_000, "a"),
          SpeechStart(T0 + 900_000_000, "b"), Stop(T0 + 1_000_000_000, "script")]
    spans = charts.speech_spans(tl, T0, 2.0)
    assert [f for *_, f in spans] == ["a", "b"]
    assert [x for a, b, _ in spans for x in (a, b)] == pytest.approx([0.1, 0.52, 0.9, 1.0])  # end of last frame
    assert charts.speech_spans(tl[:3], T0, 2.0)[-1] == (0.9, 2.0, "b")  # cut short: runs to the end


def test_envelope_keeps_extremes():
    x = np.zeros(10_001, dtype=np.float32)
    x[1234], x[9999], x[10_000] = 0.9, -0.7, 0.25
    start, lo, hi = charts.envelope(x, 100)
    assert len(start) <= 100 and start[0] == 0
    assert hi.max() == pytest.approx(0.9) and lo.min() == pytest.approx(-0.7)
    assert hi[-1] == pytest.approx(0.25) and lo[-1] == pytest.approx(-0.7)  # 101 per column: 9999.. is last
    start, lo, hi = charts.envelope(np.full(10_001, 0.5, dtype=np.float32), 100)
    assert lo.min() == 0.5 and hi.max() == 0.5  # the padding of the last column adds no zeros
    start, lo, hi = charts.envelope(np.array([0.1, -0.2, 0.3], dtype=np.float32), 700)  # fewer samples than px
    assert list(start) == [0, 1, 2] and not math.isnan(float(lo.sum()))


# ----------------------------------------------------------------- report.json: rounding and schema


def test_report_json_rounds_each_figure_for_its_unit(tmp_path):
    """ms to 0.1 ms, dB to 0.1 dB, seconds to 1 ms, other floats to 4 digits; ints untouched; no -0.0."""
    m = CallMetrics(
        scenario="r", call_index=0, call_sid="CA1", duration_ms=14260.04999,
        turns=[TurnMetrics(0, "caller_stop", 22850347479417, 22851386305904, 1038.826487, 499.349, 320.0,
                           -0.04, uplink_hop_ms=0.33513079)],
        codec=CodecMetrics(checked=True, bit_exact=False, snr_db=34.5678,
                           turns=[{"fixture": "x", "bit_exact": False, "snr_db": 34.56, "speech_ms": 7230.0}]),
        pacing={"frames": 712, "lateness_ms_p99": 2.2201946099999996, "drift_frames": 0.0545536,
                "interval_ms_median": 19.875232},
        mock={"id": "s", "close": {"t_ns": 22860408319998}, "turns": [{"score": 0.98642, "t_speech_started_ms": 2040.8294}]},
        expectations=[
            ExpectationResult("turn_latency_p95_ms", "passed", "ok", 1038.826487, 1200).to_json(),
            ExpectationResult("snr_min_db", "passed", "ok", 34.5678, 30).to_json(),
            ExpectationResult("no_underruns", "failed", "gaps", 12.3456, True).to_json(),
        ],
    )
    summary = {"calls": 1, "turn_latency_ms": {"p50": 988.6474330000001, "p95": 1033.8085816, "p99": None,
                                               "max": float("inf")},
               "codec": {"bit_exact_calls": 0, "min_snr_db": np.float64(34.5678)}, "underrun_ms_total": 40.04}
    meta = {"seconds": 33.04567, "audio_in_ratio": 1.00123456, "big": 123456.789,
            "scenarios": [{"name": "r", "seconds": 12.3456789,
                           "expectations": [ExpectationResult("turn_latency_p95_ms", "failed", "slow", 1038.826487,
                                                              800, [{"call_index": 0, "message": "slow",
                                                                     "measured": 1038.826487}]).to_json()]}]}
    write_reports(tmp_path, [CallArtifacts(m, None)], summary, meta=meta)
    doc = json.loads((tmp_path / "report.json").read_bytes())
    c = doc["calls"][0]
    t = c["turns"][0]
    assert (t["latency_ms"], t["mock_vad_wait_ms"], t["uplink_hop_ms"]) == (1038.8, 499.3, 0.3)
    assert t["overhead_ms"] == 0.0 and b"-0.0" not in (tmp_path / "report.json").read_bytes()
    assert (t["speech_end_ns"], t["first_audio_ns"]) == (22850347479417, 22851386305904)  # ints untouched
    assert c["duration_ms"] == 14260.0
    assert c["codec"]["snr_db"] == 34.6 and c["codec"]["turns"][0]["snr_db"] == 34.6
    assert c["pacing"] == {"frames": 712, "lateness_ms_p99": 2.2, "drift_frames": 0.05455, "interval_ms_median": 19.9}
    assert c["mock"]["turns"][0] == {"score": 0.9864, "t_speech_started_ms": 2040.8}
    assert c["mock"]["close"]["t_ns"] == 22860408319998
    assert [e["measured"] for e in c["expectations"]] == [1038.8, 34.6, 12.3]  # the unit of the expectation
    assert [e["limit"] for e in c["expectations"]] == [1200, 30, True]
    s = doc["summary"]
    assert s["turn_latency_ms"] == {"p50": 988.6, "p95": 1033.8, "p99": None, "max": None}
    assert s["codec"]["min_snr_db"] == 34.6 and s["underrun_ms_total"] == 40.0
    meta = doc["meta"]
    assert (meta["seconds"], meta["audio_in_ratio"], meta["big"]) == (33.046, 1.001, 123457.0)
    sc = meta["scenarios"][0]
    assert sc["seconds"] == 12.346
    assert sc["expectations"][0]["measured"] == 1038.8 and sc["expectations"][0]["failures"][0]["measured"] == 1038.8


def test_report_json_names_its_schema_which_is_beside_it(built):
    out, _, _ = built
    doc = json.loads((out / "report.json").read_bytes())
    assert doc["$schema"] == "./report.schema.json"
    from callsim.simulator.measure.report_json import schema_text
    assert (out / "report.schema.json").read_text(encoding="utf-8") == schema_text()


# ----------------------------------------------------------------- report.html for people

PY_REPR = re.compile(r"\{'|\['|\bNone\b|\bTrue\b|\bFalse\b")
SCENARIOS_META = [
    {"name": "greeting", "description": "The assistant greets <the caller>", "status": "passed", "passed": True,
     "skip_reason": None, "notes": [], "expectations": [{"name": "x", "limit": True, "measured": None}]},
    {"name": "barge_in", "description": "The caller talks over a long reply", "status": "failed", "passed": False,
     "skip_reason": None, "notes": ["2 call(s) never opened an OpenAI session"], "expectations": []},
    {"name": "tool_call", "description": "The model calls get_weather", "status": "skipped", "passed": True,
     "skip_reason": "requires tools: the bridge declared none", "notes": [], "expectations": []},
]
META = {"target": "ws://bridge.test/stream", "command": "callsim demo --calls 1", "started_at": "2026-12-05T22:15:02+0000",
        "seconds": 75.4, "mock_in_loop": True, "scenarios": SCENARIOS_META, "seed": 1}


def visible_text(page: str) -> str:
    """What a reader sees: no style sheet, no tags, entities decoded."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    page = re.sub(r'src="data:[^"]*"', "", page)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def section(page: str, anchor: str) -> str:
    start = page.index(f'id="{anchor}"')
    return page[start: page.index("</section>", start)]


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    calls = [greeting_call(), barge_in_call(), *error_calls()]
    out = tmp_path_factory.mktemp("people")
    write_reports(out, calls, SUMMARY, meta=META)
    return out, calls, (out / "report.html").read_text(encoding="utf-8")


def test_header_reads_for_people(people):
    _, _, page = people
    text = visible_text(page)
    assert not PY_REPR.search(text), PY_REPR.search(text)
    for key in ("call_figures_limit", "calls_with_figures", "mock_in_loop", "started_at", "skip_reason"):
        assert key not in text
    head = text[text.index("callsim report"): text.index("Scenarios")]
    for want in ("command", "callsim demo --calls 1", "started", "2026-12-05 22:15:02 UTC", "took", "1 min 15 s",
                 "target", "ws://bridge.test/stream", "OpenAI", "the mock OpenAI Realtime server",
                 "versions", "callsim ", "Python 3.", "seed"):
        assert want in head, want
    table = page[page.index('<table class="scenarios">'): page.index("</table>", page.index('class="scenarios"'))]
    rows = re.findall(r"<tr><td><b>(.*?)</b></td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", table)
    assert [(n, re.sub("<[^>]+>", "", st)) for n, st, *_ in rows] == [
        ("greeting", "passed"), ("barge_in", "failed"), ("tool_call", "skipped")]
    assert rows[0][2] == "The assistant greets &lt;the caller&gt;" and rows[0][3] == "—"
    assert rows[1][3] == "2 call(s) never opened an OpenAI session"
    assert rows[2][3] == "requires tools: the bridge declared none"


def test_failures_first_in_a_banner(people):
    _, calls, page = people
    body = page.split("<body>", 1)[1].lstrip()
    assert body.startswith('<div id="verdict" class="banner bad"')
    banner = body[: body.index("<h1>")]
    assert "3 of 4 call(s) failed (2 with an error)" in banner
    assert "greeting" not in banner  # it passed
    assert f'<a href="#{report_html.anchor(calls[1].metrics)}">barge_in · call 0</a>' in banner
    assert "<b>barge_in_clear_max_ms</b>: measured 700 ms, limit ≤ 600 ms" in banner
    assert "<b>truncate_error_max_ms</b>: measured 45 ms, limit ≤ 20 ms" in banner
    assert html.escape(FAIL_CLEAR) in banner and "transcript_contains" not in banner  # skipped: not a failure
    assert 'href="#call-openai_drop-0"' in banner and 'href="#call-openai_drop-1"' in banner
    assert html.escape(ERROR_MSG) in banner
    for c in calls[1:]:  # every link lands on a section
        assert f'id="{report_html.anchor(c.metrics)}"' in page


def test_passing_run_says_so(tmp_path):
    write_reports(tmp_path, [greeting_call()], {"calls": 1, "passed": 1, "failed": 0})
    body = (tmp_path / "report.html").read_text(encoding="utf-8").split("<body>", 1)[1].lstrip()
    assert body.startswith('<div id="verdict" class="banner ok"><p class="verdict">✓ All 1 call(s) passed.</p>')


def test_call_section_every_expectation_profile_and_audio(people):
    out, calls, page = people
    bi = section(page, "call-barge_in-0")
    rows = re.findall(r'<tr class="(\w+)"><td><code>(\w+)</code></td><td>.*?</td><td class="v">(.*?)</td>'
                      r'<td class="v">(.*?)</td><td>(.*?)</td></tr>', bi)
    assert [(st, name, measured, limit) for st, name, measured, limit, _ in rows] == [
        ("failed", "barge_in_clear_max_ms", "700 ms", "≤ 600 ms"),
        ("failed", "truncate_error_max_ms", "45 ms", "≤ 20 ms"),
        ("skipped", "transcript_contains", "—", "—")]
    assert rows[2][4] == html.escape(SKIP_MSG)  # skipped, with its reason
    g = section(page, "call-greeting-0")
    assert re.search(r'<tr class="passed"><td><code>turn_latency_p95_ms</code>.*?<td class="v">1 ms</td>'
                     r'<td class="v">p95 ≤ 800 ms</td>', g)  # passed ones too
    for sec, call in ((g, calls[0]), (bi, calls[1])):
        assert "bridge profile of this call" in sec and "twilio: marks" in sec
        (src,) = re.findall(r'<audio controls preload="metadata" src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', sec)
        assert base64.b64decode(src) == (out / call.metrics.artifacts["heard.wav"]).read_bytes()
    assert "<audio" not in section(page, "call-openai_drop-0")  # no stream, nothing heard


def test_audio_past_the_budget_links_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(report_html, "MAX_EMBEDDED_AUDIO_BYTES", 1000)
    call = greeting_call()
    write_reports(tmp_path, [call], {"calls": 1})
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f'<audio controls preload="metadata" src="{call.metrics.artifacts["heard.wav"]}">' in page
    assert "data:audio" not in page


def test_one_histogram_per_metric_with_its_limits(people):
    _, calls, page = people
    alts = re.findall(r'<img class="hist" alt="histogram of ([^"]+)"', page)
    assert alts == ["turn latency", "overhead: bridge + transport", "barge-in → clear", "talk-over after barge-in",
                    "truncate error"]
    lims = report_html._limits(calls, ("barge_in_clear_max_ms",))
    assert [(x.value, x.label) for x in lims] == [(600.0, "≤ 600 ms (barge_in)")]
    fig = charts.histogram_fig([700.0], "barge-in → clear", "ms", lims)
    ax = fig.axes[0]
    red = [ln for ln in ax.lines if ln.get_color() == charts.LIMIT_COLOUR]
    assert [tuple(ln.get_xdata()) for ln in red] == [(600.0, 600.0)]
    lo, hi = ax.get_xlim()
    assert lo < 600 < 700 < hi
    fig = charts.histogram_fig([2.0, 3.0], "overhead", "ms", [charts.Limit(150.0, "≤ 150 ms")])
    assert fig.axes[0].get_xlim()[1] > 150  # a limit far from the values is still on the axis
    assert charts.histogram_fig([], "x", "ms") is None


def test_timeline_labels_every_utterance_and_marks_what_happened():
    call = greeting_call()
    core = call.result.core
    onset = core.timeline.times(SpeechStart)[0]
    call.metrics.barge_ins = [BargeInMetrics(onset, "caller_stop")]  # a barge-in no clear followed
    snap = {
        "responses": [
            {"reply": "tool:get_weather", "status": "completed", "t_done_ns": T0 + 600_000_000,
             "t_first_audio_ns": None},
            {"reply": "assistant_short_reply", "status": "completed", "t_first_audio_ns": T0 + 950_000_000},
        ],
        "events": [{"t_ns": T0 + 1_200_000_000, "dir": "fault", "type": "drop", "after_ms": 200.0},
                   {"t_ns": T0 + 1_300_000_000, "dir": "out", "type": "error"}],
        "truncates": [{"t_ns": T0 + 1_250_000_000, "accepted": False}],
    }
    fig = charts.timeline_fig(call.metrics, call.result, snap)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "caller_stop" in texts and "assistant_short_reply" in texts  # caller and assistant utterances
    assert "tool: get_weather" in texts and "fault: drop" in texts and "no clear" in texts
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    for want in ("tool call", "injected fault", "barge-in, no clear came", "truncate", "caller hung up"):
        assert want in legend
    plain = charts.timeline_fig(greeting_call().metrics, greeting_call().result, None)
    assert "no clear" not in [t.get_text() for t in plain.axes[0].texts]
    assert "tool call" not in [t.get_text() for t in plain.legends[0].get_texts()]


def test_mock_markers_from_the_snapshot():
    snap = {"sessions": [{"responses": [
        {"reply": "assistant_long_reply", "status": "incomplete", "reason": "connection_closed",
         "t_first_audio_ns": 20},
        {"reply": "tool:lookup", "t_done_ns": 10, "t_first_audio_ns": None}],
        "events": [{"t_ns": 30, "dir": "fault", "type": "stall"}, {"t_ns": 5, "dir": "in", "type": "x"}]}]}
    assert charts.replies(snap) == [charts.Marker(20, "assistant_long_reply (cut: connection_closed)")]
    assert charts.tool_calls(snap) == [charts.Marker(10, "lookup")]
    assert charts.faults(snap) == [charts.Marker(30, "stall")]
    assert charts.replies(None) == charts.tool_calls({}) == charts.faults(None) == []


def test_heard_spans_split_at_a_clear():
    spans = charts.heard_spans([160] * 10, cuts=[0.1, 5.0])
    assert [x for span in spans for x in span] == pytest.approx([0.0, 0.1, 0.1, 0.2])


@pytest.mark.parametrize(("name", "value", "measured", "limit"), [
    ("turn_latency_p95_ms", 1038.64, "1039 ms", "p95 ≤ 1039 ms"),
    ("no_underruns", 0.0, "0 ms", "0 ms"),
    ("no_twilio_warnings", 2, "2 warning(s)", "0 warnings"),
    ("openai_session", "accepted", "accepted", "accepted"),
    ("end_reason", "closed_by_app", "closed by app", "= closed by app"),
    ("transcript_contains", ["Hello there."], "“Hello there.”", "heard: “Hello there.”"),
    ("heard_min_ms", 7000, "7000 ms", "≥ 7000 ms"),
    ("snr_min_db", 30.25, "30.2 dB", "≥ 30.2 dB"),
    ("barge_ins", 1, "1 barge-in(s)", "= 1"),
])
def test_expectation_text(name, value, measured, limit):
    assert measured_text(name, value) == measured
    lim = True if name.startswith("no_") or name == "openai_session" else value
    assert limit_text(name, lim) == limit
    assert measured_text(name, None) == limit_text(name, None) == "—"
    assert not PY_REPR.search(measured_text(name, {"a": None, "b": [True]}))


def test_command_reads_as_typed():
    assert report_html.command_text("/work/x/.venv/bin/callsim demo --only a") == "callsim demo --only a"
    assert report_html.command_text("/w/simulator/__main__.py demo") == "callsim demo"
    assert report_html.command_text("callsim demo --calls 1") == "callsim demo --calls 1"
