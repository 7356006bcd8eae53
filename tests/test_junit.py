"""junit.xml as CI test reporters read it: names, verdict elements, properties, timestamps.

``assert_junit_shape`` checks the common JUnit XSD shape (Ant's junit.xsd as Jenkins, GitLab and
GitHub reporters read it, plus testcase ``<properties>`` as pytest writes them) with xml.etree;
tests/test_report_schema.py applies it to the junit.xml of a real run too.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from callsim.simulator.measure.junit import _write_junit, call_properties, value_text
from callsim.simulator.measure.measurements import BargeInMetrics, CallMetrics, CodecMetrics, TurnMetrics
from callsim.simulator.measure.report import CallArtifacts

ISO_NO_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")  # junit.xsd's ISO8601_DATETIME_PATTERN
COUNTS = ("tests", "failures", "errors", "skipped")
VERDICTS = ("failure", "error", "skipped")


def _time(el: ET.Element) -> float:
    t = float(el.get("time"))
    assert t >= 0, el.attrib
    return t


def assert_junit_shape(root: ET.Element) -> None:
    """testsuites/testsuite/testcase/(properties, failure|error|skipped, system-out); counts add up."""
    assert root.tag == "testsuites"
    assert root.get("name") and set(COUNTS) | {"time"} <= set(root.attrib)
    _time(root)
    totals = dict.fromkeys(COUNTS, 0)
    for suite in root:
        assert suite.tag == "testsuite"
        assert {"name", "timestamp", "time", *COUNTS} <= set(suite.attrib), suite.attrib
        assert ISO_NO_OFFSET.fullmatch(suite.get("timestamp")), suite.get("timestamp")
        _time(suite)
        cases = []
        for child in suite:
            assert child.tag in ("properties", "testcase", "system-out", "system-err"), child.tag
            if child.tag == "testcase":
                cases.append(child)
        counts = dict.fromkeys(COUNTS, 0)
        for case in cases:
            assert case.get("name") and case.get("classname"), case.attrib
            _time(case)
            tags = [x.tag for x in case]
            assert set(tags) <= {"properties", *VERDICTS, "system-out", "system-err"}, tags
            assert sum(tags.count(v) for v in VERDICTS) <= 1, tags  # one verdict at most
            if "properties" in tags:
                assert tags.index("properties") == 0
                for prop in case.find("properties"):
                    assert prop.tag == "property" and prop.get("name") and prop.get("value") is not None
            for verdict in VERDICTS:
                el = case.find(verdict)
                if el is not None:
                    assert el.get("message"), (case.get("name"), verdict)
            counts["tests"] += 1
            counts["failures"] += "failure" in tags
            counts["errors"] += "error" in tags
            counts["skipped"] += "skipped" in tags
        assert {k: int(suite.get(k)) for k in COUNTS} == counts, suite.get("name")
        for k in COUNTS:
            totals[k] += counts[k]
    assert {k: int(root.get(k)) for k in COUNTS} == totals


def _exp(name, status, message, measured=None, limit=None):
    return {"name": name, "status": status, "message": message, "measured": measured, "limit": limit}


def passed_call() -> CallMetrics:
    """Passed, with one expectation skipped; its figures to more digits than the clock tells."""
    return CallMetrics(
        scenario="greeting", call_index=0, call_sid="CA" + "1" * 32, status="passed", end_reason="hangup",
        duration_ms=4321.0,
        turns=[TurnMetrics(0, "caller_stop", 1, 2, latency_ms=812.3456, overhead_ms=6.97943),
               TurnMetrics(1, "caller_stop", 3, 4, latency_ms=1038.826487, overhead_ms=4.4781),
               TurnMetrics(2, "caller_stop", 5, None)],  # no reply: no latency, not a zero
        codec=CodecMetrics(checked=False, note="not checked: the mock is not in echo mode"),
        underrun_ms=0.0, heard_ms=5344.625, dead_air_ms=800.0,
        pacing={"lateness_ms_p99": 2.2201946, "frames": 712},
        openai_closed_after_hangup_ms=1.067855,
        expectations=[_exp("turn_latency_p95_ms", "passed", "turn latency p95 1027 ms ≤ 1200 ms", 1027.4, 1200),
                      _exp("transcript_contains", "skipped", "needs the mock OpenAI server in the loop",
                           None, ["weather"])],
    )


def failed_call(index: int = 1) -> CallMetrics:
    return CallMetrics(
        scenario="barge_in", call_index=index, call_sid="CA" + "2" * 32, status="failed", end_reason="hangup",
        duration_ms=9000.0,
        barge_ins=[BargeInMetrics(10, "caller_barge_in", clear_ms=712.34, talk_over_ms=700.0,
                                  truncate_error_ms=None)],
        codec=CodecMetrics(checked=True, bit_exact=False, snr_db=34.5678),
        expectations=[
            _exp("openai_session", "passed", "OpenAI accepted the bridge's session", "accepted", True),
            _exp("barge_in_clear_max_ms", "failed", "barge-in clear took 712 ms > 600 ms — send clear at once",
                 712.3, 600),
            _exp("truncate_error_max_ms", "failed", "no truncate was sent after the barge-in — send "
                 "conversation.item.truncate", None, 20),
        ],
    )


def skipped_call() -> CallMetrics:
    return CallMetrics(scenario="tool_call", call_index=0, call_sid="CA" + "3" * 32, status="skipped",
                       skip_reason="requires tools: the bridge declared no tools", duration_ms=3000.0,
                       end_reason="hangup",
                       expectations=[_exp("tool_called", "skipped", "not judged: requires tools", None,
                                          "get_weather")])


def nothing_judged_call() -> CallMetrics:
    """Status passed, but every expectation needed the mock, which was not in the loop."""
    return CallMetrics(scenario="no_mock", call_index=0, call_sid=None, status="passed", duration_ms=2000.0,
                       end_reason="hangup",
                       expectations=[_exp("overhead_p95_ms", "skipped", "needs the mock OpenAI server", None, 50),
                                     _exp("codec", "skipped", "needs the mock OpenAI server", None, "bit_exact")])


def write(tmp_path: Path, metrics: list[CallMetrics], meta: dict | None = None) -> ET.Element:
    path = _write_junit(tmp_path / "junit.xml", [CallArtifacts(m, None) for m in metrics], "callsim run", meta)
    return ET.parse(path).getroot()


def case(root: ET.Element, name: str) -> ET.Element:
    (c,) = [c for c in root.iter("testcase") if c.get("name") == name]
    return c


def props(c: ET.Element) -> dict[str, str]:
    el = c.find("properties")
    return {} if el is None else {p.get("name"): p.get("value") for p in el}


def test_shape_names_and_counts(tmp_path):
    root = write(tmp_path, [passed_call(), failed_call(), skipped_call(), nothing_judged_call()])
    assert_junit_shape(root)
    assert [c.get("name") for c in root.iter("testcase")] == [
        "greeting[call 0]", "barge_in[call 1]", "tool_call[call 0]", "no_mock[call 0]"]
    assert [c.get("classname") for c in root.iter("testcase")] == [
        "callsim.greeting", "callsim.barge_in", "callsim.tool_call", "callsim.no_mock"]
    assert {k: root.get(k) for k in COUNTS} == {"tests": "4", "failures": "1", "errors": "0", "skipped": "2"}


def test_a_failing_expectation_names_call_expectation_measured_and_limit(tmp_path):
    root = write(tmp_path, [failed_call(index=1)])
    failure = case(root, "barge_in[call 1]").find("failure")
    assert failure.get("message") == ("barge_in[call 1]: barge_in_clear_max_ms — measured 712.3 ms, limit ≤ 600 ms; "
                                      "truncate_error_max_ms — not measured, limit ≤ 20 ms")
    # the text: one line per failed expectation, with what to fix (and why a value is missing)
    assert failure.text.splitlines() == [
        "barge_in[call 1]: barge_in_clear_max_ms — measured 712.3 ms, limit ≤ 600 ms — barge-in clear took 712 ms "
        "> 600 ms — send clear at once",
        "barge_in[call 1]: truncate_error_max_ms — not measured, limit ≤ 20 ms — no truncate was sent after the "
        "barge-in — send conversation.item.truncate"]


def test_no_none_anywhere(tmp_path):
    write(tmp_path, [passed_call(), failed_call(), skipped_call(), nothing_judged_call()])
    text = (tmp_path / "junit.xml").read_text(encoding="utf-8")
    assert "None" not in text and "nan" not in text.lower()


def test_skipped_call_and_a_call_with_nothing_judged_are_skips(tmp_path):
    root = write(tmp_path, [skipped_call(), nothing_judged_call()])
    skip = case(root, "tool_call[call 0]").find("skipped")
    assert skip.get("message") == "tool_call[call 0]: requires tools: the bridge declared no tools"
    skip = case(root, "no_mock[call 0]").find("skipped")
    assert skip.get("message") == ("no_mock[call 0]: no expectation was judged (overhead_p95_ms, codec): "
                                   "needs the mock OpenAI server")


def test_a_pass_with_skipped_expectations_lists_them(tmp_path):
    c = case(write(tmp_path, [passed_call()]), "greeting[call 0]")
    assert all(c.find(v) is None for v in VERDICTS)  # a pass
    assert props(c)["skipped_expectations"] == "transcript_contains"
    out = c.find("system-out").text.splitlines()
    assert out == ["passed: turn_latency_p95_ms — measured 1027.4 ms, limit p95 ≤ 1200 ms — turn latency p95 1027 ms ≤ "
                   "1200 ms",
                   "transcript_contains — skipped: needs the mock OpenAI server in the loop"]


def test_figures_are_properties_measured_ones_only(tmp_path):
    root = write(tmp_path, [passed_call(), failed_call()])
    p = props(case(root, "greeting[call 0]"))
    assert p == {
        "call_sid": "CA" + "1" * 32, "end_reason": "hangup", "turns": "3",
        "turn_latency_ms.p50": "925.6", "turn_latency_ms.p95": "1027.5", "turn_latency_ms.max": "1038.8",
        "overhead_ms.p50": "5.7", "overhead_ms.p95": "6.9", "overhead_ms.max": "7",
        "underrun_ms": "0", "heard_ms": "5344.6", "dead_air_ms": "800", "pacing.lateness_ms_p99": "2.2",
        "openai_closed_after_hangup_ms": "1.1", "skipped_expectations": "transcript_contains",
    }  # no codec: it was not checked
    p = props(case(root, "barge_in[call 1]"))
    assert p["barge_ins"] == "1" and p["barge_in_clear_ms.max"] == "712.3" and p["talk_over_ms.max"] == "700"
    assert "truncate_error_ms.max" not in p  # not measured: left out
    assert p["codec"] == "not bit-exact" and p["codec.snr_db"] == "34.6"
    assert not any(k.startswith("turn_latency") for k in p)  # no turns, no latency


def test_suite_timestamp_and_time_are_the_scenarios(tmp_path):
    cet = dt.timezone(dt.timedelta(hours=1))
    meta = {"seconds": 31.25, "scenarios": [
        {"name": "greeting", "started_at": dt.datetime(2025, 3, 4, 10, 0, 5, 900_000, tzinfo=cet), "seconds": 12.5},
        {"name": "barge_in", "started_at": "2025-03-04T09:00:18.2+00:00", "seconds": 18.75}]}
    root = write(tmp_path, [passed_call(), failed_call()], meta)
    assert_junit_shape(root)
    g, b = root.findall("testsuite")
    assert (g.get("timestamp"), g.get("time")) == ("2025-03-04T09:00:05", "12.500")  # in UTC
    assert (b.get("timestamp"), b.get("time")) == ("2025-03-04T09:00:18", "18.750")
    assert root.get("time") == "31.250"


def test_a_scenario_skipped_before_any_call_is_a_skipped_testcase_with_the_reason(tmp_path):
    """e.g. ``transfer`` under ``callsim demo``: no Twilio in the loop, so no call is placed; CI must
    show a skip with the reason, not an empty suite."""
    meta = {"scenarios": [{"name": "greeting", "started_at": "2025-03-04T09:00:18+00:00", "seconds": 2.0,
                           "status": "passed"},
                          {"name": "transfer", "status": "skipped", "started_at": "2025-03-04T09:00:18+00:00",
                           "seconds": 0.0, "skip_reason": "requires twilio: run it with `callsim dial`"}]}
    root = write(tmp_path, [passed_call()], meta)
    assert_junit_shape(root)
    c = case(root, "transfer")
    assert c.get("classname") == "callsim.transfer"
    assert c.find("skipped").get("message") == "transfer: requires twilio: run it with `callsim dial`"
    assert {k: root.get(k) for k in COUNTS} == {"tests": "2", "failures": "0", "errors": "0", "skipped": "1"}


def test_without_scenario_records_a_suite_is_stamped_now_with_its_calls_time(tmp_path):
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    root = write(tmp_path, [passed_call(), failed_call(2), failed_call(3)])
    g, b = root.findall("testsuite")
    assert dt.datetime.fromisoformat(g.get("timestamp")) >= before
    assert b.get("time") == "18.000" and root.get("time") == "22.321"


def test_value_text():
    assert value_text("turn_latency_p95_ms", 812.34) == "812.3 ms"
    assert value_text("turn_latency_p95_ms", 600) == "600 ms"
    assert value_text("snr_min_db", 34.5678) == "34.6 dB"
    assert value_text("barge_ins", 2) == "2"
    assert value_text("end_reason", "closed_by_app") == "closed_by_app"
    assert value_text("transcript_contains", ["weather", "Paris"], limit=True) == '"weather", "Paris"'
    assert value_text("no_twilio_warnings", True, limit=True) == "none"
    assert value_text("openai_session", True, limit=True) == "required"
    assert value_text("no_underruns", 120.04) == "120 ms"
    assert value_text("turn_latency_p95_ms", None) == "not measured"
    assert value_text("turn_latency_p95_ms", float("nan")) == "not measured"


def test_properties_of_a_call_that_never_streamed_hold_no_zeros():
    m = CallMetrics(scenario="x", call_index=0, call_sid=None, status="error", error="could not connect",
                    duration_ms=float("nan"))
    assert call_properties(m) == []
