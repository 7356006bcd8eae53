"""The report's figures, as PNG bytes: a call's timeline and waveform, one histogram per metric.

Plots are drawn on :class:`matplotlib.figure.Figure` objects with the Agg
canvas directly, never through ``pyplot``: no global figure registry to leak
(every figure is dropped when its PNG is written), thread-safe, and importing
this module does not switch the backend of a process that embeds the harness
(the pytest plugin, a notebook).

Everything drawn was recorded: by the caller (its typed timeline, what it
heard) or by the mock OpenAI server (its session snapshot: responses, tool
calls, truncates, injected faults). A marker whose record is missing is not
drawn; nothing is inferred from a scenario's settings.
"""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..audio.codec import FRAME_MS, SAMPLE_RATE, ulaw_to_pcm16
from ..caller.call_result import CallResult
from .measurements import CallMetrics
from .timeline import ClearIn, ClosedByApp, Event, MarkEcho, SpeechEnd, SpeechStart, Stop, UtteranceEnd

DPI = 100
# a call's timeline and waveform share width and horizontal axes placement, so their x axes line up
CALL_FIG_W = 11.2  # inches: 1120 px, the page's content width
TIMELINE_H = 3.9
WAVE_H = 1.7
_AX_LEFT, _AX_WIDTH = 0.105, 0.885
HIST_FIG_SIZE = (5.55, 2.5)

MARK_COLOURS = {"played": "#2a9d3f", "cleared": "#e08a00", "idle": "#8a8a8a"}
SPEECH_COLOUR = "#3b7dd8"
HEARD_COLOUR = "#2a9d3f"
CLEAR_COLOUR = "#d62728"
TRUNCATE_COLOUR = "#8e44ad"
TOOL_COLOUR = "#b8860b"
FAULT_COLOUR = "#c2185b"
LIMIT_COLOUR = "#d62728"


def number(v: Any) -> float | None:
    """A finite float, or None (for None, bools, NaN, ±inf and what is not a number)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ===================================================================== what the plots show


def call_span_s(result: CallResult) -> float:
    """How long the call's timeline runs, in seconds from the stream start."""
    core = result.core
    t0 = core.t0_ns or 0
    end = len(core.tick_ns) * FRAME_MS / 1000
    if (last_ns := core.timeline.end_ns()) is not None:
        end = max(end, (last_ns - t0) / 1e9)
    return max(end, 0.1)


def speech_spans(timeline: Iterable[Event], t0_ns: int, end_s: float) -> list[tuple[float, float, str]]:
    """Caller speech as (start s, end s, fixture): speech_start → end of the speech_end frame.

    An utterance cut short (hang-up, app closed) ends at its utterance_end, the
    stop, or the end of the call.
    """
    spans: list[tuple[float, float, str]] = []
    open_: tuple[float, str] | None = None
    for ev in timeline:
        if not isinstance(ev, (SpeechStart, SpeechEnd, UtteranceEnd, Stop, ClosedByApp)):
            continue
        t = (ev.t_ns - t0_ns) / 1e9
        if isinstance(ev, SpeechStart):
            if open_ is not None:
                spans.append((open_[0], t, open_[1]))
            open_ = (t, ev.fixture)
        elif open_ is not None:
            end = t + FRAME_MS / 1000 if isinstance(ev, SpeechEnd) else t
            spans.append((open_[0], max(end, open_[0]), open_[1]))
            open_ = None
    if open_ is not None:
        spans.append((open_[0], max(end_s, open_[0]), open_[1]))
    return spans


def heard_spans(played_bytes: Any, cuts: Iterable[float] = ()) -> list[tuple[float, float]]:
    """Runs of ticks in which app audio played, as (start s, end s) from the stream start.

    A run is split at each of ``cuts`` (the clears, in s) inside it: audio that
    played on after a clear is not the reply the clear cut.
    """
    played = np.asarray(played_bytes, dtype=np.int64) > 0
    if not played.any():
        return []
    d = np.diff(np.concatenate(([0], played.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    frame_s = FRAME_MS / 1000
    spans = [(float(s) * frame_s, float(e) * frame_s) for s, e in zip(starts, ends)]
    for c in sorted(cuts):
        spans = [piece for a, b in spans for piece in (((a, c), (c, b)) if a < c < b else ((a, b),))]
    return spans


def _sessions(snapshot: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The session snapshots in ``snapshot``: itself, or every session of a whole-server snapshot."""
    if not snapshot:
        return []
    out = [snapshot] if "sessions" not in snapshot else []
    for s in snapshot.get("sessions") or []:
        if isinstance(s, dict):
            out += _sessions(s)
    return out


def truncates(snapshot: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The truncates the mock received (each with its ``t_ns``)."""
    found: list[dict[str, Any]] = []
    for s in _sessions(snapshot):
        tr = s.get("truncates")
        if isinstance(tr, list):
            found += [t for t in tr if isinstance(t, dict) and isinstance(t.get("t_ns"), int)]
    return found


@dataclass(frozen=True)
class Marker:
    """Something the mock recorded at ``t_ns``: a reply that began, a tool call, an injected fault."""

    t_ns: int
    label: str


def replies(snapshot: dict[str, Any] | None) -> list[Marker]:
    """Each mock response with audio: when its first audio left the mock, and the reply's name
    (``… (cut: reason)`` for one that did not complete)."""
    out = []
    for s in _sessions(snapshot):
        for r in s.get("responses") or []:
            t = r.get("t_first_audio_ns") if isinstance(r, dict) else None
            if isinstance(t, int) and not str(r.get("reply", "")).startswith("tool:"):
                label = str(r.get("reply") or "reply")
                if r.get("status") not in (None, "completed", "in_progress"):
                    label += f" (cut: {r.get('reason') or r.get('status')})"
                out.append(Marker(t, label))
    return sorted(out, key=lambda m: m.t_ns)


def tool_calls(snapshot: dict[str, Any] | None) -> list[Marker]:
    """Each tool call the mock's model made: when its arguments were done, and the tool's name."""
    out = []
    for s in _sessions(snapshot):
        for r in s.get("responses") or []:
            reply = str(r.get("reply", "")) if isinstance(r, dict) else ""
            t = r.get("t_done_ns") or r.get("t_created_ns") if reply.startswith("tool:") else None
            if isinstance(t, int):
                out.append(Marker(t, reply.removeprefix("tool:")))
    return sorted(out, key=lambda m: m.t_ns)


def faults(snapshot: dict[str, Any] | None) -> list[Marker]:
    """The faults the mock injected, from its event log (``dir == "fault"``)."""
    out = []
    for s in _sessions(snapshot):
        for e in s.get("events") or []:
            if isinstance(e, dict) and e.get("dir") == "fault" and isinstance(e.get("t_ns"), int):
                out.append(Marker(e["t_ns"], str(e.get("type") or "fault")))
    return sorted(out, key=lambda m: m.t_ns)


# ===================================================================== PNG


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    data = buf.getvalue()
    try:  # a 128-colour palette keeps the plots sharp and the PNGs far smaller
        from PIL import Image
        img = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        out = io.BytesIO()
        img.save(out, format="PNG", optimize=True)
        if len(out.getvalue()) < len(data):
            data = out.getvalue()
    except Exception:  # Pillow comes with matplotlib; if it cannot, the RGBA PNG is fine
        pass
    fig.clear()
    return data


# ===================================================================== histograms


@dataclass(frozen=True)
class Limit:
    """An expectation's limit drawn on a histogram: ``value`` and what it says (``p95 ≤ 1500 ms: greeting``)."""

    value: float
    label: str


def metric_histogram(values: list[float], title: str, unit: str, limits: Iterable[Limit] = ()) -> bytes | None:
    """:func:`histogram_fig` as PNG bytes, or None when there is no value."""
    fig = histogram_fig(values, title, unit, limits)
    return None if fig is None else _png(fig)


def histogram_fig(values: list[float], title: str, unit: str, limits: Iterable[Limit] = ()) -> Figure | None:
    """One metric's distribution on its own axes, p50/p95 dashed, each expectation limit a red line.

    The x range takes in the limits too, so a limit far from the values is still seen.
    """
    vals = [v for v in values if number(v) is not None]
    if not vals:
        return None
    lims = list(limits)
    fig = Figure(figsize=HIST_FIG_SIZE)
    ax = fig.add_axes((0.1, 0.2, 0.54, 0.68))
    arr = np.asarray(vals, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    span_lo, span_hi = min([lo] + [x.value for x in lims]), max([hi] + [x.value for x in lims])
    pad = max((span_hi - span_lo) * 0.05, 1.0)
    # bins over the values, none narrower than 1/60 of the axis: a lone value still shows as a bar
    width = max((hi - lo) / min(30, max(6, len(vals) // 2)), (span_hi - span_lo + 2 * pad) / 60)
    n_bins = max(1, math.ceil((hi - lo) / width))
    bins = np.linspace((lo + hi) / 2 - n_bins * width / 2, (lo + hi) / 2 + n_bins * width / 2, n_bins + 1)
    ax.hist(arr, bins=bins, color=SPEECH_COLOUR, alpha=0.85)
    p50, p95 = float(np.percentile(arr, 50)), float(np.percentile(arr, 95))
    ax.axvline(p50, color="#1d3f70", ls="--", lw=1)
    ax.axvline(p95, color="#1d3f70", ls=":", lw=1.2)
    handles: list[Any] = [Line2D([], [], color="#1d3f70", ls="--", label=f"p50 {p50:.0f} {unit}"),
                          Line2D([], [], color="#1d3f70", ls=":", label=f"p95 {p95:.0f} {unit}")]
    for i, lim in enumerate(lims):
        ax.axvline(lim.value, color=LIMIT_COLOUR, lw=1.6, ls=("-", "-.", (0, (5, 2)))[i % 3])
        handles.append(Line2D([], [], color=LIMIT_COLOUR, lw=1.6, ls=("-", "-.", (0, (5, 2)))[i % 3],
                              label=textwrap.fill(f"limit {lim.label}", 30, subsequent_indent="  ")))
    ax.set_xlim(span_lo - pad, span_hi + pad)
    ax.set_xlabel(unit, fontsize=9)
    ax.set_ylabel("count", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{title} (n={len(vals)})", fontsize=10)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
              borderaxespad=0)
    ax.grid(axis="y", alpha=0.3)
    return fig


# ===================================================================== a call


def _label(ax: Any, a: float, b: float, y: float, text: str, px_per_s: float, colour: str, h: float) -> None:
    """Label a bar inside when the text fits, else just above it."""
    if (b - a) * px_per_s > 7.2 * len(text) + 12:
        ax.text((a + b) / 2, y, text, ha="center", va="center", fontsize=8.5, color="white", clip_on=True)
    else:
        ax.text(a, y + h / 2 + 0.04, text, ha="left", va="bottom", fontsize=8, color=colour, clip_on=True)


def timeline_figure(metrics: CallMetrics, result: CallResult | None,
                    snapshot: dict[str, Any] | None = None) -> bytes | None:
    """The call's timeline (:func:`timeline_fig`) as PNG bytes, or None when the stream never started."""
    fig = timeline_fig(metrics, result, snapshot)
    return None if fig is None else _png(fig)


def timeline_fig(metrics: CallMetrics, result: CallResult | None,
                 snapshot: dict[str, Any] | None = None) -> Figure | None:
    """Rows: caller speech (fixture names), assistant audio heard (reply names), marks, what was measured;
    clears, truncates, tool calls, injected faults and a barge-in that got no clear as markers."""
    if result is None or result.core is None or result.core.t0_ns is None:
        return None
    core = result.core
    t0 = core.t0_ns
    end_s = call_span_s(result)

    def s(t_ns: int) -> float:
        return (t_ns - t0) / 1e9

    fig = Figure(figsize=(CALL_FIG_W, TIMELINE_H))
    ax = fig.add_axes((_AX_LEFT, 0.13, _AX_WIDTH, 0.66))
    rows = {"measured": 0, "marks": 1, "assistant heard": 2, "caller speech": 3}
    h = 0.56
    px_per_s = CALL_FIG_W * DPI * _AX_WIDTH / (end_s * 1.01)
    handles: list[Any] = [Patch(color=SPEECH_COLOUR, label="caller speech"),
                          Patch(color=HEARD_COLOUR, label="assistant audio heard")]

    speech = speech_spans(core.timeline, t0, end_s)
    y = rows["caller speech"]
    ax.broken_barh([(a, b - a) for a, b, _ in speech], (y - h / 2, h), color=SPEECH_COLOUR)
    for a, b, fx in speech:
        _label(ax, a, b, y, fx, px_per_s, "#1d3f70", h)

    clears = [s(t) for t in core.timeline.times(ClearIn)]
    heard = heard_spans(core.played_bytes, clears)
    y = rows["assistant heard"]
    ax.broken_barh([(a, b - a) for a, b in heard], (y - h / 2, h), color=HEARD_COLOUR)
    names = replies(snapshot)
    for a, b in heard:  # the reply whose audio the mock began sending last before this run started
        if b - a < 0.15:  # the frame or two that played on while a clear travelled: no label
            continue
        before = [r for r in names if s(r.t_ns) <= a + 0.25]
        label = before[-1].label if before else "not a mock reply" if snapshot else "assistant audio"
        if before:
            names.remove(before[-1])
        _label(ax, a, b, y, label, px_per_s, "#14612a", h)

    ev = core.timeline
    for reason, colour in MARK_COLOURS.items():
        xs = [s(e.t_ns) for e in ev.iter_of(MarkEcho) if e.reason == reason]
        if xs:
            ax.vlines(xs, rows["marks"] - 0.25, rows["marks"] + 0.25, colors=colour, lw=2, zorder=4)
            handles.append(Line2D([], [], color=colour, lw=2, label=f"mark echoed: {reason}"))

    top = rows["caller speech"] + h / 2 + 0.35
    for x in clears:
        ax.axvline(x, color=CLEAR_COLOUR, lw=1.2)
    if clears:
        handles.append(Line2D([], [], color=CLEAR_COLOUR, lw=1.2, label="clear"))
    missing = [b for b in metrics.barge_ins if b.clear_ns is None]
    for b in missing:  # the clear that should have come: the caller talked over audio, nothing cleared it
        x = s(b.onset_ns)
        ax.plot([x], [rows["assistant heard"]], marker="X", ms=11, mfc="white", mec=CLEAR_COLOUR, mew=2,
                ls="none", zorder=6)
        ax.text(x, rows["assistant heard"] - h / 2 - 0.08, "no clear", color=CLEAR_COLOUR, fontsize=8,
                ha="center", va="top", fontweight="bold", zorder=6)
    if missing:
        handles.append(Line2D([], [], color=CLEAR_COLOUR, marker="X", mfc="white", ls="none",
                              label="barge-in, no clear came"))
    trs = truncates(snapshot)
    for tr in trs:
        x = s(tr["t_ns"])
        ok = tr.get("accepted", True)
        ax.plot([x], [rows["assistant heard"] + h / 2 + 0.12], marker="v" if ok else "X", ms=7,
                color=TRUNCATE_COLOUR, ls="none", zorder=5)
        ax.axvline(x, color=TRUNCATE_COLOUR, lw=0.9, ls=":")
    if trs:
        handles.append(Line2D([], [], color=TRUNCATE_COLOUR, marker="v", ls=":", label="truncate"))
    tools = tool_calls(snapshot)
    for t in tools:
        x = s(t.t_ns)
        ax.plot([x], [rows["assistant heard"]], marker="D", ms=8, color=TOOL_COLOUR, mec="black", mew=0.6,
                ls="none", zorder=6)
        ax.text(x, top, f"tool: {t.label}", color=TOOL_COLOUR, fontsize=8, ha="center", va="bottom", clip_on=True)
    if tools:
        handles.append(Line2D([], [], color=TOOL_COLOUR, marker="D", ls="none", label="tool call"))
    fs = faults(snapshot)
    for f in fs:
        x = s(f.t_ns)
        ax.axvline(x, color=FAULT_COLOUR, lw=1.4, ls="-.")
        ax.plot([x], [top - 0.12], marker="*", ms=12, color=FAULT_COLOUR, ls="none", zorder=6)
        ax.text(x, top, f"fault: {f.label}", color=FAULT_COLOUR, fontsize=8, ha="center", va="bottom",
                fontweight="bold", clip_on=True)
    if fs:
        handles.append(Line2D([], [], color=FAULT_COLOUR, marker="*", ls="-.", label="injected fault"))
    stops = [s(t) for t in ev.times(Stop)]
    app_closed = [s(e.t_ns) for e in ev.iter_of(ClosedByApp) if not e.after_stop]
    for x in stops:
        ax.axvline(x, color="black", lw=1.5)
    for x in app_closed:
        ax.axvline(x, color="black", lw=1.5, ls="--")
    if stops:
        handles.append(Line2D([], [], color="black", lw=1.5, label="caller hung up"))
    if app_closed:
        handles.append(Line2D([], [], color="black", lw=1.5, ls="--", label="bridge closed the stream"))

    # what was measured: turn latency and barge-in → clear, as labelled spans
    bars, colours = [], []
    for t in metrics.turns:
        if t.first_audio_ns is not None:
            a, b = s(t.speech_end_ns), s(t.first_audio_ns)
            bars.append((a, max(b - a, 0.002)))
            colours.append(SPEECH_COLOUR)
            if (lat := number(t.latency_ms)) is not None:
                ax.text(b + 0.006 * end_s, rows["measured"], f"{lat:.0f} ms", va="center", fontsize=8, clip_on=True)
    for bi in metrics.barge_ins:
        if bi.clear_ns is not None:
            a, b = s(bi.onset_ns), s(bi.clear_ns)
            bars.append((a, max(b - a, 0.002)))
            colours.append(CLEAR_COLOUR)
            if (cl := number(bi.clear_ms)) is not None:
                ax.text(b + 0.006 * end_s, rows["measured"] + 0.3, f"clear {cl:.0f} ms", va="center", fontsize=8,
                        color=CLEAR_COLOUR, clip_on=True)
    if bars:
        ax.broken_barh(bars, (rows["measured"] - h / 3, 2 * h / 3), facecolors=colours, alpha=0.6)
        handles.append(Patch(color=SPEECH_COLOUR, alpha=0.6, label="turn latency"))
        if CLEAR_COLOUR in colours:
            handles.append(Patch(color=CLEAR_COLOUR, alpha=0.6, label="barge-in → clear"))

    ax.set_yticks(list(rows.values()), list(rows.keys()), fontsize=9)
    ax.set_ylim(-0.6, top + 0.45)
    ax.set_xlim(0, end_s * 1.01)
    ax.set_xlabel("seconds from stream start", fontsize=9)
    ax.tick_params(axis="x", labelsize=9)
    ax.grid(axis="x", alpha=0.25)
    ncol = min(5, len(handles))
    legend_h = 0.03 + 0.062 * math.ceil(len(handles) / ncol)
    ax.set_position((_AX_LEFT, 0.13, _AX_WIDTH, 0.98 - 0.13 - legend_h))
    fig.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=9, frameon=False,
               bbox_to_anchor=(_AX_LEFT + _AX_WIDTH / 2, 1.0), handlelength=1.6, columnspacing=1.4)
    return fig


def envelope(samples: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start sample of each column, min, max): what a waveform looks like at ``columns`` px."""
    n = len(samples)
    per = max(1, math.ceil(n / max(1, columns)))
    cols = math.ceil(n / per)
    padded = np.zeros(cols * per, dtype=np.float32)
    padded[:n] = samples
    blocks = padded.reshape(cols, per)
    if cols * per > n:  # the padding must not widen the last column's range
        last = samples[(cols - 1) * per:]
        blocks[-1, :] = last[0] if len(last) else 0.0
        blocks[-1, : len(last)] = last
    return np.arange(cols) * per, blocks.min(axis=1), blocks.max(axis=1)


def waveform_figure(result: CallResult | None) -> bytes | None:
    """What the caller heard, on the timeline's time axis (shaded: the caller speaking)."""
    if result is None or result.core is None or result.core.t0_ns is None:
        return None
    core = result.core
    end_s = call_span_s(result)
    pcm = ulaw_to_pcm16(bytes(core.heard)).astype(np.float32) / 32768.0
    fig = Figure(figsize=(CALL_FIG_W, WAVE_H))
    ax = fig.add_axes((_AX_LEFT, 0.27, _AX_WIDTH, 0.66))
    for a, b, _ in speech_spans(core.timeline, core.t0_ns, end_s):
        ax.axvspan(a, b, color=SPEECH_COLOUR, alpha=0.15, lw=0)
    if len(pcm):
        columns = int(CALL_FIG_W * DPI * _AX_WIDTH)
        start, lo, hi = envelope(pcm, columns)
        x = start / SAMPLE_RATE
        ax.fill_between(x, lo, hi, step="post", color=HEARD_COLOUR, lw=0.4, edgecolor=HEARD_COLOUR)
    ax.set_xlim(0, end_s * 1.01)
    ax.set_ylim(-1, 1)
    ax.set_yticks([-1, 0, 1])
    ax.tick_params(labelsize=9)
    ax.set_ylabel("heard", fontsize=9)
    ax.set_xlabel("seconds from stream start (shaded: caller speech)", fontsize=9)
    return _png(fig)
