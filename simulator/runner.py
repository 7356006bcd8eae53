"""Run scenarios: place the calls, collect what the caller and the mock saw, measure, judge.

Two ways to have a bridge in the loop:

* **embedded** (``callsim demo``, the pytest plugin): for each scenario a mock
  OpenAI server and a bridge are started in this process on loopback. The
  bridge is loaded *by name* from a hook (default ``callsim.bridge.server:embedded``:
  an async context manager taking a settings dict, yielding the base URL), so
  the harness never imports bridge code and any bridge with such a hook can be
  run the same way.
* **external** (``callsim call --target URL --scenario S``, ``callsim check``): any bridge, ours or
  a team's, reached over the wire. If it is pointed at a running ``callsim mock-openai``, pass
  ``mock_url``: the scenario's behaviour is queued there *under a tag of this run*, withdrawn when
  the calls are done (so a call that never reached OpenAI cannot hand it to the next scenario), and
  the mock's records are fetched afterwards; otherwise the expectations that need the mock are
  reported as skipped.

Verdicts must not depend on how a bridge is built (design.md rule 5): calls are paired with mock
sessions by what they sent (:mod:`.pairing`), every session must have run this scenario's behaviour
(else the call is an error, with the reason), a scenario that needs something the bridge does not
offer (:attr:`Scenario.requires`, learned from the wire by :mod:`.bridge_profile`) is skipped with the
reason, and every call with the mock in the loop is checked for the OpenAI session's lifecycle.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
import trio

from .audio.utterances import UtteranceBank, default_bank
from .bridge_hook import BridgeHook as BridgeHook, check_config, load_hook  # BridgeHook: re-exported
from .caller.trio_driver import CallResult, place_call
from .measure.bridge_profile import BridgeProfile, merge_profiles, profile_call
from .measure.expectations import evaluate, judge
from .measure.measurements import CallMetrics, ExpectationResult
from .measure.metrics import measure_call
from .measure.pairing import Pairing, call_tag_hex, pair_calls
from .measure.renewals import needs_frame_timings
from .measure.report import CallArtifacts
from .measure.truncate_diagnosis import diagnose_truncate
from .mock.behaviour import Behaviour
from .mock.server import MockConfig, MockServer, running_mock
from .net.drive import open_call_services
from .scenario import NEEDS_TWILIO, Scenario

log = logging.getLogger("callsim.runner")

DEFAULT_BRIDGE_HOOK = "callsim.bridge.server:embedded"
CALL_STAGGER_S = 0.1
#: every call with the mock in the loop: the OpenAI session closes within this after the caller's stop
DEFAULT_OPENAI_CLOSE_MS = 1000.0


@dataclass
class ScenarioRun:
    scenario: Scenario
    calls: list[CallArtifacts] = field(default_factory=list)
    expectations: list[ExpectationResult] = field(default_factory=list)
    mock_in_loop: bool = False
    seconds: float = 0.0
    profile: BridgeProfile | None = None  # what the bridge told OpenAI and how it treats Twilio
    notes: list[str] = field(default_factory=list)  # what the user should know about this run
    started_at: float | None = None  # wall clock (epoch seconds) when it started: junit.xml's timestamp
    ended_at: float | None = None  # ... and when it was measured
    interrupted: bool = False  # stopped by Ctrl-C before it finished: no calls, nothing judged
    #: the whole scenario was skipped before any call was placed, and why (it needs a Twilio in the loop)
    not_run: str | None = None

    @property
    def metrics(self) -> list[CallMetrics]:
        return [c.metrics for c in self.calls]

    @property
    def status(self) -> str:
        """``interrupted`` if stopped by Ctrl-C, ``error`` if a call errored, ``failed`` if one failed,
        ``skipped`` if none applied, else ``passed``."""
        if self.interrupted:
            return "interrupted"
        if self.not_run is not None:
            return "skipped"
        st = {m.status for m in self.metrics}
        for s in ("error", "failed"):
            if s in st:
                return s
        return "skipped" if st == {"skipped"} else "passed"

    @property
    def passed(self) -> bool:
        """Nothing failed or errored (skipped calls do not fail a run; they are reported with the reason)."""
        return self.status in ("passed", "skipped")

    @property
    def skip_reason(self) -> str | None:
        if self.not_run is not None:
            return self.not_run
        reasons = list(dict.fromkeys(m.skip_reason for m in self.metrics if m.skip_reason))
        return "; ".join(reasons) if reasons else None


def _behaviour_json(behaviour: Behaviour) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(dataclasses.asdict(behaviour)))


#: at most this many further sessions per call are given the scenario's behaviour
MAX_RENEWAL_SESSIONS = 16
#: further sessions per call given the scenario's behaviour in every scenario: a bridge that reconnects
#: after OpenAI drops it (or retries a refused handshake) must meet the scenario's mock again, not the
#: mock's default behaviour (which makes the call an error). Those not used are withdrawn after the calls.
RECONNECT_SESSIONS = 3


def spare_sessions(scenario: Scenario) -> int:
    """Further mock sessions queued per call of ``scenario``, beyond the call's first: its renewals, and
    at least :data:`RECONNECT_SESSIONS` for a bridge that reconnects — whatever the scenario, since
    whether a bridge reconnects is how it is built, not what the scenario asks."""
    return max(renewal_sessions(scenario), RECONNECT_SESSIONS)


def renewal_sessions(scenario: Scenario) -> int:
    """Further mock sessions a call of ``scenario`` may open when its bridge renews the OpenAI session
    before the mock's maximum duration: each gets the scenario's behaviour too. A bridge renews at
    most once per half limit, plus one for a session opened on an expiry."""
    limit, call_s = scenario.mock.max_session_s, scenario.max_duration_s
    if limit >= call_s:
        return 0
    return min(MAX_RENEWAL_SESSIONS, int(math.ceil(call_s / (limit / 2))) + 1)


def _close_wait_s(scenario: Scenario) -> float:
    limit = scenario.expect.openai_closed_within_ms
    return max(float(limit or 0.0), DEFAULT_OPENAI_CLOSE_MS) / 1000 + 1.0


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
                                      max_duration_ms=scenario.max_duration_ms, services=services)
        if on_call_done:
            on_call_done()

    # the calls' ticks run from one timer task and their messages are read by one reactor, owned here
    async with open_call_services() as services, trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return [r for r in results if r is not None]


# ====================================================================== the mock, in process or over HTTP


class MockAccess(Protocol):
    """What a run needs of the mock, wherever it runs."""

    async def queue(self, behaviour: Behaviour, n: int, tag: str) -> None: ...
    async def withdraw(self, tag: str) -> int: ...
    async def wait_closed(self, tag: str, timeout: float) -> None: ...
    async def snapshots(self, tag: str, line_tags: set[str], since_ns: int,
                        timings: bool = False) -> list[dict[str, Any]]:
        """This run's sessions' full records; ``timings`` adds each session's per-frame arrays (append_ns,
        delta_ns, block_ns, block_crc), which only the renewal's frame-timed expectations read."""
        ...


def _ours(s: dict[str, Any], tag: str, line_tags: set[str], since_ns: int) -> bool:
    """A session of this run: it ran our behaviour, heard one of our calls, or opened during the run."""
    return (s.get("behaviour_tag") == tag or bool(line_tags & set(s.get("line_tags") or {}))
            or (s.get("t_open_ns") or 0) >= since_ns)


class InProcessMock:
    def __init__(self, server: MockServer) -> None:
        self.server = server

    async def queue(self, behaviour: Behaviour, n: int, tag: str) -> None:
        self.server.set_behaviour(behaviour, next_sessions=n, tag=tag)

    async def withdraw(self, tag: str) -> int:
        return self.server.withdraw_behaviour(tag)

    async def wait_closed(self, tag: str, timeout: float) -> None:
        with trio.move_on_after(timeout):
            while any(not s.closed and s.behaviour_tag == tag for s in self.server.sessions.values()):
                await trio.sleep(0.02)

    async def snapshots(self, tag: str, line_tags: set[str], since_ns: int,
                        timings: bool = False) -> list[dict[str, Any]]:
        out = []
        for s in list(self.server.sessions.values()):
            short = s.snapshot(full=False)
            if _ours(short, tag, line_tags, since_ns):
                out.append(s.snapshot(timings=timings))
        return out


class HttpMock:
    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http, self.base = http, url.rstrip("/")

    async def queue(self, behaviour: Behaviour, n: int, tag: str) -> None:
        r = await self.http.post(f"{self.base}/_mock/behaviour", params={"next_sessions": n, "tag": tag},
                                 content=orjson.dumps(_behaviour_json(behaviour)))
        r.raise_for_status()

    async def withdraw(self, tag: str) -> int:
        r = await self.http.delete(f"{self.base}/_mock/behaviour", params={"tag": tag})
        r.raise_for_status()
        return int(r.json().get("withdrawn", 0))

    async def _listing(self) -> list[dict[str, Any]]:
        return (await self.http.get(f"{self.base}/_mock/sessions")).json()["sessions"]

    async def wait_closed(self, tag: str, timeout: float) -> None:
        with trio.move_on_after(timeout):
            while any(s.get("open") and s.get("behaviour_tag") == tag for s in await self._listing()):
                await trio.sleep(0.1)

    async def snapshots(self, tag: str, line_tags: set[str], since_ns: int,
                        timings: bool = False) -> list[dict[str, Any]]:
        out = []
        for s in await self._listing():
            if _ours(s, tag, line_tags, since_ns):
                out.append((await self.http.get(f"{self.base}/_mock/sessions/{s['id']}",
                                                params={"timings": "1" if timings else "0"})).json())
        return out


# ============================================================================ one scenario


def needs_twilio(scenario: Scenario) -> ScenarioRun | None:
    """The skipped run of a scenario that needs a Twilio in the loop (``requires = ["twilio"]``): no call is
    placed by `callsim call`/`check`/`demo`, each expectation says why; None when the scenario can run here."""
    if "twilio" not in scenario.requires:
        return None
    why = NEEDS_TWILIO.format(name=scenario.name)
    run = ScenarioRun(scenario, not_run=why, started_at=time.time())
    run.ended_at = run.started_at
    run.expectations = [ExpectationResult(name, "skipped", f"not judged: {why}", None,
                                          list(v) if isinstance(v, tuple) else v) for name, v in scenario.expect.items()]
    return run


async def _run(scenario: Scenario, target: str, mock: MockAccess | None, *, n: int, auth_token: str | None,
               seed: int | None, on_call_done: Callable[[], None] | None, bank: UtteranceBank,
               external: bool) -> ScenarioRun:
    if (skipped := needs_twilio(scenario)) is not None:
        return skipped
    t_start, started_at = time.monotonic(), time.time()
    since_ns = time.monotonic_ns()
    tag = f"{scenario.name}#{uuid.uuid4().hex[:12]}"
    spare = n * spare_sessions(scenario)
    if mock is not None:
        await mock.queue(scenario.mock, n + spare, tag)
    withdrawn = 0
    try:
        results = await _place_calls(target, scenario, n, auth_token, seed, on_call_done)
    finally:
        # even when the run is cancelled (Ctrl-C): a behaviour left queued on a mock that outlives
        # this run would be handed to whoever calls next
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            withdrawn = await mock.withdraw(tag) if mock is not None else 0
    snaps: list[dict[str, Any]] = []
    if mock is not None:
        await mock.wait_closed(tag, _close_wait_s(scenario))
        snaps = await mock.snapshots(tag, {t for r in results if (t := call_tag_hex(r))}, since_ns,
                                     timings=needs_frame_timings(scenario.expect))
    pairings = pair_calls(results, snaps) if mock is not None else [Pairing(None) for _ in results]
    run = _measure(scenario, results, pairings, mock is not None, bank, tag)
    withdrawn = max(0, withdrawn - spare)  # the spare sessions a bridge did not need are not calls
    if withdrawn:
        run.notes.append(f"{withdrawn} call(s) never opened an OpenAI session: their share of the scenario's mock "
                         "behaviour was withdrawn, so no later call runs with it")
    if external and scenario.bridge:
        settings = ", ".join(f"{k}={v!r}" for k, v in scenario.bridge.items())
        run.notes.append(f"[bridge] settings ({settings}) apply to our in-process bridge only: they were not "
                         f"applied to {target}; whether the scenario applies is decided from what the bridge did")
    run.seconds = time.monotonic() - t_start
    run.started_at, run.ended_at = started_at, time.time()
    return run


def _measure(scenario: Scenario, results: list[CallResult], pairings: list[Pairing], mock_in_loop: bool,
             bank: UtteranceBank, tag: str | None = None,
             adjust: Callable[[CallMetrics, CallResult], None] | None = None, profile: bool = True) -> ScenarioRun:
    """Measure and judge one scenario's calls. ``adjust``: what a leg measured its own way
    (``callsim dial`` on a real line) corrects in each call's figures before they are judged.
    ``profile=False``: no bridge profile (and so no skip by :attr:`Scenario.requires`), for a leg
    whose caller core saw no bridge's wire: on a line the core's frames are callsim's own, so a
    profile would describe callsim (no marks, no clears) whatever the bridge did."""
    run = ScenarioRun(scenario, mock_in_loop=mock_in_loop)
    tools = tuple(r.tool.name for r in scenario.mock.rules if r.tool is not None)
    profiles: list[BridgeProfile] = []
    for i, (r, p) in enumerate(zip(results, pairings)):
        snap = p.snapshot
        m = measure_call(r, scenario=scenario.name, call_index=i, mock=snap, bank=bank,
                         behaviour_echo=scenario.mock.echo, created_delay_ms=scenario.mock.created_delay_ms,
                         sessions=p.sessions or None)
        m.pairing = p.how and (p.how + (f": {p.note}" if p.note else ""))
        if adjust is not None:
            adjust(m, r)
        if snap is not None:
            m.behaviour_tag = snap.get("behaviour_tag")
            if tag is not None and m.behaviour_tag != tag and m.status != "error":
                ran = f"behaviour {m.behaviour_tag!r}" if m.behaviour_tag else "the mock's default behaviour"
                m.status, m.error = "error", (
                    f"the mock session {snap.get('id')} paired with this call ran {ran}, not this scenario's "
                    f"({tag}): it was opened before the scenario queued its behaviour (a pre-opened session?) "
                    "or took another call's — its replies and faults are not this scenario's")
        for b in m.barge_ins:
            if b.truncate_error_ms:
                b.truncate_cause = diagnose_truncate(b, r.core, snap)
        prof = profile_call(snap, r.core, m.barge_ins) if profile and r.core is not None else None
        if prof is not None:
            profiles.append(prof)
            _applicability(scenario, m, prof, tools)
        run.calls.append(CallArtifacts(m, r, snap))
    run.profile = merge_profiles(profiles) if profiles else None
    expect = scenario.expect
    if mock_in_loop and expect.openai_closed_within_ms is None:
        expect = dataclasses.replace(expect, openai_closed_within_ms=DEFAULT_OPENAI_CLOSE_MS)
    judged = [m for m in run.metrics if m.status != "skipped"]
    if judged:
        run.expectations = evaluate(expect, judged, mock_in_loop=mock_in_loop, implicit_session_check=mock_in_loop)
        judge(judged, run.expectations)
    else:  # the scenario does not apply to this bridge: nothing is judged, and each expectation says why
        run.expectations = [ExpectationResult(name, "skipped", f"not judged: {run.skip_reason}", None,
                                              list(v) if isinstance(v, tuple) else v) for name, v in expect.items()]
    return run


def _applicability(scenario: Scenario, m: CallMetrics, prof: BridgeProfile, tools: tuple[str, ...]) -> None:
    """Skip a call whose scenario needs what this bridge does not offer (never when the need is unknown,
    and never when OpenAI refused the session: that is the bridge's failure, judged as such)."""
    if m.status == "error" or getattr(prof, "refused", False) is True:
        return
    for need in scenario.requires:
        if prof.caps.get(need) == "absent" or (need == "tools" and prof.caps.get(need) == "offered"
                                               and prof.missing_reason(need, tools)):
            m.status = "skipped"
            m.skip_reason = f"requires {need}: {prof.missing_reason(need, tools)}"
            return


# ============================================================================ entry points


async def run_embedded(scenario: Scenario, *, calls: int | None = None, hook: str = DEFAULT_BRIDGE_HOOK,
                       seed: int | None = 1, workdir: Path | None = None,
                       on_call_done: Callable[[], None] | None = None) -> ScenarioRun:
    """Mock + bridge (by hook) + callers, all in this trio run, on loopback."""
    if (skipped := needs_twilio(scenario)) is not None:
        return skipped  # before a mock and a bridge are started for nothing
    n = calls or scenario.calls
    behaviour = scenario.mock if scenario.mock.seed is not None or seed is None else scenario.mock.with_(seed=seed)
    scenario = dataclasses.replace(scenario, mock=behaviour)
    bridge_hook = load_hook(hook)
    check_config(bridge_hook, scenario.bridge, str(scenario.path or scenario.name))  # before anything starts
    tmp = Path(workdir or tempfile.mkdtemp(prefix="callsim-"))
    mock_cfg = MockConfig(any_key=True, dialect=scenario.mock_dialect, behaviour=behaviour)
    async with running_mock(mock_cfg) as mock:
        config = {"openai_realtime_url": mock.realtime_url, "database_path": tmp / f"{scenario.name}.sqlite3",
                  **scenario.bridge}
        async with bridge_hook(config) as base_url:
            return await _run(scenario, base_url.rstrip("/") + "/incoming-call", InProcessMock(mock), n=n,
                              auth_token=None, seed=seed, on_call_done=on_call_done, bank=scenario.utterance_bank() or default_bank(),
                              external=False)


async def run_with_mock(scenario: Scenario, target: str, mock: MockServer, *, calls: int | None = None,
                        auth_token: str | None = None, seed: int | None = None) -> ScenarioRun:
    """A bridge reached over the wire that talks to an in-process mock (the pytest plugin's case)."""
    return await _run(scenario, target, InProcessMock(mock), n=calls or scenario.calls, auth_token=auth_token,
                      seed=seed, on_call_done=None, bank=scenario.utterance_bank() or default_bank(), external=True)


async def run_external(scenario: Scenario, target: str, *, calls: int | None = None,
                       auth_token: str | None = None, mock_url: str | None = None, seed: int | None = None,
                       on_call_done: Callable[[], None] | None = None) -> ScenarioRun:
    """Any bridge over the wire; the mock's records only if ``mock_url`` points at it."""
    n = calls or scenario.calls
    async with httpx.AsyncClient(timeout=10) as http:
        return await _run(scenario, target, HttpMock(http, mock_url) if mock_url else None, n=n,
                          auth_token=auth_token, seed=seed, on_call_done=on_call_done, bank=scenario.utterance_bank() or default_bank(),
                          external=True)
