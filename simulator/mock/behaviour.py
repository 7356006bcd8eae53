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

import random
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

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
    def parse(cls, spec: str | float | int | dict[str, Any]) -> "ThinkTime":
        """``300`` | ``"uniform:200-600"`` | ``"normal:400,50"`` | a dict of fields."""
        if isinstance(spec, dict):
            return cls(**spec)
        if isinstance(spec, (int, float)):
            return cls("fixed", float(spec))
        s = spec.strip()
        try:
            if s.startswith("uniform:"):
                lo, hi = s[8:].split("-")
                return cls("uniform", lo=float(lo), hi=float(hi))
            if s.startswith("normal:"):
                mu, sd = s[7:].split(",")
                return cls("normal", float(mu), sd=float(sd))
            return cls("fixed", float(s.removeprefix("fixed:")))
        except ValueError:
            raise ValueError(f"bad think time {spec!r}: use MS, uniform:LO-HI or normal:MEAN,SD") from None


@dataclass(frozen=True)
class ToolCall:
    """A scripted function call; after its output arrives, ``then`` is the spoken reply."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    then: str = DEFAULT_REPLY


@dataclass(frozen=True)
class Rule:
    """When the caller's turn is recognised as fixture ``when``: reply or call a tool."""

    when: str
    reply: str | None = None
    tool: ToolCall | None = None


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
    def parse(cls, spec: str) -> "Fault":
        """``KIND[:key=value,...]``, e.g. ``refuse:status=429``, ``drop:after_ms=500,nth=2``."""
        kind, _, rest = spec.partition(":")
        valid = FaultKind.__args__  # type: ignore[attr-defined]
        if kind not in valid:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(valid)}")
        kw: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"bad fault option {part!r} in {spec!r}: want key=value")
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
                raise ValueError(f"unknown fault option {key!r} in {spec!r}")
        return cls(kind, **kw)  # type: ignore[arg-type]


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Behaviour":
        """Build from JSON/TOML data (the control endpoint and scenario files use this)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown behaviour keys {sorted(unknown)}; known: {sorted(known)}")
        kw: dict[str, Any] = dict(d)
        if "replies" in kw:
            r = kw["replies"]
            kw["replies"] = (r,) if isinstance(r, str) else tuple(r)
        if "rules" in kw:
            kw["rules"] = tuple(
                Rule(r["when"], r.get("reply"),
                     ToolCall(**r["tool"]) if isinstance(r.get("tool"), dict) else None)
                for r in kw["rules"]
            )
        if "think" in kw:
            kw["think"] = ThinkTime.parse(kw["think"])
        if "faults" in kw:
            kw["faults"] = tuple(Fault.parse(f) if isinstance(f, str) else Fault(**f) for f in kw["faults"])
        return cls(**kw)


def unknown_fixtures(behaviour: Behaviour) -> list[str]:
    """Fixture names ``behaviour`` refers to that the fixture library lacks. A reply
    naming one would fail mid-session, so the CLI and the control endpoint refuse
    such a behaviour up front."""
    from ..audio.fixtures import default_library

    names = [*behaviour.replies, behaviour.greeting]
    for rule in behaviour.rules:
        names.append(rule.when)
        names += [rule.reply] if rule.reply else []
        names += [rule.tool.then] if rule.tool is not None else []
    known = set(default_library().names())
    return sorted({n for n in names if n not in known})
