"""Ctrl-C as a user presses it: a real SIGINT to a `callsim` subprocess.

The first stops the run promptly, keeps what finished in the reports (marked interrupted) and
exits 130 with one line, no traceback; a second exits at once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import trio
from callsim.bridge.server import embedded
from callsim.simulator.mock.server import MockConfig, running_mock

CALLSIM = [sys.executable, "-m", "callsim.simulator"]
#: the line a scenario gets as it finishes
FINISHED = re.compile(r"^  (\w+): (passed|skipped|FAILED|ERROR) in ")
PROMPT_S = 10.0  # "promptly", with room for a loaded machine


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(CALLSIM + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "120"})


def _read_until(proc: subprocess.Popen[str], pattern: re.Pattern[str] | str, seen: list[str]) -> re.Match[str]:
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    raise AssertionError("the process ended before printing " + str(pattern) + ":\n" + "".join(seen))


def _finish(proc: subprocess.Popen[str], seen: list[str]) -> tuple[int, float, str]:
    t0 = time.monotonic()
    rest, _ = proc.communicate(timeout=60)
    return proc.returncode, time.monotonic() - t0, "".join(seen) + rest


def _no_traceback(out: str) -> None:
    assert "Traceback" not in out and "ExceptionGroup" not in out and "KeyboardInterrupt" not in out, out


def test_ctrl_c_in_demo_keeps_the_finished_scenarios_and_exits_130(tmp_path):
    proc = _start(["demo", "--only", "hangup_mid_reply", "--only", "greeting_two_turns", "--report", str(tmp_path)])
    seen: list[str] = []
    finished = _read_until(proc, FINISHED, seen).group(1)
    assert finished == "hangup_mid_reply"  # the short one: greeting_two_turns is mid-call now
    proc.send_signal(signal.SIGINT)
    rc, took, out = _finish(proc, seen)
    assert rc == 130, out
    assert took < PROMPT_S, (took, out)
    _no_traceback(out)
    # the last thing said (wrapped at the console's width, so read without the line breaks)
    tail = out[out.rindex("interrupted: 1 of 2"):]
    assert "".join(tail.split()) == "".join(
        f"interrupted: 1 of 2 scenario(s) finished; partial report: {tmp_path / 'report.json'}".split()), out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["meta"]["interrupted"] is True
    assert {c["scenario"] for c in report["calls"]} == {"hangup_mid_reply"}
    assert all(c["status"] == "passed" for c in report["calls"])
    status = {s["name"]: s["status"] for s in report["meta"]["scenarios"]}
    assert status == {"hangup_mid_reply": "passed", "greeting_two_turns": "interrupted"}
    assert (tmp_path / "junit.xml").exists() and (tmp_path / "report.html").exists()


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    proc = _start(["demo", "--only", "hangup_mid_reply", "--only", "greeting_two_turns", "--report", str(tmp_path)])
    seen: list[str] = []
    _read_until(proc, FINISHED, seen)
    proc.send_signal(signal.SIGINT)
    # the run says it is stopping; it still has to hang up, close the servers and write the reports
    _read_until(proc, r"^interrupted: hanging up", seen)
    proc.send_signal(signal.SIGINT)
    rc, took, out = _finish(proc, seen)
    assert rc == 130, out
    assert took < 2.0, (took, out)
    _no_traceback(out)
    assert "interrupted again: exiting at once" in out, out
    assert "partial report:" not in out  # it did not wait to finish writing


async def test_ctrl_c_in_call_hangs_up_and_exits_130(tmp_path):
    """`callsim call` mid-call: the caller hangs up as Twilio would, so the bridge ends its OpenAI session."""
    async with running_mock(MockConfig(any_key=True)) as mock:
        async with embedded({"openai_realtime_url": mock.realtime_url,
                             "database_path": tmp_path / "b.sqlite3"}) as base:
            proc = await trio.lowlevel.open_process(
                CALLSIM + ["call", "--target", base + "/incoming-call", "--out", str(tmp_path / "out"),
                           "--say", "caller_long_sentence", "--say", "caller_long_sentence"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            with trio.fail_after(60):
                while not any(not s.closed for s in mock.sessions.values()):  # the call is up
                    await trio.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            t0 = trio.current_time()
            with trio.fail_after(PROMPT_S):
                rc = await proc.wait()
            took = trio.current_time() - t0
            out = (await proc.stdout.receive_some(1 << 20)).decode()
            with trio.fail_after(5):  # hung up as Twilio would: the bridge closed its OpenAI session
                while any(not s.closed for s in mock.sessions.values()):
                    await trio.sleep(0.05)
    assert rc == 130, out
    assert took < PROMPT_S
    _no_traceback(out)
    assert "the call was hung up before it ended" in out, out
    assert not (tmp_path / "out").exists()
