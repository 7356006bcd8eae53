"""The bridge profile as a few console lines (each at most 80 columns), then its lints.

Kept apart from :mod:`.bridge_profile` so the facts and their wording change
independently; a value the calls of a run disagreed on prints as ``a|b``. A line
that grows past 80 columns (values that vary make it longer) goes on under the same
label at its last ``; `` that fits, so that nothing is lost; only a single fact
longer than a line is clipped.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .bridge_profile import BridgeProfile, Varies, show_value

WIDTH = 80


def render_lines(p: BridgeProfile) -> list[str]:
    lines = [_head(p)]
    if p.refused is True:
        lines.append("openai: refused before any session was configured")
    elif p.mock_in_loop is True or isinstance(p.mock_in_loop, Varies):
        lines += _openai(p)
    else:
        lines.append("openai: unknown (no mock OpenAI session seen for this call)")
    lines.append(_twilio(p))
    if p.truncates:
        lines.append(_truncates(p))
    lines.append(_offers(p))
    lines += [f"lint: {x.message}" + (f" [{x.calls}/{p.calls}]" if x.calls < p.calls else "") for x in p.lints]
    return [part for line in lines for part in _fit(line)]


def _fit(line: str) -> list[str]:
    """``line`` as lines of at most :data:`WIDTH` columns, split at ``; `` and each under the label."""
    if len(line) <= WIDTH:
        return [line]
    label, sep, _ = line.partition(": ")
    cut = line.rfind("; ", 0, WIDTH)
    if sep and cut > len(label) + len(sep):
        return [line[:cut]] + _fit(f"{label}: {line[cut + 2:]}")
    return [line[: WIDTH - 1] + "…"]


def _head(p: BridgeProfile) -> str:
    calls = f" ({p.calls} calls)" if p.calls != 1 else ""
    if p.mock_in_loop is not True and not isinstance(p.mock_in_loop, Varies):
        return f"bridge{calls}: dialect, model and session unknown"
    dialect = str(p.dialect).upper() if not isinstance(p.dialect, Varies) else str(p.dialect)
    extra = " + OpenAI-Beta header" if p.beta_header is True else ""
    if p.refused is True:
        return f"bridge{calls}: {dialect}{extra}, refused by the real API (close 4000)"
    return (f"bridge{calls}: {dialect}{extra}, model {show_value(p.model)},"
            f" {show_value(p.session_updates)} session.update, greets first: {show_value(p.greets)}")


def _openai(p: BridgeProfile) -> list[str]:
    instr = "default" if p.instructions_chars is None else f"{show_value(p.instructions_chars)} chars"
    audio = (f"audio: {show_value(p.input_format)} in, {show_value(p.output_format)} out;"
             f" voice {show_value(p.voice)}; instructions {instr}")
    tools = show_value(p.tools) if p.tools is not None else "?"
    missing = f" (not declared: {', '.join(p.tools_not_declared)})" if p.tools_not_declared else ""
    return [audio, _vad(p), f"tools: {tools}{missing}; transcription: {show_value(p.transcription)}"]


def _vad(p: BridgeProfile) -> str:
    if isinstance(p.vad, Varies) or isinstance(p.vad_type, Varies):
        return f"vad: {show_value(p.vad_type)} (settings vary between calls)"
    if p.vad_type in (None, "off"):
        return f"vad: {show_value(p.vad_type)}"
    v: dict[str, Any] = p.vad or {}
    parts = [str(p.vad_type)]
    for key, label in (("threshold", "threshold"), ("prefix_padding_ms", "prefix"),
                       ("silence_duration_ms", "silence"), ("eagerness", "eagerness")):
        if key in v:
            parts.append(f"{label} {v[key]}" + (" ms" if key.endswith("_ms") else ""))
    auto, interrupt = v.get("create_response"), v.get("interrupt_response")
    parts.append({(True, True): "auto reply+interrupt", (True, False): "auto reply, no interrupt",
                  (False, True): "interrupt, no auto reply"}.get((bool(auto), bool(interrupt)),
                                                                "no auto reply/interrupt"))
    return "vad: " + " ".join(parts)


def _twilio(p: BridgeProfile) -> str:
    if not p.media_messages:
        marks = "no audio sent"
    elif not p.mark_gaps_ms:
        marks = f"{p.media_messages} media, no marks"
    else:
        per = sorted(p.media_per_mark)[len(p.media_per_mark) // 2]
        marks = (f"marks every {p.mark_gap_p50_ms:.0f} ms of audio (max {p.mark_gap_max_ms:.0f}),"
                 f" {per} media/mark")
    clear = f"clear {p.barge_in_clears}/{p.barge_ins} barge-ins" if p.barge_ins else "no barge-ins"
    return f"twilio: {marks}; {clear}"


def _truncates(p: BridgeProfile) -> str:
    accepted = sum(1 for t in p.truncates if t.get("accepted"))
    causes = Counter(t["cause"] for t in p.truncates if t.get("cause"))
    how = ", ".join(f"≈ {c}" + (f" ×{n}" if n > 1 else "") for c, n in causes.items())
    return f"truncates: {len(p.truncates)} ({accepted} accepted)" + (f"; audio_end_ms {how}" if how else "")


def _offers(p: BridgeProfile) -> str:
    by: dict[str, list[str]] = {}
    for cap, state in p.caps.items():
        by.setdefault(state, []).append(cap)
    parts = [f"{'offers' if s == 'offered' else s}: {', '.join(c)}" for s, c in by.items()]
    return "; ".join(parts) if parts else "offers: nothing known"
