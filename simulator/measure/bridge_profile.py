"""The bridge profile: what a bridge told OpenAI and how it behaves toward Twilio.

callsim tests bridges it never saw, through the wire alone (design.md rule 5).
So every run shows what it learned about the bridge — dialect, formats, VAD,
tools, transcription, marks, clears, greeting, truncates — and *lints*: plain
lines where the bridge departs from what the real services do (protocols.md)
or from what a phone call needs. The same facts decide which scenarios apply:
:attr:`BridgeProfile.offers` holds the capabilities learned from the wire and
:meth:`BridgeProfile.missing_reason` says, for one that is not offered, why —
so a scenario that does not apply is skipped with the reason, never failed.

Without the mock in the loop (a bridge talking to the real OpenAI) the OpenAI
side is *unknown*, never "absent": not seeing something is not evidence it is
not there.

Pure: :func:`profile_call` reads the mock session's snapshot
(``MockSession.snapshot(full=True)``) and the caller core; nothing is sent or
written.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Literal

import numpy as np

from ..caller.core import CallerCore
from ..mock.session_config import DEFAULT_INSTRUCTIONS
from ..mock.tool_roles import stand_in
from .measurements import BargeInMetrics
from .profile_lints import Lint, lint_profile
from .truncate_diagnosis import diagnose_truncate, explain_truncate
from .twilio_evidence import twilio_side

__all__ = ["CAPABILITIES", "BridgeProfile", "Lint", "Varies", "diagnose_truncate", "merge_profiles",
           "profile_call"]

CAPABILITIES = ("greeting", "tools", "transcoding", "passthrough", "transcription")
Status = Literal["offered", "absent", "unknown", "varies"]
PCMU = "audio/pcmu"
_BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
_VAD_KEYS = ("threshold", "prefix_padding_ms", "silence_duration_ms", "eagerness", "create_response",
             "interrupt_response")
NO_MOCK = "unknown: no mock OpenAI session was seen for this call, so what the bridge told OpenAI is not known"


@dataclass(frozen=True)
class Varies:
    """A merged field whose calls disagreed: the distinct values, in first-seen order."""

    values: tuple[Any, ...]

    def __str__(self) -> str:
        return "|".join(show_value(v) for v in self.values)


@dataclass
class BridgeProfile:
    """One call's profile (``calls == 1``) or a run's (:func:`merge_profiles`).

    OpenAI-side fields are ``None`` when unknown (no mock in the loop); in a
    merged profile any field the calls disagreed on holds a :class:`Varies`.
    """

    calls: int = 1
    mock_in_loop: Any = False
    # --- what the bridge told OpenAI (the mock's session as it ended)
    dialect: Any = None  # "ga" | "beta"
    beta_header: Any = None  # sent OpenAI-Beta: realtime=v1 (None: not known)
    refused: Any = False  # the real API would refuse its dialect: it never configured a session
    session_updates: Any = None  # session.update events sent
    model: Any = None
    input_format: Any = None  # GA type names: audio/pcmu | audio/pcma | audio/pcm (24 kHz)
    output_format: Any = None
    vad_type: Any = None  # server_vad | semantic_vad | off
    vad: Any = None  # dict of the VAD parameters the session holds
    tools: Any = None  # tuple of declared function tool names
    transcription: Any = None  # input transcription model, "off"
    voice: Any = None
    instructions_chars: Any = None  # None: the server default (or unknown)
    greets: Any = None  # sent response.create before the caller spoke
    cancels: Any = None  # response.cancel events sent
    tools_not_declared: tuple[str, ...] = ()  # tools the scenario's model called that the bridge lacked
    openai_errors: dict[str, int] = field(default_factory=dict)  # invalid client events, by code
    error_examples: dict[str, str] = field(default_factory=dict)  # code -> first message
    audio_in_ratio: float | None = None  # input audio OpenAI counted / audio the caller sent
    audio_out_ratio: float | None = None  # audio the caller got / audio OpenAI sent
    # --- how it behaves toward Twilio (the caller's records)
    media_messages: int = 0
    marks: int = 0
    mark_gaps_ms: list[float] = field(default_factory=list)
    media_per_mark: list[int] = field(default_factory=list)
    barge_ins: int = 0
    barge_in_clears: int = 0
    twilio_warnings: dict[int, int] = field(default_factory=dict)
    twilio_warning_reason: str | None = None
    truncates: list[dict[str, Any]] = field(default_factory=list)  # audio_end_ms, heard_ms, accepted, cause
    # --- learned capabilities
    caps: dict[str, Status] = field(default_factory=dict)  # capability -> offered | absent | unknown | varies
    reasons: dict[str, str] = field(default_factory=dict)  # capability -> why not offered
    lints: list[Lint] = field(default_factory=list)

    @property
    def offers(self) -> set[str]:
        """Capabilities learned from the wire (greeting, tools, transcoding, passthrough, transcription)."""
        return {c for c, s in self.caps.items() if s == "offered"}

    def missing_reason(self, cap: str, tools: Iterable[str] = ()) -> str:
        """Why ``cap`` does not apply to this bridge, in plain words ("" if it does).

        ``tools``: the tool names a scenario needs; the reason then names the ones
        the bridge did not declare even when it declared others.
        """
        if cap not in CAPABILITIES:
            raise ValueError(f"unknown capability {cap!r}; known: {', '.join(CAPABILITIES)}")
        if cap == "tools" and self.caps.get(cap) == "offered":
            declared = set(self.tools if isinstance(self.tools, tuple) else ())
            wanted = list(tools)
            lacking = ([t for t in wanted if stand_in(t, sorted(declared)) is None] if wanted
                       else list(self.tools_not_declared))
            if lacking:
                return f"the bridge did not declare {', '.join(lacking)} (it declared {', '.join(sorted(declared))})"
        if self.caps.get(cap) == "offered":
            return ""
        return self.reasons.get(cap, NO_MOCK)

    @property
    def mark_gap_p50_ms(self) -> float | None:
        return float(statistics.median(self.mark_gaps_ms)) if self.mark_gaps_ms else None

    @property
    def mark_gap_max_ms(self) -> float | None:
        return max(self.mark_gaps_ms) if self.mark_gaps_ms else None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: raw per-mark lists become p50/max; :class:`Varies` becomes ``{"varies": [...]}``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("mark_gaps_ms", "media_per_mark", "lints"):
                continue
            out[f.name] = _jsonable(getattr(self, f.name))
        out["mark_gap_ms"] = {"p50": self.mark_gap_p50_ms, "max": self.mark_gap_max_ms}
        out["media_per_mark_p50"] = (float(statistics.median(self.media_per_mark))
                                     if self.media_per_mark else None)
        out["offers"] = sorted(self.offers)
        out["lints"] = [{"code": x.code, "message": x.message, "calls": x.calls} for x in self.lints]
        return out

    def lines(self) -> list[str]:
        """For the console: a few lines of at most 80 columns, then one ``lint:`` line per lint."""
        from .profile_render import render_lines

        return render_lines(self)


# ================================================================== one call


def profile_call(snapshot: dict[str, Any] | None, core: CallerCore | None,
                 barge_ins: list[BargeInMetrics] | None = None) -> BridgeProfile:
    """Profile one call from its mock session snapshot (None: mock not in the loop) and caller core.

    ``barge_ins`` (the call's :class:`BargeInMetrics`, optional) lets each truncate be
    compared with the audio heard and diagnosed; without them truncates are listed as sent.
    """
    p = BridgeProfile(mock_in_loop=snapshot is not None)
    spoke_after_audio = False
    if core is not None:
        side = twilio_side(core)
        spoke_after_audio = side.audio_before_speech
        p.media_messages, p.marks = side.media_messages, side.marks
        p.mark_gaps_ms, p.media_per_mark = side.mark_gaps_ms, side.media_per_mark
        p.barge_ins, p.barge_in_clears = side.barge_ins, side.barge_in_clears
        p.twilio_warnings, p.twilio_warning_reason = side.warnings, side.warning_reason
    if snapshot is not None:
        _openai_side(p, snapshot, core)
        p.truncates = _truncates(snapshot, core, barge_ins)
    _capabilities(p, spoke_after_audio)
    p.lints = lint_profile(p)
    return p


def _openai_side(p: BridgeProfile, snap: dict[str, Any], core: CallerCore | None) -> None:
    events = [e for e in snap.get("events") or [] if isinstance(e, dict)]
    ins = Counter(e.get("type") for e in events if e.get("dir") == "in")
    refusal = next((e for e in events if e.get("type") == "beta-dialect"), None)
    close = snap.get("close") or {}
    p.refused = refusal is not None or (close.get("code") == 4000 and close.get("reason") == "beta_api_shape_disabled")
    p.dialect = "beta" if p.refused or snap.get("dialect") == "beta" else "ga"
    if "beta_header" in snap:
        p.beta_header = bool(snap["beta_header"])
    elif refusal is not None:
        p.beta_header = "header" in str(refusal.get("why", ""))
    elif p.dialect == "ga":
        p.beta_header = False  # a GA mock refuses the header; an auto one would have switched to beta
    complete = any(e.get("type") == "session.created" for e in events)  # the bounded log still holds the start
    p.session_updates = ins["session.update"] if complete or ins["session.update"] else None
    p.cancels = ins["response.cancel"] if complete or ins["response.cancel"] else None
    p.model = snap.get("model")
    if p.refused:
        return  # the session the mock holds is its untouched default, not the bridge's
    s = snap.get("session") or {}
    ga = "audio" in s
    inp = ((s.get("audio") or {}).get("input") or {}) if ga else {}
    outp = ((s.get("audio") or {}).get("output") or {}) if ga else {}
    p.input_format = _format(inp.get("format") if ga else s.get("input_audio_format"))
    p.output_format = _format(outp.get("format") if ga else s.get("output_audio_format"))
    td = inp.get("turn_detection") if ga else s.get("turn_detection")
    p.vad_type = "off" if td is None else td.get("type", "server_vad")
    p.vad = {} if td is None else {k: td[k] for k in _VAD_KEYS if k in td}
    p.tools = tuple(t.get("name") for t in s.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function")
    tr = inp.get("transcription") if ga else s.get("input_audio_transcription")
    p.transcription = "off" if not tr else (tr.get("model") or "on")
    voice = outp.get("voice") if ga else s.get("voice")
    p.voice = voice.get("id") if isinstance(voice, dict) else voice
    instr = s.get("instructions")
    p.instructions_chars = len(instr) if isinstance(instr, str) and instr != DEFAULT_INSTRUCTIONS else None
    p.greets = _greets(snap, events)
    p.tools_not_declared = tuple(_not_declared(snap))
    for err in snap.get("errors") or []:
        if err.get("type") == "invalid_request_error" and err.get("code") != "beta_api_shape_disabled":
            code = str(err.get("code") or "invalid_request_error")
            p.openai_errors[code] = p.openai_errors.get(code, 0) + 1
            p.error_examples.setdefault(code, str(err.get("message") or ""))
    if core is not None:
        # only the caller's audio sent while the session was open can have reached it (a bridge that
        # opens OpenAI late, or outlives it, is not sending the wrong format)
        t_open, close = snap.get("t_open_ns"), snap.get("close") or {}
        t_close = close.get("t_ns") if isinstance(close, dict) else None
        sent = np.frombuffer(core.media_sent_ns, dtype=np.int64) if len(core.media_sent_ns) else np.zeros(0, np.int64)
        live = (sent >= (t_open or 0)) & (sent <= (t_close if t_close is not None else np.iinfo(np.int64).max))
        sent_ms = float(np.count_nonzero(live)) * 20.0
        if sent_ms and snap.get("audio_in_ms"):
            p.audio_in_ratio = round(float(snap["audio_in_ms"]) / sent_ms, 3)
        oa_ms = sum(float(r.get("audio_ms_sent") or 0) for r in snap.get("responses") or [] if isinstance(r, dict))
        if oa_ms and core.playback.bytes_received:
            p.audio_out_ratio = round(core.playback.bytes_received / 8 / oa_ms, 3)


def _format(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("type")
    return _BETA_FORMATS.get(value, value) if isinstance(value, str) else None


def _greets(snap: dict[str, Any], events: list[dict[str, Any]]) -> bool:
    """A response the client created before the caller's first speech (VAD) or commit (manual)."""
    firsts = [t.get("t_speech_started_ns") for t in snap.get("turns") or [] if isinstance(t, dict)]
    firsts += [e["t_ns"] for e in events if e.get("type") in ("input_audio_buffer.speech_started",
                                                               "input_audio_buffer.commit")]
    spoke = min((t for t in firsts if t is not None), default=None)
    return any(isinstance(r, dict) and r.get("trigger") == "client"
               and (spoke is None or (r.get("t_trigger_ns") or 0) < spoke)
               for r in snap.get("responses") or [])


def _not_declared(snap: dict[str, Any]) -> list[str]:
    """Tools the mock's script called that the bridge had not declared (``tool_not_declared``
    in a response record: the tool's name, or true with the name in ``reply``)."""
    names: list[str] = []
    for r in snap.get("responses") or []:
        flag = r.get("tool_not_declared") if isinstance(r, dict) else None
        if not flag:
            continue
        name = flag if isinstance(flag, str) else str(r.get("reply") or "").removeprefix("tool:") or "?"
        if name not in names:
            names.append(name)
    return names


def _truncates(snap: dict[str, Any], core: CallerCore | None,
               barge_ins: list[BargeInMetrics] | None) -> list[dict[str, Any]]:
    by_t = {b.truncate_ns: b for b in barge_ins or [] if b.truncate_ns is not None}
    out = []
    for rec in snap.get("truncates") or []:
        if not isinstance(rec, dict):
            continue
        row: dict[str, Any] = {"audio_end_ms": rec.get("audio_end_ms"), "accepted": rec.get("accepted"),
                               "error": rec.get("error"), "heard_ms": None, "cause": None}
        b = by_t.get(rec.get("t_ns"))
        if b is not None:
            d = explain_truncate(b, core, snap)
            row.update(heard_ms=round(b.heard_ms, 1), cause=d.cause)
        out.append(row)
    return out


# ============================================================= capabilities


def _capabilities(p: BridgeProfile, audio_before_speech: bool) -> None:
    """Offered / absent / unknown for each capability, with the reason for each not offered.

    Without the mock only the greeting can be learned, and only one way: audio that
    reached the caller before it spoke. No audio then is no evidence (the caller may
    simply have spoken first), so it stays unknown."""
    if not p.mock_in_loop:
        for cap in CAPABILITIES:
            p.caps[cap], p.reasons[cap] = "unknown", NO_MOCK
        if audio_before_speech:
            p.caps["greeting"] = "offered"
        else:
            p.reasons["greeting"] = ("unknown: no audio reached the caller before it spoke, and without the mock"
                                     " it is not known whether the bridge asked OpenAI to speak first")
        return
    if p.refused:
        for cap in CAPABILITIES:
            p.caps[cap] = "absent"
            p.reasons[cap] = ("the bridge never configured a session: the real API refused its dialect"
                              " (beta_api_shape_disabled, close 4000)")
        return
    no_update = " (it sent no session.update: OpenAI's default is audio/pcm 24 kHz)" if p.session_updates == 0 else ""
    both = f"{p.input_format} in, {p.output_format} out"
    checks = {
        "greeting": (bool(p.greets), "the bridge does not speak first: it sent no response.create before the"
                                     " caller spoke"),
        "tools": (bool(p.tools), "the bridge declared no tools"),
        "transcoding": (p.input_format != PCMU or p.output_format != PCMU,
                        "the bridge does not transcode: it asked OpenAI for audio/pcmu both ways"),
        "passthrough": (p.input_format == PCMU and p.output_format == PCMU,
                        f"the bridge does not pass μ-law through: it asked OpenAI for {both}{no_update}"),
        "transcription": (p.transcription not in (None, "off"), "the bridge did not turn on input transcription"),
    }
    for cap, (ok, why) in checks.items():
        p.caps[cap] = "offered" if ok else "absent"
        if not ok:
            p.reasons[cap] = why


# ================================================================== merging


_SUMMED = ("calls", "media_messages", "marks", "barge_ins", "barge_in_clears")
_POOLED = ("mark_gaps_ms", "media_per_mark", "truncates")


def merge_profiles(profiles: list[BridgeProfile]) -> BridgeProfile:
    """One run's profile: counts add up, per-mark figures pool, a field the calls disagree
    on becomes :class:`Varies`, a capability offered by some calls only is ``varies``."""
    if not profiles:
        return BridgeProfile(calls=0)
    if len(profiles) == 1:
        return replace(profiles[0])
    m = BridgeProfile()
    for f in fields(BridgeProfile):
        vals = [getattr(p, f.name) for p in profiles]
        if f.name in _SUMMED:
            setattr(m, f.name, sum(vals))
        elif f.name in _POOLED:
            setattr(m, f.name, [x for v in vals for x in v])
        elif f.name in ("openai_errors", "twilio_warnings"):
            setattr(m, f.name, dict(sum((Counter(v) for v in vals), Counter())))
        elif f.name == "error_examples":
            setattr(m, f.name, {k: v for d in reversed(vals) for k, v in d.items()})
        elif f.name == "tools_not_declared":
            setattr(m, f.name, tuple(dict.fromkeys(x for v in vals for x in v)))
        elif f.name not in ("caps", "reasons", "lints"):
            setattr(m, f.name, _merge_value(vals))
    for cap in CAPABILITIES:
        states = [p.caps.get(cap, "unknown") for p in profiles]
        if len(set(states)) == 1:
            m.caps[cap] = states[0]
            if states[0] != "offered":
                m.reasons[cap] = profiles[0].reasons.get(cap, NO_MOCK)
        else:
            m.caps[cap] = "varies"
            first = next(p.reasons[cap] for p in profiles if p.caps.get(cap) != "offered" and cap in p.reasons)
            m.reasons[cap] = f"offered in {states.count('offered')} of {len(states)} calls; otherwise: {first}"
    m.lints = _merge_lints(profiles)
    return m


def _merge_value(vals: list[Any]) -> Any:
    distinct: list[Any] = []
    for v in vals:
        for x in v.values if isinstance(v, Varies) else (v,):
            if x not in distinct:
                distinct.append(x)
    return distinct[0] if len(distinct) == 1 else Varies(tuple(distinct))


def _merge_lints(profiles: list[BridgeProfile]) -> list[Lint]:
    """One lint per code: the first call's wording, and how many calls had it."""
    merged: dict[str, Lint] = {}
    for p in profiles:
        for x in p.lints:
            if x.code in merged:
                merged[x.code] = replace(merged[x.code], calls=merged[x.code].calls + x.calls)
            else:
                merged[x.code] = replace(x)
    return list(merged.values())


# ================================================================== helpers


def show_value(v: Any) -> str:
    if v is None:
        return "?"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, tuple):
        return ",".join(map(str, v)) or "none"
    return str(v)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Varies):
        return {"varies": [_jsonable(x) for x in v.values]}
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v
