"""`callsim check`: one command runs the scenario set against a user's bridge and prints its
profile, lints and verdicts — here against a foreign-style bridge with no tools, as a user would."""

from __future__ import annotations

import json

import trio
from callsim.simulator.mock.server import MockConfig, running_mock

from tests.foreign.launch import running_foreign_bridge
from tests.test_cli import CALLSIM


async def test_check_prints_profile_verdicts_and_skips_with_reasons(tmp_path):
    report = tmp_path / "report"
    async with running_mock(MockConfig(any_key=True)) as mock:
        async with running_foreign_bridge("no_tools", mock.realtime_url) as url:
            proc = await trio.run_process(
                CALLSIM + ["check", "--target", url, "--mock-url", mock.http_url, "--only", "hangup_mid_reply",
                           "--only", "tool_call", "--report", str(report)],
                capture_stdout=True, capture_stderr=True, check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()  # a skip is not a failure
    assert "hangup_mid_reply: passed" in out
    assert "tool_call: skipped" in out and "requires tools: the bridge declared no tools" in out
    assert "bridge profile" in out and "tools: none" in out and "greets first: yes" in out
    assert "bridge hops p50/max: caller → OpenAI" in out
    assert "2 call(s): 1 passed, 0 failed, 1 skipped, 0 error(s)" in out
    assert "in-process" not in out  # the bridge and the mock both ran elsewhere: no log line about them
    doc = json.loads((report / "report.json").read_text())
    assert doc["summary"]["skipped"] == 1 and doc["summary"]["passed"] == 1
    skipped = next(c for c in doc["calls"] if c["scenario"] == "tool_call")
    assert skipped["status"] == "skipped" and "declared no tools" in skipped["skip_reason"]
    junit = (report / "junit.xml").read_text()
    assert '<skipped message="tool_call[call 0]: requires tools: the bridge declared no tools' in junit
    assert 'skipped="1"' in junit
