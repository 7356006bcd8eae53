"""What the mock model says and does: replies, tools, pacing, think time, faults.

The real model's content is irrelevant to a bridge test; its *timing and shape*
are what matter. So a :class:`Behaviour` scripts them: which fixture to reply
with (in turn, or by rules keyed on the fixture the caller said), which tool to
call, how long to "think" (fixed or a seeded distribution), how fast audio
deltas go out (the real API streams several times faster than real time), and
which faults to inject. Everything is plain data, loadable from JSON/TOML and
from command-line strings, so the same behaviour can be set from Python, from
``callsim mock-openai`` and over the mock's control endpoint.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..tableread import DataError, Table, check_number, is_number, show

DEFAULT_REPLY = "assistant_short_reply"


@dataclass(frozen=True)
class ThinkTime:
    """Delay between a response's creation and its first output.

    ``dist``: ``fixed`` (``ms``), ``uniform`` (``lo``..``hi``) or ``normal``
    (``ms`` ± ``sd``, clipped at 0). Drawn from the session's seeded RNG.
    """

    dist: Literal["fixed", "uniform", "normal"] = "fixed"
    ms: float = 300.0
    lo: float = 0.0
    hi: float = 0.0
    sd: float = 0.0

    def draw(self, rng: random.Random) -> float:
        if self.dist == "uniform":
            return rng.uniform(self.lo, self.hi)
        if self.dist == "normal":
            return max(0.0, rng.gauss(self.ms, self.sd))
        return self.ms

    @classmethod
    def parse(cls, spec: str | float | int | dict[str, Any], where: str = "think") -> "ThinkTime":
        """``300`` | ``"uniform:200-600"`` | ``"normal:400,50"`` | a table of fields; ``where`` names
        it in the one-line :class:`DataError` a bad one raises."""
        if isinstance(spec, dict):
            t = Table(spec, where)
            think = cls(t.string("dist", "fixed", choices=("fixed", "uniform", "normal")),
                        float(t.number("ms", 300.0, unit="ms", minimum=0)),
                        float(t.number("lo", 0.0, unit="ms", minimum=0)),
                        float(t.number("hi", 0.0, unit="ms", minimum=0)),
                        float(t.number("sd", 0.0, unit="ms", minimum=0)))
            t.finish()
        elif is_number(spec):
            think = cls("fixed", float(check_number(spec, where, unit="ms", minimum=0)))
        elif isinstance(spec, str):
            s = spec.strip()
            try:
                if s.startswith("uniform:"):
                    lo, hi = s[8:].split("-")
                    think = cls("uniform", lo=float(lo), hi=float(hi))
                elif s.startswith("normal:"):
                    mu, sd = s[7:].split(",")
                    think = cls("normal", float(mu), sd=float(sd))
                else:
                    think = cls("fixed", float(s.removeprefix("fixed:")))
            except ValueError:
                raise DataError(f"{where}: expected MS, \"uniform:LO-HI\" or \"normal:MEAN,SD\", "
                                f"got {show(spec)}") from None
            if min(think.ms, think.lo, think.hi, think.sd) < 0 or not math.isfinite(think.ms + think.hi + think.sd):
                raise DataError(f"{where}: think times must be finite and not negative, got {show(spec)}")
        else:
            raise DataError(f"{where}: expected MS, \"uniform:LO-HI\", \"normal:MEAN,SD\" or a table, "
                            f"got {show(spec)}")
        if think.hi < think.lo:
            raise DataError(f"{where}: uniform think time needs lo <= hi, got {think.lo:g}-{think.hi:g}")
        return think


@dataclass(frozen=True)
class ToolCall:
    """A scripted function call; after its output arrives, ``then`` is the spoken reply."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    then: str = DEFAULT_REPLY


@dataclass(frozen=True)
class Rule:
    """When the caller's turn is recognised as fixture ``when``: reply or call a tool.

    Two other kinds of ``when`` answer what is not a caller's spoken turn:

    * ``dtmf:KEY`` — the response after a client's user text item naming key ``KEY`` (a bridge
      forwarding a keypress; :mod:`.keypresses` says how the key is read);
    * ``instructions:TEXT`` — a ``response.create`` whose ``response.instructions`` contain
      ``TEXT`` (case-insensitive): a response the bridge asked for on its own, e.g. a silent
      caller's re-prompt or goodbye. The first matching rule wins.
    """

    when: str
    reply: str | None = None
    tool: ToolCall | None = None

    @property
    def on_fixture(self) -> bool:
        """``when`` names a fixture the caller says (not a key, not instructions)."""
        return not self.when.startswith(REQUEST_PREFIXES)


#: the ``when`` of rules that answer a request rather than a spoken turn (see :class:`Rule`)
REQUEST_PREFIXES = ("dtmf:", "instructions:")


FaultKind = Literal["refuse", "drop", "stall", "error", "expire", "fail_response", "slow_start", "close"]


@dataclass(frozen=True)
class Fault:
    """One injected failure.

    * ``refuse``: answer the handshake with HTTP ``status`` (429/500/...).
    * ``drop``: abort the TCP connection (no close frame) ``after_ms`` after the
      first audio delta of response number ``nth`` (1-based; 0 = any response).
    * ``close``: like drop but with a proper close frame (``code``).
    * ``stall``: from ``after_ms`` after the first audio delta of response ``nth``,
      keep the socket open and send nothing more.
    * ``error``: send an ``error`` event (``code``, type server_error) ``after_ms``
      after the session opened.
    * ``expire``: after ``after_ms`` send ``session_expired`` and close (as the
      real service does at its maximum session length).
    * ``fail_response``: response ``nth`` ends with ``status: failed``.
    * ``slow_start``: hold ``session.created`` back ``after_ms``.

    ``prob`` (seeded) and ``sessions`` (1-based indices of sessions on this
    server) choose which sessions it hits; by default all.
    """

    kind: FaultKind
    after_ms: float = 0.0
    status: int = 500
    code: str | int | None = None
    nth: int = 1
    prob: float = 1.0
    sessions: tuple[int, ...] = ()

    def applies(self, session_index: int, rng: random.Random) -> bool:
        if self.sessions and session_index not in self.sessions:
            return False
        return self.prob >= 1.0 or rng.random() < self.prob

    @classmethod
    def parse(cls, spec: str, where: str = "fault") -> "Fault":
        """``KIND[:key=value,...]``, e.g. ``refuse:status=429``, ``drop:after_ms=500,nth=2``."""
        kind, _, rest = spec.partition(":")
        valid = FaultKind.__args__  # type: ignore[attr-defined]
        if kind not in valid:
            raise DataError(f"{where}: unknown fault {kind!r}; one of {', '.join(valid)}")
        kw: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise DataError(f"{where}: bad fault option {part!r} in {spec!r}: want key=value")
            try:
                if key in ("after_ms", "prob"):
                    kw[key] = float(value)
                elif key in ("after_s",):
                    kw["after_ms"] = float(value) * 1000
                elif key in ("status", "nth"):
                    kw[key] = int(value)
                elif key == "code":
                    kw[key] = int(value) if value.isdigit() else value
                elif key == "sessions":
                    kw[key] = tuple(int(x) for x in value.split("+"))
                else:
                    raise DataError(f"{where}: unknown fault option {key!r} in {spec!r}")
            except DataError:
                raise
            except ValueError:
                raise DataError(f"{where}: bad fault option {part!r} in {spec!r}: {key} wants a number") from None
        return cls.from_table(Table({"kind": kind, **kw}, where))

    @classmethod
    def from_table(cls, t: Table) -> "Fault":
        """A fault written as a table (``{kind = "drop", after_ms = 500}``), every field checked."""
        code = t.raw("code")
        if code is not None and (not isinstance(code, (str, int)) or isinstance(code, bool)):
            raise t.error("code", f"expected a string or a whole number, got {show(code)}")
        sessions = t.raw("sessions", ())
        if not isinstance(sessions, (list, tuple)):
            raise t.error("sessions", f"expected a list of session numbers, got {show(sessions)}")
        fault = cls(t.string("kind", choices=FaultKind.__args__),  # type: ignore[attr-defined]
                    after_ms=float(t.number("after_ms", 0.0, unit="ms", minimum=0)),
                    status=t.number("status", 500, integer=True, minimum=100, maximum=599),
                    code=code,
                    nth=t.number("nth", 1, integer=True, minimum=0),
                    prob=float(t.number("prob", 1.0, minimum=0, maximum=1)),
                    sessions=tuple(check_number(n, f"{t.key('sessions')}[{i + 1}]", integer=True, minimum=1)
                                   for i, n in enumerate(sessions)))
        if fault.kind is None:  # type: ignore[comparison-overlap]
            raise t.error("kind", f"missing; one of {', '.join(FaultKind.__args__)}")  # type: ignore[attr-defined]
        t.finish()
        return fault


@dataclass(frozen=True)
class Behaviour:
    """Everything scripted about a mock session. Immutable: copy with :meth:`with_`."""

    replies: tuple[str, ...] = (DEFAULT_REPLY,)  # in turn; the last one repeats
    # what the model says when asked to respond before the caller has said anything (a bridge that
    # greets): the replies above stay the answers to the caller's turns, whether the bridge greets or not
    greeting: str = DEFAULT_REPLY
    rules: tuple[Rule, ...] = ()
    echo: bool = False  # reply with exactly the audio of the caller's last turn
    think: ThinkTime = ThinkTime()
    realtime_factor: float = 5.0  # audio sent this many times faster than it plays
    chunk_ms: int = 100  # audio per delta
    created_delay_ms: float = 20.0  # trigger -> response.created
    transcription_delay_ms: float = 150.0  # commit -> transcription.completed
    faults: tuple[Fault, ...] = ()
    seed: int | None = None
    # the service's own limits (mock/timeouts.py): a session ends at max_session_s (session_expired,
    # close 1001); idle_reply is what the model says after an idle timeout (None: the next reply)
    max_session_s: float = 3600.0
    idle_reply: str | None = None
    # unconfirmed real behaviour, made explicit:
    clamp_truncate_after_error: bool = False  # ReviewStage/luke#564 saw a clamped truncate after the error

    def with_(self, **changes: Any) -> "Behaviour":
        return replace(self, **changes)

    def reply_for(self, turn: int, heard: str | None) -> str | ToolCall:
        """The reply to the caller's ``turn``-th utterance (0-based), recognised as ``heard``."""
        for rule in self.rules:
            if heard is not None and rule.when == heard:
                if rule.tool is not None:
                    return rule.tool
                if rule.reply:
                    return rule.reply
        if not self.replies:
            return DEFAULT_REPLY
        return self.replies[min(turn, len(self.replies) - 1)]

    def reply_to_request(self, instructions: Any, key: str | None) -> str | ToolCall | None:
        """The ``instructions:`` rule matching a response's ``instructions``, else the ``dtmf:`` rule of
        the key a client item named since the last response; None if neither applies."""
        text = instructions.lower() if isinstance(instructions, str) else None
        for rule in self.rules:
            if (text is not None and rule.when.startswith("instructions:")
                    and rule.when[len("instructions:"):].lower() in text) or \
                    (key is not None and rule.when == f"dtmf:{key}"):
                return rule.tool or rule.reply
        return None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> "Behaviour":
        """Build from JSON/TOML data (the control endpoint, ``--behaviour`` files and scenario
        files use this). Every key is checked: a bad one raises a one-line :class:`DataError`
        naming it (prefixed by ``where``, e.g. ``[mock]``)."""
        return cls.from_table(Table(d, where))

    @classmethod
    def from_table(cls, t: Table) -> "Behaviour":
        """As :meth:`from_dict`, from a table whose other keys the caller has read (a scenario's
        ``[mock]`` also holds ``dialect``)."""
        b = cls()
        kw: dict[str, Any] = {
            "replies": t.strings("replies", b.replies),
            "greeting": t.string("greeting", b.greeting, nonempty=True),
            "echo": t.boolean("echo", b.echo),
            "realtime_factor": float(t.number("realtime_factor", b.realtime_factor, above=0)),
            "chunk_ms": t.number("chunk_ms", b.chunk_ms, unit="ms", integer=True, minimum=1),
            "created_delay_ms": float(t.number("created_delay_ms", b.created_delay_ms, unit="ms", minimum=0)),
            "transcription_delay_ms": float(t.number("transcription_delay_ms", b.transcription_delay_ms,
                                                     unit="ms", minimum=0)),
            "clamp_truncate_after_error": t.boolean("clamp_truncate_after_error", b.clamp_truncate_after_error),
            "max_session_s": float(t.number("max_session_s", b.max_session_s, unit="s", above=0)),
            "idle_reply": t.string("idle_reply", b.idle_reply, nonempty=True),
        }
        if (seed := t.raw("seed")) is not None:
            kw["seed"] = check_number(seed, t.key("seed"), integer=True)
        if "think" in t:
            kw["think"] = ThinkTime.parse(t.raw("think"), t.key("think"))
        kw["rules"] = tuple(_rule(Table(r, where)) for where, r in t.items("rules"))
        kw["faults"] = tuple(Fault.parse(f, where) if isinstance(f, str) else Fault.from_table(Table(f, where))
                             for where, f in t.items("faults"))
        t.finish()
        return cls(**kw)

    def fixture_names(self, where: str = "") -> list[tuple[str, str]]:
        """``(where, name)`` of every fixture this behaviour names, for one-line errors."""
        at = f"{where} ".lstrip()
        names = [(f"{at}replies[{i + 1}]", r) for i, r in enumerate(self.replies)]
        names.append((f"{at}greeting", self.greeting))
        names += [(f"{at}idle_reply", self.idle_reply)] if self.idle_reply else []
        for i, rule in enumerate(self.rules):
            names += [(f"{at}rules[{i + 1}] when", rule.when)] if rule.on_fixture else []
            names += [(f"{at}rules[{i + 1}] reply", rule.reply)] if rule.reply else []
            names += [(f"{at}rules[{i + 1}] tool then", rule.tool.then)] if rule.tool is not None else []
        return names


def _rule(t: Table) -> Rule:
    tool = t.raw("tool")
    rule = Rule(t.string("when", nonempty=True), t.string("reply", nonempty=True),
                None if tool is None else _tool(t.table("tool")))
    if rule.when is None:
        raise t.error("when", "missing: the fixture the caller says that this rule answers")
    if rule.when.startswith("dtmf:") and (len(rule.when) != 6 or rule.when[5] not in "0123456789*#"):
        raise t.error("when", f"a key rule is \"dtmf:KEY\" with one key 0-9, * or #, got {show(rule.when)}")
    if rule.when == "instructions:":
        raise t.error("when", "\"instructions:TEXT\" needs the text the response's instructions contain")
    if (rule.reply is None) == (rule.tool is None):
        raise DataError(f"{t.where}: a rule has either reply or tool")
    t.finish()
    return rule


def _tool(t: Table) -> ToolCall:
    args = t.raw("arguments", {})
    if not isinstance(args, dict):
        raise t.error("arguments", f"expected a table of the tool's arguments, got {show(args)}")
    call = ToolCall(t.string("name", nonempty=True), args, t.string("then", DEFAULT_REPLY, nonempty=True))
    if call.name is None:
        raise t.error("name", "missing: the function the model calls")
    t.finish()
    return call


def unknown_fixtures(behaviour: Behaviour) -> list[str]:
    """Fixture names ``behaviour`` refers to that the fixture library lacks. A reply
    naming one would fail mid-session, so the CLI and the control endpoint refuse
    such a behaviour up front."""
    from ..audio.fixtures import default_library

    known = set(default_library().names())
    return sorted({n for _, n in behaviour.fixture_names() if n not in known})
