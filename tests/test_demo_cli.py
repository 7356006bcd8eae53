"""`callsim demo` and `callsim call --scenario` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import trio
from callsim.bridge.server import embedded
from callsim.simulator.mock.server import MockConfig, running_mock

CALLSIM = [sys.executable, "-m", "callsim.simulator"]
ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # so the broken-bridge hooks in tests/ import


def test_demo_runs_a_scenario_and_writes_the_three_reports(tmp_path):
    proc = subprocess.run(CALLSIM + ["demo", "--only", "hangup_mid_reply", "--report", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hangup_mid_reply" in proc.stdout and "passed" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    s = report["summary"]
    for key in ("calls", "passed", "failed", "turn_latency_ms", "overhead_ms", "barge_in_clear_ms",
                "talk_over_ms", "truncate_error_ms", "codec", "underrun_ms_total"):
        assert key in s, key
    assert s["calls"] == 1 and s["passed"] == 1 and s["turn_latency_ms"]["p50"] > 0
    call = report["calls"][0]
    assert call["scenario"] == "hangup_mid_reply" and call["status"] == "passed"
    assert {"turns", "barge_ins", "codec", "expectations"} <= set(call)
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert suite.find(".//testcase") is not None
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html


def test_demo_exits_1_when_an_expectation_fails(tmp_path):
    proc = subprocess.run(CALLSIM + ["demo", "--only", "hangup_mid_reply", "--report", str(tmp_path),
                                     "--bridge-hook", "tests.broken_bridges:leaky_openai"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failed: hangup_mid_reply" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["failed"] == 1
    failed = [e for e in report["calls"][0]["expectations"] if e["status"] == "failed"]
    assert [e["name"] for e in failed] == ["openai_closed_within_ms"]
    assert ET.parse(tmp_path / "junit.xml").getroot().find(".//failure") is not None


def test_unknown_scenario_is_a_usage_error(tmp_path):
    proc = subprocess.run(CALLSIM + ["demo", "--only", "nope", "--report", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown scenario" in proc.stderr


async def test_call_scenario_against_an_external_bridge_with_and_without_the_mock(tmp_path):
    """A bridge reached only over the wire; with --mock-url every expectation is judged."""
    async with running_mock(MockConfig(any_key=True)) as mock:
        async with embedded({"openai_realtime_url": mock.realtime_url,
                             "database_path": tmp_path / "b.sqlite3"}) as base:
            with_mock = await trio.run_process(
                CALLSIM + ["call", "--target", base + "/incoming-call", "--scenario", "hangup_mid_reply",
                           "--mock-url", mock.http_url, "--report", str(tmp_path / "a")],
                capture_stdout=True, capture_stderr=True, check=False)
            without = await trio.run_process(
                CALLSIM + ["call", "--target", base + "/incoming-call", "--scenario", "hangup_mid_reply",
                           "--report", str(tmp_path / "b")],
                capture_stdout=True, capture_stderr=True, check=False)
    assert with_mock.returncode == 0, with_mock.stdout.decode() + with_mock.stderr.decode()
    assert without.returncode == 0, without.stdout.decode() + without.stderr.decode()
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    exp_a = {e["name"]: e for e in a["calls"][0]["expectations"]}
    exp_b = {e["name"]: e for e in b["calls"][0]["expectations"]}
    assert exp_a["openai_closed_within_ms"]["status"] == "passed"
    assert exp_b["openai_closed_within_ms"]["status"] == "skipped"
    assert "mock" in exp_b["openai_closed_within_ms"]["message"]
    assert exp_b["end_reason"]["status"] == "passed"  # judged at the caller alone


def test_the_servers_log_goes_to_the_report_folder_not_over_the_console(tmp_path):
    """openai_drops makes the in-process bridge log an ERROR on purpose; a passing run must not
    print it over the console (it reads like a failure): it goes to servers.log, and the
    console says how many warnings and errors the servers logged, and where."""
    proc = subprocess.run(CALLSIM + ["demo", "--only", "openai_drops", "--report", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "ERROR" not in out and "OpenAI session failed" not in out, out
    log = (tmp_path / "servers.log").read_text()
    assert "ERROR callsim.bridge" in log and "OpenAI session failed" in log
    # the console wraps the line at its width: the path goes on a line of its own, and a path longer
    # than a line is cut
    said = f"in-process bridge/mock logged 0 warning(s) and 1 error(s): {tmp_path / 'servers.log'}"
    assert "".join(said.split()) in "".join(out.split())


def _demo(tmp_path: Path, name: str, *args: str) -> dict:
    proc = subprocess.run(CALLSIM + ["demo", "--only", "hangup_mid_reply", "--only", "codec_transcode",
                                     "--only", "openai_drops", "--report", str(tmp_path / name), *args],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / name / "report.json").read_text())


def test_concurrent_demo_places_the_same_calls_and_gives_the_same_verdicts_as_sequential(tmp_path):
    """Scenarios run at once, each with its own mock and bridge: the same seeded calls (same SIDs),
    the same verdicts, in the scenario files' order — and they really overlap in time."""
    concurrent, sequential = _demo(tmp_path, "concurrent"), _demo(tmp_path, "sequential", "--sequential")

    def verdicts(report: dict) -> list:
        return [(c["scenario"], c["call_index"], c["call_sid"], c["status"],
                 sorted((e["name"], e["status"]) for e in c["expectations"])) for c in report["calls"]]

    assert verdicts(concurrent) == verdicts(sequential)
    names = [s["name"] for s in concurrent["meta"]["scenarios"]]
    assert names == ["codec_transcode", "hangup_mid_reply", "openai_drops"]  # the files' order, not finishing order
    assert [s["status"] for s in concurrent["meta"]["scenarios"]] == ["passed"] * 3
    assert concurrent["meta"]["jobs"] > 1 and sequential["meta"]["jobs"] == 1
    assert concurrent["meta"]["interrupted"] is False

    def spans(report: dict) -> list[tuple[str, str]]:
        return [(s["started_at"], s["ended_at"]) for s in report["meta"]["scenarios"]]

    # ISO timestamps of one run, one time zone: they compare as strings
    assert max(a for a, _ in spans(concurrent)) < min(b for _, b in spans(concurrent))  # all ran at once
    ordered = sorted(spans(sequential))
    assert all(prev_end <= start for (_, prev_end), (start, _) in zip(ordered, ordered[1:]))


def test_jobs_must_be_at_least_one_and_excludes_sequential(tmp_path):
    proc = subprocess.run(CALLSIM + ["demo", "--jobs", "0", "--report", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--jobs: must be at least 1, got 0" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = subprocess.run(CALLSIM + ["demo", "--jobs", "2", "--sequential", "--report", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr
