"""``callsim demo`` and ``callsim call --scenario``: run scenarios, show progress, print the table, write reports."""

from __future__ import annotations

import datetime as _dt
import logging
import sys
import time
from collections.abc import Callable
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

from .interrupt import EXIT_INTERRUPTED, CtrlC
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
                   console: Console, jobs: int, ctrl_c: CtrlC) -> list[ScenarioRun]:
    """Run the scenarios, ``jobs`` at a time; the runs come back in the scenarios' order.

    The scenarios are independent: each embedded one starts its own mock and bridge on free ports,
    seeds its calls by (seed, scenario, call) and tags its mock behaviour, so running them at once
    changes no call, only the wall time — most of a scenario is waiting in real time (speech is
    played at 1x). A line is printed per scenario as it finishes. After the first Ctrl-C the
    scenarios still running are cancelled (their calls hang up) and come back marked interrupted.
    """
    total = sum(calls or s.calls for s in scenarios)
    done: list[ScenarioRun | None] = [None] * len(scenarios)
    limiter = trio.CapacityLimiter(max(1, jobs))
    running: list[str] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False, disable=not console.is_terminal) as progress:
        task = progress.add_task("calls", total=total)

        def show_running() -> None:
            progress.update(task, description=f"{len(running)} scenario(s) running" if len(running) > 1
                            else (running[0] if running else "calls"))

        async def one(i: int, s: Scenario) -> None:
            async with limiter:
                running.append(s.name)
                show_running()
                try:
                    if target is None:
                        run = await run_embedded(s, calls=calls, hook=hook, seed=seed,
                                                 on_call_done=lambda: progress.advance(task))
                    else:
                        run = await run_external(s, target, calls=calls, auth_token=auth_token,
                                                 mock_url=mock_url, seed=seed,
                                                 on_call_done=lambda: progress.advance(task))
                finally:
                    running.remove(s.name)
                    show_running()
            done[i] = run
            print_status(console, run)

        at_once = min(max(1, jobs), len(scenarios))
        console.print(f"running {len(scenarios)} scenario(s)" + (f", {at_once} at a time" if at_once > 1 else "")
                      + " ...", markup=False, highlight=False)

        async def all_of_them() -> None:
            async with trio.open_nursery() as nursery:
                for i, s in enumerate(scenarios):
                    nursery.start_soon(one, i, s)

        await ctrl_c.run(all_of_them)
    return [r if r is not None else ScenarioRun(s, interrupted=True) for r, s in zip(done, scenarios)]


def _when(t: float | None) -> str | None:
    return None if t is None else _dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def _interrupted_note(console: Console) -> Callable[[], None]:
    def note() -> None:
        console.print("interrupted: hanging up the calls in progress, then writing the partial report "
                      "(Ctrl-C again to quit at once)", markup=False, highlight=False)
        console.file.flush()
    return note


def run_and_report(scenarios: list[Scenario], *, report_dir: Path, target: str | None = None,
                   calls: int | None = None, hook: str = DEFAULT_BRIDGE_HOOK, auth_token: str | None = None,
                   mock_url: str | None = None, seed: int | None = 1, command: str = "",
                   jobs: int = 1) -> int:
    """Run, print the table, write report.json/junit.xml/report.html; exit code 1 if anything failed.

    ``jobs``: embedded scenarios run at once (each with its own mock and bridge; ``callsim demo``
    passes its ``--jobs``). Against a
    ``target`` they run one at a time whatever ``jobs`` says: they share that bridge and its mock,
    whose queued behaviours go to sessions in the order these open, not by scenario.
    Ctrl-C: see :mod:`.interrupt`; the partial report is written and the status is 130.
    """
    console = make_console()
    ctrl_c = CtrlC(on_first=_interrupted_note(console))
    with ctrl_c.exits_at_once():
        return _run_and_report(scenarios, report_dir=report_dir, target=target, calls=calls, hook=hook,
                               auth_token=auth_token, mock_url=mock_url, seed=seed, command=command,
                               jobs=jobs if target is None else 1, console=console, ctrl_c=ctrl_c)


def _run_and_report(scenarios: list[Scenario], *, report_dir: Path, target: str | None, calls: int | None,
                    hook: str, auth_token: str | None, mock_url: str | None, seed: int | None, command: str,
                    jobs: int, console: Console, ctrl_c: CtrlC) -> int:
    t0 = time.time()
    with server_logs_to(report_dir) as server_logs:
        runs = trio.run(lambda: _run_all(scenarios, target=target, calls=calls, hook=hook, auth_token=auth_token,
                                         mock_url=mock_url, seed=seed, console=console, jobs=jobs,
                                         ctrl_c=ctrl_c))
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
        "mock_in_loop": all(r.mock_in_loop for r in runs if not r.interrupted),
        "jobs": jobs, "interrupted": ctrl_c.interrupted,
        "scenarios": [{"name": r.scenario.name, "description": r.scenario.description, "status": r.status,
                       "passed": r.passed, "skip_reason": r.skip_reason, "notes": r.notes,
                       "started_at": _when(r.started_at), "ended_at": _when(r.ended_at),
                       "seconds": None if r.interrupted else round(r.seconds, 3),
                       "expectations": [e.to_json() for e in r.expectations]} for r in runs],
    }
    if profile is not None:
        meta["bridge_profile"] = {"lines": profile.lines(), **profile.to_json()}
    paths = write_reports(report_dir, [c for r in runs for c in r.calls], summary, meta=meta)
    failed = [r.scenario.name for r in runs if not r.passed and not r.interrupted]
    print_wrapped(console, f"{summary['calls']} call(s): {summary['passed']} passed, {summary['failed']} failed, "
                  f"{summary['skipped']} skipped, {summary['errors']} error(s); reports:", indent=2)
    for p in paths.values():
        print_wrapped(console, str(p), first="  ", indent=2)
    # which servers ran here: ours (the demo), only the mock (a --target run), or none (--mock-url too)
    in_process = "bridge/mock" if target is None else None if mock_url else "mock"
    if in_process is not None:
        print_wrapped(console, server_logs.summary(in_process), indent=2)
    if failed:
        print_wrapped(console, f"failed: {', '.join(failed)}", indent=2, style="red")
    if ctrl_c.interrupted:
        finished = sum(not r.interrupted for r in runs)
        print_wrapped(console, f"interrupted: {finished} of {len(runs)} scenario(s) finished; partial report: "
                      f"{paths['json']}", indent=2)
        return EXIT_INTERRUPTED
    return 1 if failed else 0
