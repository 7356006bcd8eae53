"""report.json against its shipped JSON Schema (draft 2020-12), from a real run as a CI user makes it.

One ``callsim demo`` run over three short scenarios of our own — one passes, one fails an
expectation, one does not apply to the bridge (skipped) — writes the report folder; its
report.json must validate, and documents broken on purpose must not.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import jsonschema
import pytest
from callsim.simulator.measure.report_json import SCHEMA_NAME, schema

from tests.test_junit import assert_junit_shape

CALLSIM = [sys.executable, "-m", "callsim.simulator"]

STEPS = """
[caller]
steps = [
  { pause_ms = 200 },
  { say = "caller_stop" },
  { wait_for_audio_ms = 1500 },
  { hangup = true },
]

[mock]
replies = ["assistant_short_reply"]
think = 100
"""
SCENARIOS = {
    "s1_passes": f'name = "s1_passes"\ndescription = "hangs up during the reply"\n{STEPS}\n[expect]\n'
                 'end_reason = "hangup"\n',
    "s2_fails": f'name = "s2_fails"\ndescription = "expects more audio than any reply"\n{STEPS}\n[expect]\n'
                'heard_min_ms = 600000\n',
    "s3_skipped": f'name = "s3_skipped"\ndescription = "needs a transcoding bridge"\nrequires = ["transcoding"]\n'
                  f'{STEPS}\n[expect]\nend_reason = "hangup"\n',
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("schema_run")
    scen = base / "scenarios"
    scen.mkdir()
    for name, text in SCENARIOS.items():
        (scen / f"{name}.toml").write_text(text)
    report = base / "report"
    proc = subprocess.run(CALLSIM + ["demo", "--scenarios", str(scen), "--report", str(report)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # s2 fails
    return report, json.loads((report / "report.json").read_bytes())


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_the_schema_is_a_valid_draft_2020_12_schema():
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(s)


def test_a_real_report_validates(run):
    report, doc = run
    assert {c["scenario"]: c["status"] for c in doc["calls"]} == {
        "s1_passes": "passed", "s2_fails": "failed", "s3_skipped": "skipped"}
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(doc)]
    assert errors == []
    assert doc["$schema"] == f"./{SCHEMA_NAME}" and (report / SCHEMA_NAME).is_file()


def test_the_schema_names_every_key_of_a_real_report(run):
    """Every key the run wrote is described (in a place the schema keeps open, too)."""
    _, doc = run
    s = schema()
    assert set(doc) <= set(s["properties"])
    defs = s["$defs"]
    assert set(doc["summary"]) <= set(defs["summary"]["properties"])
    assert set(doc["meta"]) <= set(defs["meta"]["properties"])
    assert "interrupted" in defs["meta"]["properties"]
    assert "interrupted" in defs["scenario"]["properties"]["status"]["enum"]
    for sc in doc["meta"]["scenarios"]:
        assert set(sc) <= set(defs["scenario"]["properties"])
    assert set(doc["meta"]["bridge_profile"]) <= set(defs["bridge_profile"]["properties"])
    for c in doc["calls"]:
        assert set(c) <= set(defs["call"]["properties"])
        for t in c["turns"]:
            assert set(t) <= set(defs["turn"]["properties"])
        for b in c["barge_ins"]:
            assert set(b) <= set(defs["barge_in"]["properties"])
        if c["mock"] is not None:
            assert set(c["mock"]) <= set(defs["mock_summary"]["properties"])


def test_the_scenarios_start_and_duration_are_recorded_and_junit_uses_them(run):
    report, doc = run
    root = ET.parse(report / "junit.xml").getroot()
    assert_junit_shape(root)
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    starts = []
    for sc in doc["meta"]["scenarios"]:
        started = dt.datetime.fromisoformat(sc["started_at"])
        assert started.tzinfo is not None and sc["seconds"] > 0
        suite = suites[sc["name"]]
        assert suite.get("timestamp") == started.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(
            timespec="seconds")
        assert float(suite.get("time")) == pytest.approx(sc["seconds"], abs=1e-3)
        starts.append(started)
    # the scenarios run at once: each has its own start, all within the run
    assert max(starts) - min(starts) <= dt.timedelta(seconds=doc["meta"]["seconds"])
    fail = suites["s2_fails"].find("testcase/failure")
    assert fail.get("message").startswith("s2_fails[call 0]: heard_min_ms — measured ")
    assert fail.get("message").endswith(" ms, limit ≥ 600000 ms")
    skip = suites["s3_skipped"].find("testcase/skipped")
    assert skip.get("message").startswith("s3_skipped[call 0]: requires transcoding")
    assert "None" not in (report / "junit.xml").read_text(encoding="utf-8")


def _broken(doc, change):
    bad = copy.deepcopy(doc)
    change(bad)
    return list(validator().iter_errors(bad))


def test_a_wrong_document_does_not_validate(run):
    _, doc = run

    def drop_summary_calls(d):
        del d["summary"]["calls"]

    def drop_call_status(d):
        del d["calls"][0]["status"]

    def latency_as_text(d):
        d["summary"]["turn_latency_ms"]["p95"] = "fast"

    def turn_latency_as_text(d):
        d["calls"][0]["turns"][0]["latency_ms"] = "812 ms"

    def unknown_status(d):
        d["calls"][0]["status"] = "ok"

    def unknown_call_key(d):
        d["calls"][0]["latency"] = 1.0

    def count_as_float(d):
        d["summary"]["passed"] = 1.5

    for change in (drop_summary_calls, drop_call_status, latency_as_text, turn_latency_as_text, unknown_status,
                   unknown_call_key, count_as_float):
        assert _broken(doc, change), change.__name__
