"""What `callsim demo` / `callsim call --scenario` / `callsim check` print: it fits the console.

The unit tests render the table and the verdict lines of made-up runs; the subprocess tests run
`callsim demo` as a user does — in a terminal (rich forced to one by ``TTY_COMPATIBLE=1``) at 80
and 120 columns, and piped as in CI — on a scenario that must fail and one that is skipped, and
measure every line that reaches the screen.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from callsim.bridge.server import embedded
from callsim.simulator.console import (
    PIPED_WIDTH,
    console_width,
    print_verdicts,
    results_table,
    verdict_lines,
    wrap,
)
from callsim.simulator.measure.expectation_hints import HINTS, hint, show_limit, show_measured
from callsim.simulator.measure.expectation_text import unit
from callsim.simulator.measure.expectations import CHECKS
from callsim.simulator.measure.measurements import BargeInMetrics, CallMetrics, CodecMetrics, TurnMetrics
from callsim.simulator.measure.report import CallArtifacts
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.runner import ScenarioRun
from callsim.simulator.scenario import Scenario
from rich.console import Console

CALLSIM = [sys.executable, "-m", "callsim.simulator"]
LONG = "barge_in_on_a_jittery_line_ab"  # longer than every shipped name



def visible_lines(out: str) -> list[str]:
    """What a terminal shows of ``out``: colour codes dropped, and each redraw of a live line (``\\r``)
    measured on its own, as it starts again at column 0."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    return [seg for line in plain.rstrip("\n").split("\n") for seg in line.split("\r") if seg or "\r" not in line]


# ===================================================================== made-up runs


def _run(name: str, *metrics: CallMetrics, seconds: float = 9.5) -> ScenarioRun:
    return ScenarioRun(Scenario(name=name, steps=()), calls=[CallArtifacts(m, None) for m in metrics],
                       seconds=seconds)


def _call(name: str, i: int = 0, **kw) -> CallMetrics:
    return CallMetrics(scenario=name, call_index=i, call_sid=f"CA{i}", **kw)


def _failed(name: str, expectation: str, measured, limit, i: int = 0, message: str = "x") -> CallMetrics:
    m = _call(name, i, status="failed")
    m.turns = [TurnMetrics(0, "caller_stop", 0, latency_ms=1040.4, overhead_ms=3.2)]
    m.expectations = [{"name": expectation, "status": "failed", "limit": limit, "measured": measured,
                       "message": message}]
    return m


def _runs() -> list[ScenarioRun]:
    barge = _call(LONG)
    barge.turns = [TurnMetrics(0, "caller_greeting", 0, latency_ms=1040.2, overhead_ms=4.1)]
    barge.barge_ins = [BargeInMetrics(0, "caller_barge_in", clear_ms=42.0, truncate_error_ms=0.0)]
    codec = _call("codec_transcode")
    codec.codec = CodecMetrics(checked=True, bit_exact=False, snr_db=35.71)
    skipped = _call("tool_call", status="skipped", skip_reason="requires tools: the bridge declared no tools")
    skipped.turns = [TurnMetrics(0, "caller_stop", 0, latency_ms=639.0, overhead_ms=2.0)]  # not shown
    slow = _failed("greeting_two_turns", "turn_latency_p95_ms", 1039.0, 1)
    slow.expectations.append({"name": "overhead_p95_ms", "status": "skipped", "limit": 150, "measured": None,
                              "message": "needs the mock OpenAI server in the loop"})
    return [
        _run(LONG, barge), _run("codec_transcode", codec), _run("greeting_two_turns", slow),
        _run("tool_call", skipped),
        _run("openai_drops", _call("openai_drops", status="error",
                                   error="webhook failed: connection refused by 127.0.0.1:5050 after three "
                                         "attempts, the bridge is not listening")),
    ]


def _render(renderable_or_fn, width: int) -> list[str]:
    con = Console(width=width, force_terminal=False, color_system=None)
    with con.capture() as cap:
        if callable(renderable_or_fn):
            renderable_or_fn(con)
        else:
            con.print(renderable_or_fn)
    return cap.get().splitlines()


# ========================================================================= width


def test_the_width_is_columns_then_the_terminal_then_100_when_piped():
    assert console_width({"COLUMNS": "80"}, 200) == 80
    assert console_width({}, 132) == 132
    assert console_width({}, None) == PIPED_WIDTH == 100  # CI logs: not 160
    assert console_width({"COLUMNS": "junk"}, None) == 100


# ========================================================================= table


@pytest.mark.parametrize("width", [80, 100, 120, 160])
def test_the_table_fits_and_keeps_scenario_names_whole(width):
    runs = _runs()
    lines = _render(results_table(runs, width), width)
    assert max(len(x) for x in lines) <= width, "\n".join(lines)
    for r in runs:
        row = [x for x in lines if x.startswith(r.scenario.name + " ")]
        assert len(row) == 1, (r.scenario.name, lines)  # whole, on one line, leading its row
        assert re.match(rf"{r.scenario.name}\s+1\s+{r.status}\b", row[0]), row[0]
    text = "\n".join(lines)
    assert "…" not in text and "failed expectations" not in text
    assert "1040" in text and "SNR 35.7 dB" in text
    assert "639" not in text  # a skipped scenario's figures are not what it is about


def test_the_narrow_table_puts_barge_in_and_codec_in_one_details_cell_the_wide_one_a_column_each():
    narrow = "\n".join(_render(results_table(_runs(), 80), 80))
    # the details cell wraps between its parts when a long name takes the room, never inside one
    assert "clear 42 ms," in narrow and "trunc ±0 ms" in narrow and "details" in narrow
    assert "talk-over" not in narrow
    wide = "\n".join(_render(results_table(_runs(), 140), 140))
    assert "talk-over" in wide and "details" not in wide and "time" in wide and "9.5" in wide


# ====================================================================== verdicts


def test_each_failure_is_one_line_with_measured_limit_and_what_to_fix():
    lines = verdict_lines(_runs())
    assert ("failed", "greeting_two_turns[call 0]: turn_latency_p95_ms — measured 1039 ms, limit p95 ≤ 1 ms — "
            + hint("turn_latency_p95_ms")) in lines
    assert ("error", "openai_drops[call 0]: webhook failed: connection refused by 127.0.0.1:5050 after three "
            "attempts, the bridge is not listening") in lines
    assert ("skipped", "tool_call: requires tools: the bridge declared no tools") in lines
    assert ("skipped", "greeting_two_turns[call 0] overhead_p95_ms — needs the mock OpenAI server in the "
            "loop") in lines
    assert [label for label, _ in lines] == ["failed", "error", "skipped", "skipped"]  # failures first


def test_skipped_expectations_of_several_calls_share_one_line_and_errored_calls_list_none():
    calls = []
    for i in range(3):
        m = _call("barge_in", i)
        m.expectations = [{"name": n, "status": "skipped", "limit": 1, "measured": None,
                           "message": "needs the mock OpenAI server in the loop"}
                          for n in ("overhead_p95_ms", "truncate_error_max_ms")]
        calls.append(m)
    calls.append(_call("barge_in", 3, status="error", error="the call never connected"))
    calls[-1].expectations = [{"name": "overhead_p95_ms", "status": "skipped", "limit": 1, "measured": None,
                               "message": "not judged: the call ended in an error"}]
    assert verdict_lines([_run("barge_in", *calls)]) == [
        ("error", "barge_in[call 3]: the call never connected"),
        ("skipped", "barge_in[calls 0–2] overhead_p95_ms, truncate_error_max_ms — needs the mock OpenAI "
                    "server in the loop"),
    ]


def test_many_failing_calls_of_one_expectation_are_counted_not_listed():
    calls = [_failed("load", "dead_air_max_ms", 3000.0 + i, 2000, i) for i in range(8)]
    lines = verdict_lines([_run("load", *calls)])
    assert len(lines) == 6 and lines[-1] == ("failed", "load: dead_air_max_ms failed in 3 more call(s): "
                                                        "see report.html")


def test_a_failure_with_nothing_measured_says_what_happened_instead():
    m = _failed("barge_in", "barge_in_clear_max_ms", None, 300,
                message="barge-in clear: no clear received after the caller started talking over the "
                        "assistant — the bridge must send Twilio a clear")
    (label, text), = verdict_lines([_run("barge_in", m)])
    assert text == ("barge_in[call 0]: barge_in_clear_max_ms — barge-in clear: no clear received after the "
                    "caller started talking over the assistant, limit ≤ 300 ms — " + hint("barge_in_clear_max_ms"))


@pytest.mark.parametrize("width", [60, 80, 120])
def test_verdict_lines_wrap_between_words_with_a_hanging_indent(width):
    runs = _runs()
    lines = _render(lambda con: print_verdicts(con, runs), width)
    body = [x for x in lines if x]
    assert max(len(x) for x in lines) <= width
    starts = [x for x in body if not x.startswith(" ")]
    assert len(starts) == len(verdict_lines(runs))  # one entry per verdict; the rest hang under it
    assert all(x.startswith(" " * 8) and not x.startswith(" " * 9) for x in body if x not in starts)
    words = " ".join(" ".join(body).split())
    for _, text in verdict_lines(runs):
        assert text in words  # nothing cut inside a word: joined back, every line is whole
    assert not re.search(r"\d\n", "\n".join(lines))  # never a number at the end of a line without its unit


def test_wrap_cuts_only_a_word_longer_than_the_line():
    long = wrap("reports: " + "/x" * 50, 40, 2)
    assert long[0] == "reports:" and all(len(x) <= 40 for x in long)  # the path starts a line of its own
    assert "".join(x.strip() for x in long[1:]) == "/x" * 50
    assert wrap("waited 1234 ms here", 12) == ["waited", "    1234 ms", "    here"]
    assert wrap("x — measured 16500 ms, limit ≤ 3000 ms", 30) == ["x — measured 16500 ms,", "    limit ≤ 3000 ms"]
    assert wrap("skipped a[calls 0–4] b", 16) == ["skipped", "    a[calls 0–4]", "    b"]


# ================================================================== per kind


def test_every_expectation_kind_has_a_hint_and_reads_with_its_unit():
    assert set(HINTS) == set(CHECKS)
    for name in CHECKS:
        assert hint(name, None, None), name
    assert show_measured("snr_min_db", 21.04) == "measured 21.0 dB" and show_limit("snr_min_db", 30) == \
        "limit ≥ 30.0 dB"
    assert show_limit("heard_max_ms", 9000) == "limit ≤ 9000 ms"
    for name, measured, limit in (("heard_goodbye", "hangup", True), ("end_reason", "hangup", "closed_by_app")):
        assert "`callsim dial` + `callsim twilio-emulator`" in hint(name, measured, limit)
    assert show_limit("replies_after_last_utterance_min", 3) == \
        "expected ≥ 3 reply(ies) after the caller's last utterance"
    assert show_measured("replies_after_last_utterance_min", 1) == "measured 1 reply(ies)"
    assert show_limit("end_reason", "hangup") == "expected hangup"
    # one source of units: the console line reads each amount with the unit the reports give it
    for name in CHECKS:
        if unit(name):
            assert show_measured(name, 12).startswith("measured 12") and f" {unit(name)}" in show_measured(name, 12), name
    assert "before the caller was done" in hint("end_reason", "closed_by_app", "hangup")


# ============================================================ as a user runs it

FAILING = """\
name = "turn_latency_limit_one_ms"
description = "A limit no bridge meets: its failure must read as one line"

[caller]
steps = [
  { pause_ms = 200 },
  { say = "caller_stop" },
  { wait_for_reply = { quiet_ms = 400, timeout_ms = 5000 } },
  { hangup = true },
]

[mock]
replies = ["assistant_short_reply"]
think = 100

[expect]
turn_latency_p95_ms = 1
end_reason = "hangup"
transcript_contains = ["stop"]  # needs the mock: skipped without it
"""

SKIPPED = """\
name = "needs_transcoding_so_skipped"
description = "Requires a transcoding bridge: ours passes mu-law through"
requires = ["transcoding"]

[caller]
steps = [{ pause_ms = 200 }, { say = "caller_stop" }, { hangup = true }]

[expect]
end_reason = "hangup"
"""

FAIL_NAME = "turn_latency_limit_one_ms"


def _scenarios(tmp_path: Path) -> Path:
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "failing.toml").write_text(FAILING)
    (d / "skipped.toml").write_text(SKIPPED)
    return d


def _env(**kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TTY_COMPATIBLE", "FORCE_COLOR",
                                                             "NO_COLOR", "TERM")}
    return {**env, **kw}


@pytest.mark.parametrize("mode,columns", [("terminal", 80), ("terminal", 120), ("piped", None)])
def test_demo_fits_the_console_and_lists_failures_and_skips_one_line_each(tmp_path, mode, columns):
    env = _env(**({"COLUMNS": str(columns)} if columns else {}),
               **({"TTY_COMPATIBLE": "1", "TERM": "xterm-256color"} if mode == "terminal" else {}))
    proc = subprocess.run(CALLSIM + ["demo", "--scenarios", str(_scenarios(tmp_path)), "--report", "r"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    width = columns or PIPED_WIDTH
    lines = visible_lines(proc.stdout)
    if mode == "terminal":
        assert "\x1b[" in proc.stdout  # rich did take it for a terminal (colour, live progress)
    assert max(len(x) for x in lines) <= width, "\n".join(x for x in lines if len(x) > width)
    text = "\n".join(lines)
    for name, status in ((FAIL_NAME, "failed"), ("needs_transcoding_so_skipped", "skipped")):
        assert re.search(rf"^{name}\s+1\s+{status}\b", text, re.M), text  # whole, in its row
    failure = [x for x in lines if x.startswith(f"failed  {FAIL_NAME}[call 0]: turn_latency_p95_ms")]
    assert len(failure) == 1, text
    joined = " ".join(text.split())
    assert re.search(rf"failed {re.escape(FAIL_NAME)}\[call 0\]: turn_latency_p95_ms — measured \d+ ms, "
                     r"limit p95 ≤ 1 ms — the bridge answers late", joined), text
    assert re.search(r"skipped needs_transcoding_so_skipped: requires transcoding: \S", joined), text
    assert "failed expectations" not in text
    if width >= 100:  # the failure itself fits one line there; at 80 its hint hangs under it
        assert "limit p95 ≤ 1 ms" in failure[0]


async def test_call_scenario_lists_the_expectations_skipped_without_the_mock(tmp_path):
    """Against a bridge reached over the wire without --mock-url the expectations that need the mock are
    skipped: one line says which, for which call, and why."""
    d = _scenarios(tmp_path)
    async with running_mock(MockConfig(any_key=True)) as mock:
        async with embedded({"openai_realtime_url": mock.realtime_url,
                             "database_path": tmp_path / "b.sqlite3"}) as base:
            proc = await trio.run_process(
                CALLSIM + ["call", "--target", base + "/incoming-call", "--scenario", str(d / "failing.toml"),
                           "--report", str(tmp_path / "r")],
                capture_stdout=True, capture_stderr=True, check=False, env=_env(COLUMNS="80"))
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    lines = visible_lines(out)
    assert max(len(x) for x in lines) <= 80, out
    joined = " ".join(out.split())
    assert f"skipped {FAIL_NAME}[call 0] transcript_contains — needs the mock OpenAI server" in joined, out
    assert f"failed {FAIL_NAME}[call 0]: turn_latency_p95_ms — measured" in joined, out


def test_visible_lines_take_each_redraw_of_a_live_line_apart():
    assert visible_lines("\x1b[32mab\x1b[0m\r\x1b[2Kabcdef\nxy\n") == ["ab", "abcdef", "xy"]
