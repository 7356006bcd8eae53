"""Run every shipped scenario against foreign-style bridges, concurrently.

Each (bridge, scenario) pair gets its own mock and its own bridge process, as a user running one
scenario would: pairs then run side by side (at most ``limit`` at once, so a 2-core machine keeps
real-time calls on time) without sharing a mock's behaviour queue."""
from __future__ import annotations

from typing import Any

import trio
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.runner import ScenarioRun, run_with_mock
from callsim.simulator.scenario import load_scenarios

from .launch import running_foreign_bridge


async def run_one(name: str, scenario: Any) -> ScenarioRun:
    async with running_mock(MockConfig(any_key=True)) as mock:
        async with running_foreign_bridge(name, mock.realtime_url) as url:
            return await run_with_mock(scenario, url, mock, seed=1)


async def run_matrix(names: list[str], only: list[str] | None = None,
                     limit: int = 10) -> dict[str, dict[str, ScenarioRun]]:
    scenarios = [s for s in load_scenarios() if only is None or s.name in only]
    out: dict[str, dict[str, ScenarioRun]] = {name: {} for name in names}
    slots = trio.CapacityLimiter(limit)

    async def one(name: str, scenario: Any) -> None:
        async with slots:
            out[name][scenario.name] = await run_one(name, scenario)

    async with trio.open_nursery() as n:
        # the longest scenarios first, so the tail of the run is short ones
        for s in sorted(scenarios, key=lambda s: -sum(getattr(x, "ms", 0) or getattr(x, "timeout_ms", 0)
                                                        for x in s.steps)):
            for name in names:
                n.start_soon(one, name, s)
    return {name: {s.name: out[name][s.name] for s in scenarios} for name in names}


def describe(run: ScenarioRun) -> str:
    lines = [f"{run.scenario.name}: {run.status}" + (f" ({run.skip_reason})" if run.skip_reason else "")]
    for e in run.expectations:
        if e.status != "passed":
            lines.append(f"    {e.status} {e.name}: {e.message}")
    for m in run.metrics:
        if m.error:
            lines.append(f"    error: {m.error}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from .launch import BRIDGES

    names = sys.argv[1:] or list(BRIDGES)
    res = trio.run(run_matrix, names)
    for name in names:
        print(f"== {name}")
        for run in res[name].values():
            print("  " + describe(run))
