"""A dialled call measured and judged like ``callsim call``: same scenario, expectations and reports.

The figures come from :func:`~..measure.metrics.measure_call` over the caller core that ran on the
line (:mod:`.line`), after its utterance events were moved to when they played
(:func:`~.line.to_line_time`), through the runner's own judging (``runner._measure``, the mock
not in the loop). What a real line shows differently is corrected before judging
(:func:`line_adjust`):

* **barge-in reaction**: the bridge's ``clear`` never reaches callsim (Twilio acts on it), so the
  barge-in's ``clear_ms`` (judged by ``barge_in_clear_max_ms``) is the time from our speech onset
  on the line to the end of the agent's voice in the inbound audio (0 when it had already
  stopped by our onset: nothing to react to); talk-over is the agent's voice heard over ours,
  as in ``callsim call``;
* **audio continuity** (``underrun_ms``): the inbound audio Twilio's numbering says was lost
  (the chunks skipped, :class:`~.line.Continuity`), since a line never stops sending frames and
  the agent's own pauses are not gaps. It is reported, not judged: ``no_underruns`` and
  ``underrun_max_ms`` judge a *bridge's* underruns, which a line cannot see (Twilio plays
  silence into the call when the bridge's audio runs late), so they are in :data:`LINE_UNMEASURED`;
* **Twilio's warnings** (``no_twilio_warnings``): what a bridge sends goes to Twilio, not to
  callsim, so the line cannot judge it (:data:`LINE_UNMEASURED`);
* **heard** (``heard_min_ms``/``heard_max_ms``, and ``heard_goodbye``'s "nothing left
  unheard"): skipped with :data:`LINE_UNMEASURED` as the reason. ``callsim call`` counts every
  frame of the agent's audio that played, silent or not; a line carries frames all the time, and
  the silence that leads and trails each reply cannot be told from the idle line, so what a line
  can count is the agent's voiced audio (``dial.heard_voiced_ms``), a smaller figure than the
  one the scenario's limit was set for: judged against it, a bridge ``callsim call`` passes
  would fail. And what Twilio drops of the agent's queue when its stream ends never reaches the
  caller's side, so a line cannot say a goodbye was heard whole.

What needs the mock's view (truncates, transcripts, tools, codec echo, the OpenAI session) is
skipped with :data:`SKIP_ON_A_LINE` as the reason. No bridge profile is built or written: the
caller core's wire on a line is callsim's own (its frames, no marks or clears from a bridge), so
a profile would describe callsim, not the agent's bridge. Greeting latency (answer → the agent's
first audible audio) is reported beside the turns (report.json ``dial.greeting_ms``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..audio.codec import FRAME_MS
from ..audio.utterances import default_bank
from ..caller.call_result import CallResult
from ..measure.expectations import SKIP_NO_MOCK, judge
from ..measure.measurements import CallMetrics, ExpectationResult
from ..measure.metrics import MS, summarize
from ..measure.pairing import Pairing
from ..measure.report import write_reports
from ..runner import ScenarioRun, _measure
from ..scenario import Scenario
from .line import LineCore, greeting_ms, to_line_time

#: expectations a line cannot judge as ``callsim call`` does, and why (skipped on the line)
LINE_UNMEASURED = {
    name: ("counts all the agent's audio played, its replies' leading and trailing silence included; on a phone "
           "line that silence cannot be told from the idle line, so a dialled call counts only the agent's voiced "
           "audio (report.json dial.heard_voiced_ms) and would judge the same limit against a smaller figure: "
           "run the scenario with `callsim call` for it")
    for name in ("heard_min_ms", "heard_max_ms")
}
LINE_UNMEASURED["heard_goodbye"] = (
    "whether the goodbye played whole is what Twilio still had queued for the agent's stream when it ended, "
    "which Twilio drops without a trace on the caller's side of the line; `end_reason = \"closed_by_app\"` "
    "judges the part a line can see (the agent ended the call): run the scenario with `callsim call` for the rest")

LINE_UNMEASURED.update({
    name: ("judges the bridge's underruns (its audio reaching Twilio too late to play on time), which a line "
           "cannot see: Twilio fills the gap with silence and its frames keep coming. What the line sees is "
           "inbound audio lost on the way (report.json dial.continuity: missing chunks, gap_ms, and the media "
           "clock's drift, which is not loss): run the scenario with `callsim call` for the bridge's underruns")
    for name in ("no_underruns", "underrun_max_ms")
})
LINE_UNMEASURED["no_twilio_warnings"] = (
    "judges what the bridge sends to Twilio, which goes to Twilio and never reaches the line: Twilio reports "
    "them in the agent account's debugger/Monitor Alerts, not on the line; run the scenario with `callsim call` "
    "for them")

SKIP_ON_A_LINE = ("needs the mock OpenAI server's view (what the agent's model was sent), which a dialled call "
                  "does not have: run the scenario with `callsim call` against the bridge and the mock for it")


#: ``dial.ended_by`` when Twilio ended the stream with ``stop``: the other party hung up (the agent's
#: bridge closed its stream, hung up over REST, or the call was otherwise ended on its side); the
#: scenario's ``end_reason`` is then ``closed_by_app``, as ``callsim call`` reports a bridge's close
FAR_END_HUNG_UP = "far_end_hung_up"


def line_adjust(line: LineCore, twilio_calls: list[dict[str, Any]] | None = None,  # type: ignore[no-untyped-def]
                records_error: str | None = None):
    """The corrections of a real line (see the module docstring), for ``runner._measure``; and what
    Twilio's REST records say of the call (``twilio_calls``: :mod:`.twilio_records`), when read."""

    def adjust(m: CallMetrics, result: CallResult) -> None:
        m.underrun_ms = line.continuity.gap_ms  # reported, not judged (LINE_UNMEASURED): the caller core's
        # own figure would read the agent's pauses between voiced frames as gaps
        m.twilio_calls = twilio_calls
        m.twilio_records_error = records_error
        for b in m.barge_ins:
            if b.clear_ms is not None:
                continue
            if b.talk_over_ms <= 0 or b.playback_stop_ns is None:
                # the agent's voice had stopped by our speech onset: nothing to react to, no wait
                b.clear_ns, b.clear_ms = b.onset_ns, 0.0
            else:  # the agent's voice heard over ours ended with its last frame counted in talk_over_ms
                b.clear_ns = b.playback_stop_ns
                b.clear_ms = (b.playback_stop_ns - b.onset_ns) / MS
    return adjust


def judge_line(scenario: Scenario, result: CallResult, line: LineCore, *,
               twilio_calls: list[dict[str, Any]] | None = None, records_error: str | None = None) -> ScenarioRun:
    """Measure and judge the call that ran on ``line`` (its core is ``result.core``); ``twilio_calls``:
    the calls Twilio dialled from it (judged by ``transferred_to``), None when they were not read;
    ``records_error``: why reading them failed (the expectations that need them then fail)."""
    t0 = time.time()
    if result.core is not None and result.core.t0_ns is not None:
        to_line_time(line)
    run = _measure(scenario, [result], [Pairing(None)], False, scenario.utterance_bank() or default_bank(),
                   adjust=line_adjust(line, twilio_calls, records_error), profile=False)
    rejudge = False
    for e in run.expectations:
        if e.message == SKIP_NO_MOCK:
            e.message = SKIP_ON_A_LINE
        elif e.name in LINE_UNMEASURED:
            e.status, e.message, e.measured, e.failures = "skipped", LINE_UNMEASURED[e.name], None, []
            rejudge = True
    if rejudge:  # each call's status and per-call results, from the expectations as the line judges them
        judge([m for m in run.metrics if m.status != "skipped"], run.expectations)
    for m in run.metrics:
        for d in m.expectations:
            if d.get("message") == SKIP_NO_MOCK:
                d["message"] = SKIP_ON_A_LINE
    run.started_at, run.ended_at = t0, time.time()
    if line.unechoed:
        run.notes.append(f"{line.unechoed} of {len(line.marks)} mark(s) were never echoed by Twilio: those "
                         "utterance events keep the time they were sent, not when they played")
    return run


def not_dialled(scenario: Scenario, why: str) -> ScenarioRun:
    """The skipped run of a scenario ``callsim dial`` cannot play (no call is placed): each
    expectation says why, as ``callsim call`` skips a scenario that needs a Twilio in the loop."""
    run = ScenarioRun(scenario, not_run=why, started_at=time.time())
    run.ended_at = run.started_at
    run.expectations = [ExpectationResult(name, "skipped", f"not judged: {why}", None,
                                          list(v) if isinstance(v, tuple) else v) for name, v in scenario.expect.items()]
    return run


def outcome(run: ScenarioRun) -> tuple[bool, str]:
    """(ok, one line): the scenario's status and the first failure, or what was met and skipped."""
    failed = [e for e in run.expectations if e.status == "failed"]
    skipped = [e for e in run.expectations if e.status == "skipped"]
    errors = [m.error for m in run.metrics if m.error]
    if errors:
        return False, f"scenario {run.scenario.name}: the call ended in an error: {errors[0]}"
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return False, f"scenario {run.scenario.name} failed: {failed[0].name}: {failed[0].message}{more}"
    met = len(run.expectations) - len(skipped)
    tail = f", {len(skipped)} skipped" if skipped else ""
    if run.status == "skipped":
        return True, f"scenario {run.scenario.name} skipped: {run.skip_reason}"
    return True, f"scenario {run.scenario.name} passed: {met} expectation(s) met{tail}"


def dial_summary(line: LineCore, statuses: list[dict[str, Any]], recording: dict[str, Any] | None) -> dict[str, Any]:
    """What report.json holds under ``dial``: the line's own figures."""
    return {
        "call_sid": line.start.call_sid, "stream_sid": line.start.stream_sid,
        "greeting_ms": _r(greeting_ms(line)),
        "heard_voiced_ms": float(line.counts["fed"] * FRAME_MS),
        "continuity": line.continuity.to_json(),
        "marks": {"sent": len(line.marks), "echoed": len(line.marks) - line.unechoed, "unechoed": line.unechoed},
        "inbound": dict(line.counts),
        "ended_by": FAR_END_HUNG_UP if line.stopped_by_twilio else line.core.end_reason,
        "statuses": statuses,
        "recording": recording,
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def write_dial_report(report_dir: Path, run: ScenarioRun, dial: dict[str, Any], command: str, *,
                      interrupted: bool = False) -> dict[str, Path]:
    """report.json, junit.xml, report.html and the call's recordings, as ``callsim call`` writes them;
    ``interrupted``: Ctrl-C or ``--max-duration-s`` cut the call short."""
    meta: dict[str, Any] = {
        "command": command, "target": f"dial {dial.get('call_sid') or '(no call placed)'}", "mock_in_loop": False,
        "jobs": 1, "interrupted": interrupted,
        "scenarios": [{"name": run.scenario.name, "description": run.scenario.description, "status": run.status,
                       "passed": run.passed, "skip_reason": run.skip_reason, "notes": run.notes,
                       "seconds": round((run.ended_at or 0) - (run.started_at or 0), 3),
                       "expectations": [e.to_json() for e in run.expectations]}],
        "dial": dial,
    }
    return write_reports(report_dir, list(run.calls), summarize(run.metrics), title="callsim dial report", meta=meta)
