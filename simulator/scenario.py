"""Call scenarios: TOML files saying what the caller does, what the mock does, what must hold.

A scenario is data, so teams can write their own without Python::

    name = "barge_in"
    description = "The caller interrupts a long reply"

    [caller]
    steps = [
      { pause_ms = 300 },
      { say = "caller_weather_question" },
      { wait_for_audio_ms = 1500 },       # barge in 1.5 s after the reply starts
      { say = "caller_barge_in" },
      { wait_for_reply = true },
      { hangup = true },
    ]

    [mock]                                 # callsim.simulator.mock.behaviour.Behaviour keys (+ dialect)
    replies = ["assistant_long_reply", "assistant_short_reply"]

    [bridge]                               # settings for in-process runs of our bridge
    audio_mode = "passthrough"

    [expect]
    barge_in_clear_max_ms = 600
    truncate_error_max_ms = 20
    no_rejected_truncate = true

Unknown keys are errors (a typo must not silently disable an expectation).
"""

from __future__ import annotations

import os
import random
import tomllib
from dataclasses import dataclass, field, fields, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .caller.impairments import Impairments
from .caller.script import (
    DTMF_DIGITS,
    GREETING_GRACE,
    Dtmf,
    Hangup,
    Pause,
    Say,
    Step,
    WaitForAudio,
    WaitForReply,
)
from .caller.webhook import CallParties
from .mock.behaviour import Behaviour
from .tableread import DataError, Table, check_names, check_string, did_you_mean, show

if TYPE_CHECKING:
    from .audio.utterances import UtteranceBank

#: The scenarios shipped with the package (package data ``callsim.fixtures``, found through
#: importlib.resources so that an installed callsim finds them).
DEFAULT_DIR = Path(os.fspath(resources.files("callsim.fixtures") / "scenarios"))


@dataclass(frozen=True)
class Expectations:
    """What must hold for every call of the scenario. ``None`` = not checked."""

    turn_latency_p95_ms: float | None = None
    overhead_p95_ms: float | None = None  # needs the mock
    barge_in_clear_max_ms: float | None = None
    talk_over_max_ms: float | None = None
    no_rejected_truncate: bool | None = None  # needs the mock
    truncate_error_max_ms: float | None = None  # needs the mock
    transcript_contains: tuple[str, ...] = ()  # needs the mock: what it heard the caller say
    tool_called: str | None = None  # needs the mock
    codec: str | None = None  # "bit_exact"; needs the mock in echo mode
    snr_min_db: float | None = None  # needs the mock in echo mode
    no_underruns: bool | None = None
    underrun_max_ms: float | None = None
    end_reason: str | None = None  # hangup | closed_by_app
    # needs the mock: session closed after the caller hung up. Checked on EVERY call with the mock in the
    # loop (default 1000 ms, callsim.simulator.runner.DEFAULT_OPENAI_CLOSE_MS); false turns it off
    openai_closed_within_ms: float | None = None
    dead_air_max_ms: float | None = None  # longest silence after the caller's last utterance until the call ended
    heard_min_ms: float | None = None  # at least this much assistant audio heard
    heard_max_ms: float | None = None
    no_twilio_warnings: bool | None = None  # the bridge sent nothing Twilio would flag
    barge_ins: int | None = None  # exactly this many barge-ins detected
    # the bridge ended the call after its last reply had played whole (none of it left unplayed, and with
    # the mock: the reply's audio all sent) — a goodbye cut off is the common bug
    heard_goodbye: bool | None = None
    # needs the mock: session renewal (the Realtime API ends a session at its maximum duration)
    renewals_min: int | None = None  # at least this many switch-overs to a new OpenAI session
    switch_gap_max_ms: float | None = None  # worst gap a switch-over made in the caller's audio
    no_caller_audio_lost: bool | None = None  # every caller frame reached a session (mid-call)
    # exactly this many assistant replies heard after the caller's last utterance (a silent caller's
    # answer, re-prompts and goodbye); replies are told apart by a gap of REPLY_GAP_MS
    replies_after_last_utterance: int | None = None
    # at least this many of them: how many re-prompts a silent caller gets is the bridge's own setting, so a
    # scenario written for any bridge asks for the answer, ≥ 1 re-prompt and the goodbye (3), not an exact count
    replies_after_last_utterance_min: int | None = None
    dtmf_heard: str | None = None  # needs the mock: the keys the model was told of, in order ("1", "12#")
    # needs a Twilio in the loop (callsim dial): Twilio dialled this number (E.164) from the call, as its REST
    # records show (a child call, direction outbound-dial) — the bridge transferred the call there
    transferred_to: str | None = None

    #: expectations that can only be judged with the mock in the loop
    NEEDS_MOCK = frozenset({"overhead_p95_ms", "no_rejected_truncate", "truncate_error_max_ms",
                            "transcript_contains", "tool_called", "codec", "snr_min_db",
                            "openai_closed_within_ms", "renewals_min", "switch_gap_max_ms",
                            "no_caller_audio_lost", "dtmf_heard"})
    #: expectations judged from Twilio's REST records: only `callsim dial` has them
    NEEDS_TWILIO = frozenset({"transferred_to"})

    def items(self) -> list[tuple[str, Any]]:
        """The expectations that are set, in declaration order."""
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and v != ():
                out.append((f.name, v))
        return out


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    description: str = ""
    calls: int = 1
    impairments: Impairments = field(default_factory=Impairments)
    # How every call of the scenario is placed, beyond its steps. Not scenario-file keys: the
    # command line sets them (with_overrides), so that no option of `callsim call` is dropped.
    from_: str | None = None  # From of the webhook form; None: CallParties' default
    to: str | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)  # over the TwiML's <Parameter>s
    max_duration_s: float = 300.0  # hang up whatever the steps say
    fixtures: Path | None = None  # the caller's fixture folder (manifest.json); None: the default
    mock: Behaviour = field(default_factory=Behaviour)
    mock_dialect: str = "ga"
    bridge: dict[str, Any] = field(default_factory=dict)
    expect: Expectations = field(default_factory=Expectations)
    path: Path | None = None
    #: what the bridge must offer for the scenario to apply (see REQUIREMENTS); learned from the wire,
    #: a scenario that does not apply is skipped with the reason, never failed or passed
    requires: tuple[str, ...] = ()

    @property
    def says(self) -> list[str]:
        return [s.fixture for s in self.steps if isinstance(s, Say)]

    @property
    def max_duration_ms(self) -> int:
        return int(self.max_duration_s * 1000)

    def with_overrides(self, *, impairments: Impairments | None = None, quiet_ms: int | None = None,
                       reply_timeout_ms: int | None = None, from_: str | None = None, to: str | None = None,
                       custom_parameters: dict[str, str] | None = None, max_duration_s: float | None = None,
                       fixtures: Path | None = None) -> Scenario:
        """This scenario with what the command line says instead of what the file says.

        ``None`` keeps the scenario's value. ``impairments`` replaces the file's
        ``[caller] impairments`` whole (a partial merge would test a line nobody asked
        for); ``quiet_ms``/``reply_timeout_ms`` go into every ``wait_for_reply`` step;
        ``custom_parameters`` are added to (and win over) the scenario's.
        """
        steps = self.steps
        if quiet_ms is not None or reply_timeout_ms is not None:
            steps = tuple(
                replace(s, quiet_ms=s.quiet_ms if quiet_ms is None else quiet_ms,
                        timeout_ms=s.timeout_ms if reply_timeout_ms is None else reply_timeout_ms)
                if isinstance(s, WaitForReply) else s
                for s in steps)
        return replace(
            self, steps=steps,
            impairments=self.impairments if impairments is None else impairments,
            from_=self.from_ if from_ is None else from_,
            to=self.to if to is None else to,
            custom_parameters={**self.custom_parameters, **(custom_parameters or {})},
            max_duration_s=self.max_duration_s if max_duration_s is None else max_duration_s,
            fixtures=self.fixtures if fixtures is None else fixtures,
        )

    def call_parties(self, rng: random.Random) -> CallParties:
        """The parties of one call: fresh SIDs from ``rng`` (as ``place_call`` would draw
        them), with the scenario's From/To where it sets them."""
        numbers = {k: v for k, v in (("from_", self.from_), ("to", self.to)) if v is not None}
        return CallParties.new(rng, **numbers)

    def utterance_bank(self) -> UtteranceBank | None:
        """The caller's fixtures: a bank for :attr:`fixtures`, shared by every call that
        names the same folder (converting a fixture is the costly part), or None for the
        default bank."""
        return None if self.fixtures is None else _bank_for(Path(self.fixtures).resolve())


@cache
def _bank_for(folder: Path) -> UtteranceBank:
    from .audio.fixtures import FixtureLibrary
    from .audio.utterances import UtteranceBank

    return UtteranceBank(FixtureLibrary(folder))


class ScenarioError(ValueError):
    """A scenario cannot be used; ``str()`` is one line naming the file and the key."""


#: what a scenario may require of a bridge (callsim.simulator.measure.bridge_profile learns each from the wire)
REQUIREMENTS = {
    "greeting": "the bridge speaks first",
    "tools": "the bridge declares the tools the scenario's model calls",
    "transcoding": "the bridge converts between Twilio's μ-law and another format for OpenAI",
    "passthrough": "the bridge forwards μ-law both ways without converting it",
    "transcription": "the bridge turns on input transcription",
    # not the bridge's: the harness's. Only `callsim dial` has a Twilio (or its emulator) in the loop
    "twilio": "a Twilio in the loop: the scenario judges what Twilio did with the call (its REST records)",
}

#: why `callsim call`/`check`/`demo` skip a scenario that requires "twilio"
NEEDS_TWILIO = ("requires twilio: the scenario judges what Twilio did with the call (its REST call records), and "
                "this run has no Twilio in the loop: run it with `callsim dial --scenario {name}` through Twilio, "
                "or offline through `callsim twilio-emulator` (README: callsim dial)")


STEP_KEYS = ("say", "pause_ms", "dtmf", "wait_for_reply", "wait_for_audio_ms", "hangup")
#: how a call may end, as ``[expect] end_reason`` names it (the caller's end reasons)
END_REASONS = ("hangup", "closed_by_app", "max_duration")


def _step(raw: Any, where: str) -> Step:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise DataError(f"{where}: a step is a table with exactly one key ({', '.join(STEP_KEYS)}), "
                        f"got {show(raw)}")
    (key, value), = raw.items()
    t = Table(raw, where)
    if key == "say":
        return Say(t.string("say", nonempty=True))
    if key == "pause_ms":
        return Pause(t.number("pause_ms", unit="ms", integer=True, minimum=0))
    if key == "dtmf":
        digits = t.string("dtmf", nonempty=True)
        if not set(digits) <= DTMF_DIGITS:
            raise t.error("dtmf", f"DTMF digits are {''.join(sorted(DTMF_DIGITS))}, got {show(digits)}")
        return Dtmf(digits)
    if key == "wait_for_reply":
        if value is True:
            return WaitForReply()
        if not isinstance(value, dict):
            raise t.error(key, f"expected true or {{ quiet_ms = …, timeout_ms = … }}, got {show(value)}")
        w = Table(value, t.key(key))
        d = WaitForReply()
        step = WaitForReply(quiet_ms=w.number("quiet_ms", d.quiet_ms, unit="ms", integer=True, minimum=0),
                            timeout_ms=w.number("timeout_ms", d.timeout_ms, unit="ms", integer=True, minimum=1),
                            start_ms=w.number("start_ms", d.start_ms, unit="ms", integer=True, minimum=0))
        w.finish()
        return step
    if key == "wait_for_audio_ms":
        return WaitForAudio(after_ms=t.number(key, unit="ms", integer=True, minimum=0))
    if key == "hangup":
        if value is not True:
            raise t.error(key, f"expected true, got {show(value)}")
        return Hangup()
    near = did_you_mean(key, STEP_KEYS)
    raise DataError(f"{where}: unknown step {key!r} ("
                    + (f"did you mean {near}?)" if near else f"steps: {', '.join(STEP_KEYS)})"))


def _expectations(t: Table) -> Expectations:
    """``[expect]``: each key checked by its field's type (a new field is checked as soon as it exists)."""
    kw: dict[str, Any] = {}
    for f in fields(Expectations):
        if f.name not in t:
            t.raw(f.name)  # known, for "did you mean"
            continue
        kind = str(f.type).removesuffix(" | None")
        unit = "ms" if f.name.endswith("_ms") else "dB" if f.name.endswith("_db") else ""
        if f.name == "openai_closed_within_ms" and t.raw(f.name) is False:
            kw[f.name] = False  # turns the check every mock run gets off
        elif kind == "float":
            kw[f.name] = float(t.number(f.name, unit=unit, minimum=0 if unit == "ms" else None))
        elif kind == "int":
            kw[f.name] = t.number(f.name, integer=True, minimum=0)
        elif kind == "bool":
            kw[f.name] = t.boolean(f.name)
        elif f.name == "codec":
            kw[f.name] = t.string(f.name, choices=("bit_exact",))
        elif f.name == "end_reason":
            kw[f.name] = t.string(f.name, choices=END_REASONS)
        elif kind == "str":
            kw[f.name] = t.string(f.name, nonempty=True)
        elif kind == "tuple[str, ...]":
            kw[f.name] = t.strings(f.name)
        else:  # a new field of another type must say how it is read
            raise TypeError(f"Expectations.{f.name}: no reader for {f.type}")
    t.finish()
    return Expectations(**kw)


@cache
def _fixture_names(folder: Path | None) -> frozenset[str]:
    from .audio.fixtures import FixtureLibrary, default_library

    return frozenset((FixtureLibrary(folder) if folder is not None else default_library()).names())


def parse_scenario(data: dict[str, Any], *, name: str = "scenario", path: Path | None = None,
                   fixtures: Path | None = None, check_fixtures: bool = True) -> Scenario:
    """A scenario from its TOML data, every key checked: a wrong one raises a one-line
    :class:`ScenarioError` naming the file and the key, before anything is started.

    ``fixtures``: the caller's fixture folder (None: the default library), which its ``say``
    steps must name; the mock's fixtures must be in the default library (the mock's own).
    """
    where = str(path or name)
    try:
        return _parse(Table(data), name=name, path=path, fixtures=fixtures, check_fixtures=check_fixtures)
    except DataError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _parse(top: Table, *, name: str, path: Path | None, fixtures: Path | None, check_fixtures: bool) -> Scenario:
    caller = top.table("caller")
    items = caller.items("steps")
    if not items:
        raise caller.error("steps", "missing or empty: a scenario needs at least one step")
    steps = tuple(_step(raw, where) for where, raw in items)
    try:
        impairments = Impairments.parse(caller.string("impairments", "") or "")
    except ValueError as exc:
        raise caller.error("impairments", str(exc)) from None
    grace = caller.boolean("let_greeting_finish", True)
    caller.finish()
    if grace and not isinstance(steps[0], WaitForReply):
        steps = (GREETING_GRACE, *steps)  # see GREETING_GRACE: the verdict must not depend on a greeting
    mock = top.table("mock")
    dialect = mock.string("dialect", "ga", choices=("ga", "beta", "auto"))
    behaviour = Behaviour.from_table(mock)
    bridge = top.table("bridge")  # the bridge's own settings: its hook checks them (bridge_hook.check_config)
    scenario = Scenario(
        name=top.string("name", name, nonempty=True), steps=steps, description=top.string("description", ""),
        calls=top.number("calls", 1, integer=True, minimum=1), impairments=impairments, mock=behaviour,
        mock_dialect=dialect, bridge=dict(bridge.data), expect=_expectations(top.table("expect")), path=path,
        requires=tuple(top.strings("requires")),
    )
    for i, r in enumerate(scenario.requires):
        check_string(r, f"requires[{i + 1}]", choices=REQUIREMENTS)
    top.finish()
    if check_fixtures:
        says = [(where, raw["say"]) for where, raw in items if "say" in raw]
        check_names([(f"{where} say", n) for where, n in says], _fixture_names(fixtures), "fixture")
        check_names(behaviour.fixture_names("[mock]"), _fixture_names(None), "fixture")
    return scenario


def load_scenario(path: str | Path, *, fixtures: Path | None = None) -> Scenario:
    """One scenario file, checked whole (see :func:`parse_scenario`)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: {exc}") from None
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read it: {exc.strerror or exc}") from None
    return parse_scenario(data, name=p.stem, path=p, fixtures=fixtures)


def load_scenarios(where: str | Path | None = None, *, fixtures: Path | None = None) -> list[Scenario]:
    """All ``*.toml`` in a folder (default: fixtures/scenarios), or one file; sorted by file name."""
    p = Path(where) if where is not None else DEFAULT_DIR
    if p.is_file():
        return [load_scenario(p, fixtures=fixtures)]
    if not p.is_dir():
        raise ScenarioError(f"no scenario file or folder at {p}")
    return [load_scenario(f, fixtures=fixtures) for f in sorted(p.glob("*.toml"))]


def find_scenario(name_or_path: str, where: str | Path | None = None, *, fixtures: Path | None = None) -> Scenario:
    """A scenario by file path, or by name within the scenario folder."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return load_scenario(p, fixtures=fixtures)
    scenarios = load_scenarios(where, fixtures=fixtures)
    for s in scenarios:
        if s.name == name_or_path or (s.path and s.path.stem == name_or_path):
            return s
    names = ", ".join(s.name for s in scenarios)
    near = did_you_mean(name_or_path, [s.name for s in scenarios])
    raise ScenarioError(f"no scenario {name_or_path!r}" + (f" (did you mean {near}?)" if near else "")
                        + f"; known: {names}")
