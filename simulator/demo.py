"""``callsim demo`` and ``callsim call --scenario``: run scenarios, show progress, print the table, write reports."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .measure.bridge_profile import merge_profiles
from .measure.measurements import CallMetrics
from .measure.metrics import summarize
from .measure.report import write_reports
from .runner import DEFAULT_BRIDGE_HOOK, ScenarioRun, run_embedded, run_external
from .scenario import Scenario
from .server_logs import server_logs_to

log = logging.getLogger("callsim.demo")


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def _worst(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def results_table(runs: list[ScenarioRun]) -> Table:
    t = Table(title="callsim results", header_style="bold")
    for col in ("scenario", "calls", "result", "turn latency max ms", "overhead max ms", "barge-in clear ms",
                "truncate err ms", "codec", "underrun ms", "failed expectations"):
        t.add_column(col, overflow="fold")
    for run in runs:
        ms = run.metrics
        turns = [tm for m in ms for tm in m.turns]
        bis = [b for m in ms for b in m.barge_ins]
        codec = [m.codec for m in ms if m.codec.checked]
        if codec:
            c = "bit-exact" if all(x.bit_exact for x in codec) else \
                f"SNR {min((x.snr_db for x in codec if x.snr_db is not None), default=float('nan')):.1f} dB"
        else:
            c = "—"
        failed = [e for e in run.expectations if e.status == "failed"]
        result = {"passed": "[green]passed", "skipped": "[yellow]skipped", "error": "[red]error"}.get(
            run.status, "[red]failed")
        t.add_row(
            run.scenario.name, str(len(ms)), result,
            _ms(_worst([x.latency_ms for x in turns])), _ms(_worst([x.overhead_ms for x in turns])),
            _ms(_worst([b.clear_ms for b in bis])), _ms(_worst([b.truncate_error_ms for b in bis])), c,
            _ms(sum(m.underrun_ms for m in ms)),
            "\n".join(f"{e.name}: {e.message}" for e in failed) or
            "\n".join(m.error or "" for m in ms if m.error) or (run.skip_reason or ""),
        )
    return t


async def _run_all(scenarios: list[Scenario], *, target: str | None, calls: int | None, hook: str,
                   auth_token: str | None, mock_url: str | None, seed: int | None,
                   console: Console) -> list[ScenarioRun]:
    total = sum(calls or s.calls for s in scenarios)
    runs: list[ScenarioRun] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False, disable=not console.is_terminal) as progress:
        task = progress.add_task("calls", total=total)
        for s in scenarios:
            progress.update(task, description=f"{s.name}")
            if not console.is_terminal:
                console.print(f"running {s.name} ({calls or s.calls} call(s)) ...")
            if target is None:
                run = await run_embedded(s, calls=calls, hook=hook, seed=seed,
                                         on_call_done=lambda: progress.advance(task))
            else:
                run = await run_external(s, target, calls=calls, auth_token=auth_token, mock_url=mock_url,
                                         seed=seed, on_call_done=lambda: progress.advance(task))
            runs.append(run)
            status = {"passed": "passed", "skipped": "skipped"}.get(run.status, run.status.upper())
            why = f" — {run.skip_reason}" if run.status == "skipped" and run.skip_reason else ""
            console.print(f"  {s.name}: {status} in {run.seconds:.1f} s{why}", markup=False)
            for note in run.notes:
                console.print(f"    note: {note}", markup=False)
    return runs


def run_and_report(scenarios: list[Scenario], *, report_dir: Path, target: str | None = None,
                   calls: int | None = None, hook: str = DEFAULT_BRIDGE_HOOK, auth_token: str | None = None,
                   mock_url: str | None = None, seed: int | None = 1, command: str = "") -> int:
    """Run, print the table, write report.json/junit.xml/report.html; exit code 1 if anything failed."""
    console = Console(stderr=False)
    if not console.is_terminal:  # CI logs: wide enough for the table
        console = Console(stderr=False, width=160)
    t0 = time.time()
    with server_logs_to(report_dir) as server_logs:
        runs = trio.run(lambda: _run_all(scenarios, target=target, calls=calls, hook=hook, auth_token=auth_token,
                                         mock_url=mock_url, seed=seed, console=console))
    console.print(results_table(runs))
    profiles = [r.profile for r in runs if r.profile is not None]
    profile = merge_profiles(profiles) if profiles else None
    if profile is not None:
        console.print("bridge profile (what it told OpenAI, how it treats Twilio):", markup=False)
        for line in profile.lines():
            console.print(f"  {line}", markup=False, highlight=False)
    metrics: list[CallMetrics] = [m for r in runs for m in r.metrics]
    summary = summarize(metrics)
    up, down, lat = summary["uplink_hop_ms"], summary["downlink_hop_ms"], summary["turn_latency_ms"]
    if up["p50"] is not None and down["p50"] is not None:
        console.print(f"turn latency p50 {lat['p50']:.0f} ms; through the bridge: caller → OpenAI p50 "
                      f"{up['p50']:.1f} ms (max {up['max']:.1f}), OpenAI → caller p50 {down['p50']:.1f} ms "
                      f"(max {down['max']:.1f})", markup=False, highlight=False)
    meta: dict[str, Any] = {
        "command": command or " ".join(sys.argv), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t0)),
        "seconds": round(time.time() - t0, 1), "target": target or f"embedded ({hook})",
        "mock_in_loop": all(r.mock_in_loop for r in runs),
        "scenarios": [{"name": r.scenario.name, "description": r.scenario.description, "status": r.status,
                       "passed": r.passed, "skip_reason": r.skip_reason, "notes": r.notes,
                       "started_at": r.started_at, "seconds": r.seconds,
                       "expectations": [e.to_json() for e in r.expectations]} for r in runs],
    }
    if profile is not None:
        meta["bridge_profile"] = {"lines": profile.lines(), **profile.to_json()}
    paths = write_reports(report_dir, [c for r in runs for c in r.calls], summary, meta=meta)
    failed = [r.scenario.name for r in runs if not r.passed]
    console.print(f"{summary['calls']} call(s): {summary['passed']} passed, {summary['failed']} failed, "
                  f"{summary['skipped']} skipped, {summary['errors']} error(s); "
                  f"reports: " + ", ".join(str(p) for p in paths.values()), markup=False)
    console.print(server_logs.summary(), markup=False, highlight=False)
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}")
    return 1 if failed else 0
