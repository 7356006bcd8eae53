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

from .console import make_console, print_status, print_verdicts, print_wrapped, results_table
from .measure.bridge_profile import merge_profiles
from .measure.measurements import CallMetrics
from .measure.metrics import summarize
from .measure.report import write_reports
from .runner import DEFAULT_BRIDGE_HOOK, ScenarioRun, run_embedded, run_external
from .scenario import Scenario
from .server_logs import server_logs_to

log = logging.getLogger("callsim.demo")


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
            print_status(console, run)
    return runs


def run_and_report(scenarios: list[Scenario], *, report_dir: Path, target: str | None = None,
                   calls: int | None = None, hook: str = DEFAULT_BRIDGE_HOOK, auth_token: str | None = None,
                   mock_url: str | None = None, seed: int | None = 1, command: str = "") -> int:
    """Run, print the table, write report.json/junit.xml/report.html; exit code 1 if anything failed."""
    console = make_console()
    t0 = time.time()
    with server_logs_to(report_dir) as server_logs:
        runs = trio.run(lambda: _run_all(scenarios, target=target, calls=calls, hook=hook, auth_token=auth_token,
                                         mock_url=mock_url, seed=seed, console=console))
    console.print(results_table(runs, console.width))
    print_verdicts(console, runs)
    profiles = [r.profile for r in runs if r.profile is not None]
    profile = merge_profiles(profiles) if profiles else None
    if profile is not None:
        # its lines are at most 80 columns and each starts with its own label: not indented
        console.print("bridge profile (what it told OpenAI, how it treats Twilio):", markup=False, highlight=False)
        for line in profile.lines():
            print_wrapped(console, line, indent=4)
    metrics: list[CallMetrics] = [m for r in runs for m in r.metrics]
    summary = summarize(metrics)
    up, down, lat = summary["uplink_hop_ms"], summary["downlink_hop_ms"], summary["turn_latency_ms"]
    if lat["p50"] is not None:
        print_wrapped(console, f"turn latency p50 {lat['p50']:.0f} ms (max {lat['max']:.0f})", indent=2)
    if up["p50"] is not None and down["p50"] is not None:
        print_wrapped(console, f"bridge hops p50/max: caller → OpenAI {up['p50']:.1f}/{up['max']:.1f} ms, "
                      f"OpenAI → caller {down['p50']:.1f}/{down['max']:.1f} ms", indent=2)
    meta: dict[str, Any] = {
        "command": command or " ".join(sys.argv), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t0)),
        "seconds": round(time.time() - t0, 1), "target": target or f"embedded ({hook})",
        "mock_in_loop": all(r.mock_in_loop for r in runs),
        "scenarios": [{"name": r.scenario.name, "description": r.scenario.description, "status": r.status,
                       "passed": r.passed, "skip_reason": r.skip_reason, "notes": r.notes,
                       "expectations": [e.to_json() for e in r.expectations]} for r in runs],
    }
    if profile is not None:
        meta["bridge_profile"] = {"lines": profile.lines(), **profile.to_json()}
    paths = write_reports(report_dir, [c for r in runs for c in r.calls], summary, meta=meta)
    failed = [r.scenario.name for r in runs if not r.passed]
    print_wrapped(console, f"{summary['calls']} call(s): {summary['passed']} passed, {summary['failed']} failed, "
                  f"{summary['skipped']} skipped, {summary['errors']} error(s); reports:", indent=2)
    for p in paths.values():
        print_wrapped(console, str(p), first="  ", indent=2)
    print_wrapped(console, server_logs.summary(), indent=2)
    if failed:
        print_wrapped(console, f"failed: {', '.join(failed)}", indent=2, style="red")
    return 1 if failed else 0
