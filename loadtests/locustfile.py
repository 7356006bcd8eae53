"""Locust load test: one Locust user per simulated Twilio caller, measured like ``callsim demo``.

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8080 \\
           [--scenario hangup_mid_reply] [--mock-url http://127.0.0.1:8765] [--auth-token TOKEN]

Each user is one phone line placing calls of a scenario back to back: it POSTs
``{host}{--webhook-path}`` like Twilio (signed when ``--auth-token`` or
``$TWILIO_AUTH_TOKEN`` is set), follows the TwiML's ``<Connect><Stream>`` and
runs the scenario's caller script in real time through the gevent driver
(:mod:`callsim.simulator.caller.gevent_driver`; trio cannot run in a gevent-patched process).
After each call it measures the call exactly as ``callsim demo`` does
(:func:`callsim.simulator.measure.metrics.measure_call`, then the scenario's ``[expect]`` on that
one call) and fires Locust request events, so Locust's UI, CSV and HTML report
carry the caller's figures (``request_type="call"``, response time in ms):

==================  =============================================================
``call_setup``      webhook POST + WebSocket handshake + ``connected``/``start`` sent;
                    a failure when the call could not be placed
``call``            the call's duration; a failure when the stream broke or was aborted
``turn_latency``    per turn: end of caller speech → first assistant audio played; a
                    failure ("no reply") when none came, timed by how long the caller waited
``overhead``        per turn, with ``--mock-url``: latency minus the mock's VAD wait and think
``barge_in_clear``  per barge-in: speech onset → ``clear`` (clamped at 0: Locust has no
                    negative times; a clear on line noise before the speech counts as 0)
``truncate_error``  per barge-in, with ``--mock-url``: |truncate ``audio_end_ms`` − audio heard|
``pacing_jitter``   the call's p99 lateness of its own 20 ms frames (the harness's health)
``twilio_warnings`` a failure when the bridge sent messages Twilio would flag
``expect:NAME``     a failure per scenario expectation the call violates (its message)
==================  =============================================================

Locust keeps response times > 100 ms in 10 ms buckets and > 1 s in 100 ms
buckets for its percentiles (averages are exact): the JSON report of
``callsim demo`` is the place for exact per-call figures.

``--mock-url`` names the ``callsim mock-openai`` the bridge talks to: the
scenario's ``[mock]`` behaviour is set there at test start, and after each call
its mock session is found (by open time, as :mod:`callsim.simulator.runner` pairs them;
see :class:`MockSessions`) and measured too. Without it the expectations that
need the mock are skipped, as in ``callsim call``. A scenario's ``[bridge]``
settings only apply to in-process runs: an external bridge must be started with
them (e.g. ``AI_GREETING`` for ``greeting_two_turns``).

Distributed: ``--processes N`` (or ``--master`` + ``--worker``s) on one machine;
over several machines one ``--master --master-bind-host 0.0.0.0`` and
``--worker --master-host MASTER [--processes -1]`` on each load machine. Custom
arguments are given to the master only: Locust forwards them to the workers.
``--mock-url`` needs the workers on the mock's machine: pairing a call with its
session, and the OpenAI-close delay, compare the caller's ``time.monotonic_ns``
with the mock's, which is one clock per machine. Workers elsewhere find no
session (every call then fails ``no mock session``, loudly); run them without
``--mock-url``.

Stopping: with ``--stop-timeout S`` calls in progress finish and are measured;
otherwise (and on Ctrl-C) a user's call in progress is hung up (``stop``, socket
closed) and not reported, since a cut call says nothing about the bridge.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.lock
import orjson
import requests
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.caller.call_result import CallResult
from callsim.simulator.caller.gevent_driver import GeventCall
from callsim.simulator.measure.expectations import evaluate, judge
from callsim.simulator.measure.measurements import CallMetrics
from callsim.simulator.measure.metrics import measure_call
from callsim.simulator.measure.timeline import UtteranceStart
from callsim.simulator.scenario import Scenario, ScenarioError, find_scenario
from locust import User, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner

log = logging.getLogger("callsim.locust")

DEFAULT_SCENARIO = "hangup_mid_reply"
REQUEST_TYPE = "call"
MS = 1_000_000  # ns


# ================================================================= options


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    # on the parser itself, not an argument group: only Locust's parser knows is_secret (web UI field)
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO,
                   help=f"scenario name (fixtures/scenarios) or .toml path (default {DEFAULT_SCENARIO}: a "
                        "~4 s call with one turn that hangs up mid-reply — many set-ups and hang-ups per "
                        "minute, a turn latency per call, no bridge-specific settings needed)")
    parser.add_argument("--webhook-path", default="/incoming-call", help="voice webhook path on --host")
    parser.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN", ""), is_secret=True,
                   help="sign the webhook and stream upgrade with X-Twilio-Signature ($TWILIO_AUTH_TOKEN)")
    parser.add_argument("--mock-url", default="",
                   help="http://host:port of the `callsim mock-openai` the bridge uses: sets the scenario's "
                        "mock behaviour and measures the mock side (overhead, truncate error, ...)")
    parser.add_argument("--call-pause-ms", type=float, default=200.0,
                   help="each user waits uniform(0, this) ms between calls (default 200)")
    parser.add_argument("--max-call-s", type=float, default=120.0,
                   help="hang up any call after this long, whatever the script says (default 120)")


_scenarios: dict[str, Scenario] = {}


def _abort(environment: Any) -> None:
    """Stop the run with exit code 2 (bad arguments). Deferred: quitting from inside test_start,
    while the runner is still starting, is ignored until the run time is up."""
    environment.process_exit_code = 2
    gevent.spawn_later(0, environment.runner.quit)


def scenario_for(environment: Any) -> Scenario:
    """The run's scenario, loaded once per process (workers get the name from the master)."""
    name = environment.parsed_options.scenario
    if name not in _scenarios:
        _scenarios[name] = find_scenario(name)
    return _scenarios[name]


@events.test_start.add_listener
def _test_start(environment: Any, **_kw: Any) -> None:
    """Fail fast on a bad scenario or host; set the scenario's behaviour on the mock."""
    opts = environment.parsed_options
    try:
        scenario = scenario_for(environment)
    except ScenarioError as exc:
        log.error("%s", exc)
        _abort(environment)
        return
    if isinstance(environment.runner, MasterRunner):
        return  # the workers place the calls and talk to the mock
    if not environment.host:
        log.error("--host (the bridge's base URL, e.g. http://127.0.0.1:8080) is required")
        _abort(environment)
        return
    bank = default_bank()
    for fixture in scenario.says:  # convert once now, not in the middle of the first calls
        bank.get(fixture)
    if scenario.bridge:
        log.warning("scenario %s sets bridge settings %s: they apply to in-process runs only; start the "
                    "bridge under test with them", scenario.name, scenario.bridge)
    if opts.mock_url:
        body = orjson.dumps(dataclasses.asdict(scenario.mock))  # what Behaviour.from_dict reads back
        try:
            r = requests.post(opts.mock_url.rstrip("/") + "/_mock/behaviour", data=body, timeout=10)
            r.raise_for_status()
        except requests.RequestException as exc:
            log.error("could not set the scenario's behaviour on the mock at %s: %s", opts.mock_url, exc)
            _abort(environment)


# ============================================================ mock sessions


class MockSessions:
    """The mock's sessions as seen by this process, shared by all its users.

    Pairing by what was sent: each call's idle line carries its line tag
    (:mod:`callsim.simulator.audio.linetag`), and the mock lists the tags each session heard, so a
    call's session is the one that heard its tag — across worker processes too. Only a
    bridge that converts the audio destroys the tag; then calls are paired by time as
    before (start order, the first free untagged session opened after the start), and
    two calls started within a few ms in different processes may swap sessions.

    Why shared and throttled: the session list is one HTTP request that the mock
    answers on its real-time event loop, and it grows with every session the mock
    keeps (up to 1,000: ~0.5 MB of JSON, ~20 ms of that loop on this machine).
    One list every :attr:`MIN_LIST_INTERVAL_S` serves all the calls of the process
    ending then, and keeps the stall to ~2 % of the mock's time.
    """

    MIN_LIST_INTERVAL_S = 1.0
    PAIR_WINDOW_NS = 2_000 * MS  # a bridge opens OpenAI on 'start': a session later than this is not ours
    CLOSE_WAIT_S = 3.0  # the bridge closes OpenAI after the hang-up; wait this long for it

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self.claimed: set[str] = set()
        self.live: dict[int, GeventCall] = {}  # calls of this process waiting for their session
        self._listing: list[dict[str, Any]] = []
        self._listed_ns = 0
        self._lock = gevent.lock.BoundedSemaphore()

    def started(self, call: GeventCall) -> None:
        self.live[id(call)] = call

    def forget(self, call: GeventCall) -> None:
        self.live.pop(id(call), None)

    def snapshot_for(self, call: GeventCall) -> dict[str, Any] | None:
        """The full snapshot of ``call``'s session once it has closed (or after :attr:`CLOSE_WAIT_S`)."""
        if call.core is None or call.core.t0_ns is None:
            return None
        give_up = time.monotonic() + self.CLOSE_WAIT_S
        fresh_after = time.monotonic_ns()
        while True:
            self._refresh(fresh_after)
            mine = self._pair(call)
            timed_out = time.monotonic() >= give_up
            if mine is not None and (not mine.get("open") or timed_out):
                self.claimed.add(mine["id"])
                self.forget(call)
                r = requests.get(f"{self.base}/_mock/sessions/{mine['id']}", timeout=10)
                r.raise_for_status()
                return orjson.loads(r.content)
            if timed_out:
                self.forget(call)
                return None
            gevent.sleep(0.1)
            fresh_after = time.monotonic_ns()

    def _pair(self, call: GeventCall) -> dict[str, Any] | None:
        """The session that heard this call's line tag (exact, whatever the bridge's timing, and right
        across worker processes too); by time only for a bridge that converts the audio (no tag)."""
        tag = getattr(call.core, "line_tag", None)
        if tag is not None:
            key = f"{tag:08x}"
            tagged = [s for s in self._listing if key in (s.get("line_tags") or {})]
            if tagged:
                return max(tagged, key=lambda s: s["line_tags"][key].get("frames", 0))
        calls = sorted((c.core.t0_ns, id(c)) for c in self.live.values()
                       if c.core is not None and c.core.t0_ns is not None)
        free = sorted((s for s in self._listing if s.get("t_open_ns") and s["id"] not in self.claimed
                       and not s.get("line_tags")),
                      key=lambda s: s["t_open_ns"])
        for t0, key in calls:
            j = next((j for j, s in enumerate(free) if t0 <= s["t_open_ns"] <= t0 + self.PAIR_WINDOW_NS), None)
            got = free.pop(j) if j is not None else None
            if key == id(call):
                return got
        return None

    def _refresh(self, newer_than_ns: int) -> None:
        with self._lock:
            if self._listed_ns >= newer_than_ns:
                return  # another call of this process listed while we waited for the lock
            wait_s = (self._listed_ns - time.monotonic_ns()) / 1e9 + self.MIN_LIST_INTERVAL_S
            if wait_s > 0:
                gevent.sleep(wait_s)
            t = time.monotonic_ns()
            r = requests.get(f"{self.base}/_mock/sessions", timeout=10)
            r.raise_for_status()
            listing = orjson.loads(r.content)["sessions"]
            oldest = min((c.core.t0_ns for c in self.live.values() if c.core is not None and c.core.t0_ns),
                         default=t)
            # only sessions a live call of this process could own: keeps _pair cheap (a bridge may
            # open its OpenAI session a little before the call's stream starts: 10 s of slack)
            self._listing = [s for s in listing if (s.get("t_open_ns") or 0) >= oldest - 10_000 * MS]
            self._listed_ns = t


_mock_sessions: dict[str, MockSessions] = {}


def mock_sessions(url: str) -> MockSessions:
    if url not in _mock_sessions:
        _mock_sessions[url] = MockSessions(url)
    return _mock_sessions[url]


# ================================================================== events


@dataclass(frozen=True)
class CallEvent:
    name: str
    ms: float
    error: str | None = None


class CallFailure(Exception):
    """What Locust shows in its failures table: the message says what went wrong."""


def call_events(result: CallResult, m: CallMetrics, *, ended_ns: int) -> list[CallEvent]:
    """One call's figures as Locust events (see the module docstring for the names)."""
    core = result.core
    placed = result.timings.get("placed_ns", ended_ns)
    if core is None or core.t0_ns is None:
        return [CallEvent("call_setup", (ended_ns - placed) / MS, result.error or "the call never started")]
    setup = result.setup_ms
    out = [CallEvent("call_setup", setup if setup is not None else 0.0),
           CallEvent("call", m.duration_ms, result.error)]
    broke = result.error is not None
    end_ns = core.t0_ns + int(m.duration_ms * MS)
    starts = sorted(core.timeline.times(UtteranceStart))
    for t in m.turns:
        if t.latency_ms is not None:
            out.append(CallEvent("turn_latency", t.latency_ms))
        elif not broke:
            waited_until = next((s for s in starts if s > t.speech_end_ns), end_ns)
            out.append(CallEvent("turn_latency", max(0.0, (waited_until - t.speech_end_ns) / MS),
                                 f"no reply to turn {t.index + 1} ({t.fixture}): the caller heard no assistant "
                                 "audio after it stopped speaking"))
        if t.overhead_ms is not None:
            out.append(CallEvent("overhead", max(0.0, t.overhead_ms)))
    for b in m.barge_ins:
        if b.clear_ms is not None:
            out.append(CallEvent("barge_in_clear", max(0.0, b.clear_ms)))
        if b.truncate_error_ms is not None:
            out.append(CallEvent("truncate_error", b.truncate_error_ms))
    if m.pacing.get("lateness_ms_p99") is not None:
        out.append(CallEvent("pacing_jitter", max(0.0, m.pacing["lateness_ms_p99"])))
    if n := sum(m.warnings.values()):
        codes = ", ".join(f"{code} ×{k}" for code, k in m.warnings.items())
        first = f"; first: {m.warning_reasons[0]}" if m.warning_reasons else ""
        out.append(CallEvent("twilio_warnings", 0.0, f"the bridge sent {n} message(s) Twilio would flag: "
                                                     f"{codes}{first}"))
    for e in m.expectations:
        # no_twilio_warnings says what twilio_warnings already says
        if e["status"] == "failed" and e["name"] != "no_twilio_warnings":
            out.append(CallEvent(f"expect:{e['name']}", 0.0, e["message"]))
    return out


# ==================================================================== user


class TwilioCaller(User):
    """One phone line: places the scenario's calls one after another.

    ``wait_time``: a random pause of up to ``--call-pause-ms`` (200 ms) between
    calls, not ``constant(0)``: it keeps the users' calls from starting in
    lockstep (pairing with the mock by open time needs distinct start times,
    and a bridge should see arrivals spread like real traffic), and costs
    ≈ 2 % of the concurrency with ~4 s calls.
    """

    def wait_time(self) -> float:
        return random.uniform(0.0, self.environment.parsed_options.call_pause_ms / 1000.0)

    def on_start(self) -> None:
        self.call: GeventCall | None = None
        self.rng = random.Random()

    def on_stop(self) -> None:
        """Locust is stopping this user: hang up a call in progress and close its socket."""
        if self.call is not None:
            self.call.hang_up()

    @task
    def place_call(self) -> None:
        opts = self.environment.parsed_options
        try:
            scenario = scenario_for(self.environment)
        except ScenarioError:
            raise StopUser() from None  # test_start has said why and is stopping the run
        mock = mock_sessions(opts.mock_url) if opts.mock_url else None
        call = self.call = GeventCall(
            self.host or "", list(scenario.steps), webhook_path=opts.webhook_path,
            auth_token=opts.auth_token or None, impairments=scenario.impairments, rng=self.rng,
            max_duration_ms=int(opts.max_call_s * 1000), bank=default_bank(),
        )
        if mock is not None:
            mock.started(call)  # before run(): takes part in pairing as soon as its t0 is set
        try:
            result = call.run()
            ended_ns = time.monotonic_ns()
            snap = None
            if mock is not None and result.core is not None and result.core.t0_ns is not None:
                try:
                    snap = mock.snapshot_for(call)
                except (requests.RequestException, ValueError) as exc:
                    log.warning("could not read the mock's session for call %s: %s",
                                result.core.ident.call_sid, exc)
            self._report(scenario, result, snap, mock is not None, ended_ns)
        finally:
            if mock is not None:
                mock.forget(call)
            self.call = None

    def _report(self, scenario: Scenario, result: CallResult, snap: dict[str, Any] | None, mock_in_loop: bool,
                ended_ns: int) -> None:
        m = measure_call(result, scenario=scenario.name, mock=snap, bank=default_bank(),
                         behaviour_echo=scenario.mock.echo, created_delay_ms=scenario.mock.created_delay_ms)
        judge([m], evaluate(scenario.expect, [m], mock_in_loop=mock_in_loop))
        if m.status != "passed":
            log.info("%s: %s", m.status, result.summary_line())
        fire = self.environment.events.request.fire
        for ev in call_events(result, m, ended_ns=ended_ns):
            fire(request_type=REQUEST_TYPE, name=ev.name, response_time=ev.ms, response_length=0,
                 exception=CallFailure(ev.error) if ev.error else None, context={"scenario": scenario.name})
