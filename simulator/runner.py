"""Run scenarios: place the calls, collect what the caller and the mock saw, measure, judge.

Two ways to have a bridge in the loop:

* **embedded** (``callsim demo``, the pytest plugin): for each scenario a mock
  OpenAI server and a bridge are started in this process on loopback. The
  bridge is loaded *by name* from a hook (default ``bridge.server:embedded``:
  an async context manager taking a settings dict, yielding the base URL), so
  the harness never imports bridge code and any bridge with such a hook can be
  run the same way.
* **external** (``callsim call --target URL --scenario S``): any bridge, ours
  or a team's, reached over the wire. If it is pointed at a running
  ``callsim mock-openai``, pass ``mock_url`` and the scenario's mock behaviour
  is set there and the mock's records are fetched afterwards; otherwise the
  expectations that need the mock are reported as skipped.

Calls of one scenario start 100 ms apart; that also lets each call be paired
with its mock session by the order the sessions opened.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import random
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio

from .caller_trio import CallResult, place_call
from .expectations import evaluate, judge
from .measurements import CallMetrics, ExpectationResult
from .metrics import measure_call
from .mock.server import MockConfig, MockServer, running_mock
from .report import CallArtifacts
from .scenario import Scenario
from .utterances import UtteranceBank, default_bank

log = logging.getLogger("callsim.runner")

DEFAULT_BRIDGE_HOOK = "bridge.server:embedded"
CALL_STAGGER_S = 0.1
BridgeHook = Callable[[dict[str, Any]], AbstractAsyncContextManager[str]]


@dataclass
class ScenarioRun:
    scenario: Scenario
    calls: list[CallArtifacts] = field(default_factory=list)
    expectations: list[ExpectationResult] = field(default_factory=list)
    mock_in_loop: bool = False
    seconds: float = 0.0

    @property
    def metrics(self) -> list[CallMetrics]:
        return [c.metrics for c in self.calls]

    @property
    def passed(self) -> bool:
        return all(c.metrics.status == "passed" for c in self.calls)


def load_hook(spec: str) -> BridgeHook:
    """``module:attribute`` → the bridge hook (imported by name, at run time)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"bridge hook must be 'module:callable', got {spec!r}")
    return getattr(importlib.import_module(module), attr)


def _behaviour_json(scenario: Scenario) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(dataclasses.asdict(scenario.mock)))


async def _place_calls(url: str, scenario: Scenario, n: int, auth_token: str | None,
                       seed: int | None, on_call_done: Callable[[], None] | None) -> list[CallResult]:
    results: list[CallResult | None] = [None] * n

    async def one(i: int) -> None:
        await trio.sleep(i * CALL_STAGGER_S)
        rng = random.Random(None if seed is None else f"{seed}:{scenario.name}:{i}")
        # everything the scenario carries about placing a call reaches it (the command line's
        # --from/--to/--param/--max-duration-s/--fixtures arrive here through Scenario.with_overrides)
        results[i] = await place_call(url, list(scenario.steps), auth_token=auth_token,
                                      impairments=scenario.impairments, rng=rng,
                                      parties=scenario.call_parties(rng), bank=scenario.utterance_bank(),
                                      custom_parameters=dict(scenario.custom_parameters),
                                      max_duration_ms=scenario.max_duration_ms)
        if on_call_done:
            on_call_done()

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return [r for r in results if r is not None]


def _pair_sessions(results: list[CallResult], snapshots: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Match each call to the mock session its bridge opened: first session opened after its start."""
    starts = [(r.core.t0_ns if r.core is not None and r.core.t0_ns is not None else None, i)
              for i, r in enumerate(results)]
    free = sorted((s for s in snapshots if s.get("t_open_ns")), key=lambda s: s["t_open_ns"])
    paired: list[dict[str, Any] | None] = [None] * len(results)
    for t0, i in sorted((s for s in starts if s[0] is not None), key=lambda x: x[0]):
        for j, snap in enumerate(free):
            if snap["t_open_ns"] >= t0 - 5_000_000:  # the bridge opens OpenAI on 'start'
                paired[i] = snap
                free.pop(j)
                break
    return paired


def _measure(scenario: Scenario, results: list[CallResult], snaps: list[dict[str, Any] | None],
             mock_in_loop: bool, bank: UtteranceBank) -> ScenarioRun:
    run = ScenarioRun(scenario, mock_in_loop=mock_in_loop)
    for i, (r, snap) in enumerate(zip(results, snaps)):
        m = measure_call(r, scenario=scenario.name, call_index=i, mock=snap, bank=bank,
                         behaviour_echo=scenario.mock.echo, created_delay_ms=scenario.mock.created_delay_ms)
        run.calls.append(CallArtifacts(m, r, snap))
    run.expectations = evaluate(scenario.expect, run.metrics, mock_in_loop=mock_in_loop)
    judge(run.metrics, run.expectations)
    return run


async def run_embedded(scenario: Scenario, *, calls: int | None = None, hook: str = DEFAULT_BRIDGE_HOOK,
                       seed: int | None = 1, workdir: Path | None = None,
                       on_call_done: Callable[[], None] | None = None) -> ScenarioRun:
    """Mock + bridge (by hook) + callers, all in this trio run, on loopback."""
    t_start = time.monotonic()
    n = calls or scenario.calls
    bank = default_bank()
    behaviour = scenario.mock if scenario.mock.seed is not None or seed is None else scenario.mock.with_(seed=seed)
    bridge_hook = load_hook(hook)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="callsim-"))
    mock_cfg = MockConfig(any_key=True, dialect=scenario.mock_dialect, behaviour=behaviour)
    async with running_mock(mock_cfg) as mock:
        config = {"openai_realtime_url": mock.realtime_url, "database_path": tmp / f"{scenario.name}.sqlite3",
                  **scenario.bridge}
        async with bridge_hook(config) as base_url:
            results = await _place_calls(base_url.rstrip("/") + "/incoming-call", scenario, n, None, seed,
                                         on_call_done)
            if not await mock.wait_all_closed(2.0):
                log.warning("scenario %s: %d OpenAI session(s) still open 2 s after the last call",
                            scenario.name, mock.open_sessions)
        snaps = [s.snapshot() for s in mock.sessions.values()]
    run = _measure(scenario, results, _pair_sessions(results, snaps), True, bank)
    run.seconds = time.monotonic() - t_start
    return run


async def run_with_mock(scenario: Scenario, target: str, mock: MockServer, *, calls: int | None = None,
                        auth_token: str | None = None, seed: int | None = None) -> ScenarioRun:
    """A bridge reached over the wire that talks to an in-process mock (the pytest plugin's case)."""
    t_start = time.monotonic()
    n = calls or scenario.calls
    mock.set_behaviour(scenario.mock, next_sessions=n)
    known = set(mock.sessions)
    results = await _place_calls(target, scenario, n, auth_token, seed, None)
    await mock.wait_all_closed(3.0)
    snaps = [s.snapshot() for sid, s in mock.sessions.items() if sid not in known]
    run = _measure(scenario, results, _pair_sessions(results, snaps), True, default_bank())
    run.seconds = time.monotonic() - t_start
    return run


async def run_external(scenario: Scenario, target: str, *, calls: int | None = None,
                       auth_token: str | None = None, mock_url: str | None = None, seed: int | None = None,
                       on_call_done: Callable[[], None] | None = None) -> ScenarioRun:
    """Any bridge over the wire; the mock's records only if ``mock_url`` points at it."""
    t_start = time.monotonic()
    n = calls or scenario.calls
    bank = default_bank()
    snaps: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=10) as http:
        if mock_url:
            r = await http.post(f"{mock_url.rstrip('/')}/_mock/behaviour", params={"next_sessions": n},
                                content=orjson.dumps(_behaviour_json(scenario)))
            r.raise_for_status()
        results = await _place_calls(target, scenario, n, auth_token, seed, on_call_done)
        if mock_url:
            with trio.move_on_after(3):
                while True:  # the bridge closes its OpenAI sessions after the calls end
                    listing = (await http.get(f"{mock_url.rstrip('/')}/_mock/sessions")).json()
                    if listing["open_sessions"] == 0:
                        break
                    await trio.sleep(0.1)
            first = min((r.core.t0_ns for r in results if r.core and r.core.t0_ns), default=0)
            for s in listing["sessions"]:
                if (s.get("t_open_ns") or 0) >= first - 5_000_000:
                    snaps.append((await http.get(f"{mock_url.rstrip('/')}/_mock/sessions/{s['id']}")).json())
    run = _measure(scenario, results, _pair_sessions(results, snaps) if mock_url else [None] * len(results),
                   bool(mock_url), bank)
    run.seconds = time.monotonic() - t_start
    return run
