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
from callsim.simulator.measure.timeline import AudioOnset, ClearIn, Event, SpeechEnd, SpeechStart, Stop, UtteranceStart

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
    allowed = {"failure", "error", "skipped", "system-out", "system-err"}
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
            assert re.fullmatch(r"call \d+", c.get("name"))
            assert float(c.get("time")) >= 0
            assert {x.tag for x in c} <= allowed
    g, b, e = suites
    (case,) = g.findall("testcase")
    assert float(case.get("time")) == pytest.approx(calls[0].metrics.duration_ms / 1000, abs=1e-3)
    assert len(case) == 0
    (case,) = b.findall("testcase")
    fail = case.find("failure")
    assert FAIL_CLEAR in fail.get("message") and FAIL_TRUNC in fail.get("message")
    assert "barge_in_clear_max_ms" in fail.text and "truncate_error_max_ms" in fail.text
    assert SKIP_MSG in case.find("system-out").text
    assert (b.get("tests"), b.get("failures"), b.get("errors")) == ("1", "1", "0")
    e_cases = e.findall("testcase")
    assert [c.get("name") for c in e_cases] == ["call 0", "call 1"]
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
