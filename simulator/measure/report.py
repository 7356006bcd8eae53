"""The reports of a run: ``report.json``, ``junit.xml`` and a self-contained ``report.html``.

Everything here is written *from* the measured records (:mod:`.measurements`)
and what the caller recorded (:class:`~..caller.call_result.CallResult`); nothing is
measured here. Layout of ``out_dir``::

    report.json                  {"summary", "calls", "meta"} — keys per design.md (report_json.py)
    report.schema.json           its JSON Schema (draft 2020-12), the one shipped in this package
    junit.xml                    one <testsuite> per scenario, one <testcase> per call
    report.html                  one file: inline CSS, PNG plots as data: URIs, no JS
    calls/<scenario>-<i>/        heard.wav, heard.ulaw, timeline.json (recording.write_call)

Plots are drawn on :class:`matplotlib.figure.Figure` objects with the Agg
canvas directly, never through ``pyplot``: no global figure registry to leak
(every figure is dropped when its PNG is written), thread-safe, and importing
this module does not switch the backend of a process that embeds the harness
(the pytest plugin, a notebook).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import orjson
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..audio.codec import FRAME_MS, SAMPLE_RATE, ulaw_to_pcm16
from ..caller.call_result import CallResult
from .junit import (
    STATUSES,
    _by_scenario,
    _expectations,
    _status,
    _write_junit,
    _x,
    failure_text,
)
from .measurements import CallMetrics
from .recording import write_call
from .report_json import call_json
from .report_json import clean as _clean
from .report_json import write_json as _write_json
from .timeline import ClearIn, ClosedByApp, Event, MarkEcho, SpeechEnd, SpeechStart, Stop, UtteranceEnd

#: per-call figures (timeline + waveform) are drawn for this many calls at most
MAX_CALL_FIGURES = 50
DPI = 80
CALL_FIG_SIZE = (10.0, 2.7)  # inches; timeline and waveform share it so their x axes line up
WAVE_FIG_SIZE = (10.0, 1.9)
HIST_FIG_SIZE = (8.0, 3.0)
_AX_RECT = (0.125, 0.2, 0.86, 0.62)  # fixed axes placement (left, bottom, width, height)
_WAVE_RECT = (0.125, 0.24, 0.86, 0.66)

DASH = "—"
MARK_COLOURS = {"played": "#2a9d3f", "cleared": "#e08a00", "idle": "#8a8a8a"}
SPEECH_COLOUR = "#3b7dd8"
HEARD_COLOUR = "#2a9d3f"
CLEAR_COLOUR = "#d62728"
TRUNCATE_COLOUR = "#8e44ad"


@dataclass
class CallArtifacts:
    """What the report needs from each call besides the metrics."""

    metrics: CallMetrics
    result: CallResult | None  # for timelines and waveforms (None if the call never started)
    mock_snapshot: dict[str, Any] | None = None  # the mock session's snapshot: truncates for the timeline


# ===================================================================== entry point


def write_reports(out_dir: Path, calls: list[CallArtifacts], summary: dict[str, Any], *,
                  title: str = "callsim report", meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write every report of a run into ``out_dir``; return their paths.

    Returns ``{"json", "junit", "html", "calls"}`` → paths. Each call's
    ``metrics.artifacts`` is filled with the paths of its recordings, relative
    to ``out_dir`` (POSIX separators), before report.json is written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calls_dir = out_dir / "calls"
    used: set[str] = set()
    for call in calls:
        _write_call_artifacts(out_dir, calls_dir, call, used)
    full_meta = _meta(title, meta, len(calls))
    paths = {
        "json": _write_json(out_dir / "report.json", calls, summary, full_meta),
        "junit": _write_junit(out_dir / "junit.xml", calls, title, full_meta),
        "html": _write_html(out_dir / "report.html", calls, summary, title, full_meta),
        "calls": calls_dir,
    }
    return paths


def _meta(title: str, meta: dict[str, Any] | None, n_calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "title": title,
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "generator": f"callsim {_version()}",
        "call_figures_limit": MAX_CALL_FIGURES,
        "calls_with_figures": min(n_calls, MAX_CALL_FIGURES),
    }
    out.update(meta or {})
    return out


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("callsim")
    except Exception:  # running from a checkout that was never installed
        return "dev"


# ===================================================================== per-call files


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _call_dir_name(m: CallMetrics, used: set[str]) -> str:
    base = f"{_UNSAFE.sub('_', m.scenario).strip('._') or 'call'}-{m.call_index}"
    name, n = base, 1
    while name in used:  # the same scenario/index twice in one report: keep both
        n += 1
        name = f"{base}.{n}"
    used.add(name)
    return name


def _write_call_artifacts(out_dir: Path, calls_dir: Path, call: CallArtifacts, used: set[str]) -> None:
    if call.result is None:
        return
    d = calls_dir / _call_dir_name(call.metrics, used)
    files = write_call(call.result, d)
    call.metrics.artifacts["dir"] = d.relative_to(out_dir).as_posix()
    for p in files:
        call.metrics.artifacts[p.name] = p.relative_to(out_dir).as_posix()


# ===================================================================== what the plots show


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _call_span_s(result: CallResult) -> float:
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


def heard_spans(played_bytes: Any) -> list[tuple[float, float]]:
    """Runs of ticks in which app audio played, as (start s, end s) from the stream start."""
    played = np.asarray(played_bytes, dtype=np.int64) > 0
    if not played.any():
        return []
    d = np.diff(np.concatenate(([0], played.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    frame_s = FRAME_MS / 1000
    return [(float(s) * frame_s, float(e) * frame_s) for s, e in zip(starts, ends)]


def _truncates(snapshot: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not snapshot:
        return []
    found: list[dict[str, Any]] = []
    tr = snapshot.get("truncates")
    if isinstance(tr, list):
        found += [t for t in tr if isinstance(t, dict) and isinstance(t.get("t_ns"), int)]
    for s in snapshot.get("sessions") or []:  # a whole-server snapshot: every session's truncates
        if isinstance(s, dict):
            found += _truncates(s)
    return found


# ===================================================================== figures


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


def latency_histogram(calls: list[CallArtifacts]) -> bytes | None:
    lat = [v for c in calls for t in c.metrics.turns if (v := _num(t.latency_ms)) is not None]
    ovh = [v for c in calls for t in c.metrics.turns if (v := _num(t.overhead_ms)) is not None]
    if not lat and not ovh:
        return None
    fig = Figure(figsize=HIST_FIG_SIZE)
    ax = fig.add_axes((0.08, 0.17, 0.9, 0.7))
    both = np.array(lat + ovh)
    lo, hi = float(both.min()), float(both.max())
    if hi - lo < 1:
        lo, hi = lo - 10, hi + 10
    bins = np.linspace(lo, hi, int(min(40, max(8, len(both) // 2))) + 1)
    if lat:
        ax.hist(lat, bins=bins, color=SPEECH_COLOUR, alpha=0.75, label=f"turn latency (n={len(lat)})")
    if ovh:
        ax.hist(ovh, bins=bins, color="#e08a00", alpha=0.6, label=f"overhead: bridge + transport (n={len(ovh)})")
    if lat:
        ax.axvline(float(np.percentile(lat, 50)), color="#1d3f70", ls="--", lw=1)
        ax.axvline(float(np.percentile(lat, 95)), color="#1d3f70", ls=":", lw=1)
    ax.set_xlabel("ms")
    ax.set_ylabel("turns")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Turn latency (dashed: p50, dotted: p95)", fontsize=10)
    ax.legend(fontsize=8, loc="upper right", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def timeline_figure(call: CallArtifacts) -> bytes | None:
    """Rows: caller speech, assistant audio heard, marks; clear/truncate/hang-up as lines."""
    result = call.result
    if result is None or result.core is None or result.core.t0_ns is None:
        return None
    core = result.core
    t0 = core.t0_ns
    end_s = _call_span_s(result)
    fig = Figure(figsize=CALL_FIG_SIZE)
    ax = fig.add_axes(_AX_RECT)
    rows = {"measured": 0, "marks": 1, "assistant heard": 2, "caller speech": 3}
    h = 0.6
    speech = speech_spans(core.timeline, t0, end_s)
    ax.broken_barh([(a, b - a) for a, b, _ in speech], (rows["caller speech"] - h / 2, h), color=SPEECH_COLOUR)
    px_per_s = CALL_FIG_SIZE[0] * DPI * _AX_RECT[2] / (end_s * 1.01)
    for a, b, fx in speech:
        if (b - a) * px_per_s > 4.5 * len(fx) + 8:  # label only spans the name fits in
            ax.text((a + b) / 2, rows["caller speech"], fx, ha="center", va="center", fontsize=7, color="white",
                    clip_on=True)
    heard = heard_spans(core.played_bytes)
    ax.broken_barh([(a, b - a) for a, b in heard], (rows["assistant heard"] - h / 2, h), color=HEARD_COLOUR)

    ev = core.timeline
    for reason, colour in MARK_COLOURS.items():
        xs = [(e.t_ns - t0) / 1e9 for e in ev.iter_of(MarkEcho) if e.reason == reason]
        if xs:
            ax.vlines(xs, rows["marks"] - 0.25, rows["marks"] + 0.25, colors=colour, lw=2, zorder=4)
    clears = [(t - t0) / 1e9 for t in ev.times(ClearIn)]
    for x in clears:
        ax.axvline(x, color=CLEAR_COLOUR, lw=1.2)
    for tr in _truncates(call.mock_snapshot):
        x = (tr["t_ns"] - t0) / 1e9
        ok = tr.get("accepted", True)
        ax.plot([x], [rows["assistant heard"] + h / 2 + 0.12], marker="v" if ok else "X", ms=7,
                color=TRUNCATE_COLOUR, ls="none")
        ax.axvline(x, color=TRUNCATE_COLOUR, lw=0.8, ls=":")
    stops = [(t - t0) / 1e9 for t in ev.times(Stop)]
    app_closed = [(e.t_ns - t0) / 1e9 for e in ev.iter_of(ClosedByApp) if not e.after_stop]
    for x in stops:
        ax.axvline(x, color="black", lw=1.5)
    for x in app_closed:
        ax.axvline(x, color="black", lw=1.5, ls="--")

    # what was measured: turn latency and barge-in → clear, as labelled spans
    m = call.metrics
    bars, colours = [], []
    for t in m.turns:
        if t.first_audio_ns is not None:
            a, b = (t.speech_end_ns - t0) / 1e9, (t.first_audio_ns - t0) / 1e9
            bars.append((a, max(b - a, 0.002)))
            colours.append(SPEECH_COLOUR)
            if (lat := _num(t.latency_ms)) is not None:
                ax.text(b + 0.01 * end_s, rows["measured"], f"{lat:.0f} ms", va="center", fontsize=7, clip_on=True)
    for bi in m.barge_ins:
        if bi.clear_ns is not None:
            a, b = (bi.onset_ns - t0) / 1e9, (bi.clear_ns - t0) / 1e9
            bars.append((a, max(b - a, 0.002)))
            colours.append(CLEAR_COLOUR)
            if (cl := _num(bi.clear_ms)) is not None:
                ax.text(b + 0.01 * end_s, rows["measured"] + 0.3, f"clear {cl:.0f} ms", va="center", fontsize=7,
                        color=CLEAR_COLOUR, clip_on=True)
    if bars:
        ax.broken_barh(bars, (rows["measured"] - h / 3, 2 * h / 3), facecolors=colours, alpha=0.6)

    ax.set_yticks(list(rows.values()), list(rows.keys()), fontsize=8)
    ax.set_ylim(-0.6, 3.75)
    ax.set_xlim(0, end_s * 1.01)
    ax.set_xlabel("seconds from stream start", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.25)
    handles = [Patch(color=SPEECH_COLOUR, label="caller speech / turn latency"),
               Patch(color=HEARD_COLOUR, label="assistant audio played"),
               *[Line2D([], [], color=c, lw=1.5, label=f"mark {r}") for r, c in MARK_COLOURS.items()],
               Line2D([], [], color=CLEAR_COLOUR, lw=1.2, label="clear"),
               Line2D([], [], color=TRUNCATE_COLOUR, marker="v", ls=":", label="truncate"),
               Line2D([], [], color="black", lw=1.5, label="hang-up (dashed: app closed)")]
    fig.legend(handles=handles, loc="upper center", ncol=8, fontsize=7, frameon=False,
               bbox_to_anchor=(0.53, 1.0), handlelength=1.2, columnspacing=1.0)
    return _png(fig)


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


def waveform_figure(call: CallArtifacts) -> bytes | None:
    result = call.result
    if result is None or result.core is None or result.core.t0_ns is None:
        return None
    core = result.core
    end_s = _call_span_s(result)
    pcm = ulaw_to_pcm16(bytes(core.heard)).astype(np.float32) / 32768.0
    fig = Figure(figsize=WAVE_FIG_SIZE)
    ax = fig.add_axes(_WAVE_RECT)
    for a, b, _ in speech_spans(core.timeline, core.t0_ns, end_s):
        ax.axvspan(a, b, color=SPEECH_COLOUR, alpha=0.15, lw=0)
    if len(pcm):
        columns = int(WAVE_FIG_SIZE[0] * DPI * _WAVE_RECT[2])
        start, lo, hi = envelope(pcm, columns)
        x = start / SAMPLE_RATE
        ax.fill_between(x, lo, hi, step="post", color=HEARD_COLOUR, lw=0.4, edgecolor=HEARD_COLOUR)
    ax.set_xlim(0, end_s * 1.01)
    ax.set_ylim(-1, 1)
    ax.set_yticks([-1, 0, 1])
    ax.tick_params(labelsize=8)
    ax.set_ylabel("heard", fontsize=8)
    ax.set_xlabel("seconds from stream start (shaded: caller speech)", fontsize=8)
    return _png(fig)


# ===================================================================== report.html


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    f = _num(v)
    return DASH if f is None else f"{f:.{digits}f}"


def _e(s: Any) -> str:
    return html.escape(_x(s), quote=True)


def _img(data: bytes | None, alt: str) -> str:
    if not data:
        return f'<p class="muted">{_e(alt)}: nothing to plot.</p>'
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _anchor(m: CallMetrics) -> str:
    return "call-" + _UNSAFE.sub("_", f"{m.scenario}-{m.call_index}")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#1d1d1f;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d8d8d8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.passed{background:#dff3e3;color:#14612a;font-weight:600}.failed{background:#fbe0e0;color:#9b1c1c;font-weight:600}
.error{background:#fdebd0;color:#8a4b00;font-weight:600}
.muted{color:#6b7280}.meta td:first-child{color:#6b7280}
.totals span{display:inline-block;margin-right:18px;font-size:16px}
ul.msg{margin:0;padding-left:16px}section.call{margin:10px 0 22px}
img{display:block;max-width:100%;height:auto}code{font-size:12px}
"""

# summary metrics: key → (label, unit)
_SUMMARY_METRICS = (
    ("turn_latency_ms", "turn latency", "ms"),
    ("overhead_ms", "overhead (bridge + transport)", "ms"),
    ("uplink_hop_ms", "hop caller → OpenAI (line-tagged frames)", "ms"),
    ("downlink_hop_ms", "hop OpenAI → caller (first reply byte)", "ms"),
    ("barge_in_clear_ms", "barge-in → clear", "ms"),
    ("talk_over_ms", "talk-over after barge-in", "ms"),
    ("truncate_error_ms", "truncate error", "ms"),
)


def _summary_html(summary: dict[str, Any], calls: list[CallArtifacts]) -> str:
    counts = Counter(_status(c.metrics) for c in calls)
    n_calls = summary.get("calls", len(calls))
    passed = summary.get("passed", counts["passed"])
    failed = summary.get("failed", counts["failed"] + counts["error"])
    parts = [f'<p class="totals"><span>calls <b>{_e(_fmt(n_calls))}</b></span>'
             f'<span class="passed">&nbsp;passed {_e(_fmt(passed))}&nbsp;</span>'
             f'<span class="failed">&nbsp;failed {_e(_fmt(failed))}&nbsp;</span>']
    skipped = summary.get("skipped", counts["skipped"])
    if skipped:
        parts.append(f'<span class="muted">&nbsp;skipped {_e(_fmt(skipped))}&nbsp;</span>')
    errors = summary.get("errors", counts["error"] if counts["error"] else None)
    if errors is not None:
        parts.append(f'<span class="error">&nbsp;errors {_e(_fmt(errors))}&nbsp;</span>')
    parts.append("</p>")
    rows = []
    for key, label, unit in _SUMMARY_METRICS:
        st = summary.get(key) or {}
        if not isinstance(st, dict):
            st = {}
        cells = "".join(f'<td class="n">{_e(_fmt(st.get(q)))}</td>' for q in ("p50", "p95", "p99", "max"))
        rows.append(f"<tr><td>{_e(label)} <code>{_e(key)}</code></td><td>{unit}</td>{cells}</tr>")
    parts.append('<table class="summary"><tr><th>metric</th><th>unit</th><th>p50</th><th>p95</th><th>p99</th>'
                 "<th>max</th></tr>" + "".join(rows) + "</table>")
    codec = summary.get("codec") or {}
    codec = codec if isinstance(codec, dict) else {}
    parts.append(
        '<table class="summary"><tr><th>codec: bit-exact calls</th><th>codec: min SNR (dB)</th>'
        "<th>underrun total (ms)</th></tr>"
        f'<tr><td class="n">{_e(_fmt(codec.get("bit_exact_calls")))}</td>'
        f'<td class="n">{_e(_fmt(codec.get("min_snr_db")))}</td>'
        f'<td class="n">{_e(_fmt(summary.get("underrun_ms_total")))}</td></tr></table>')
    return "\n".join(parts)


def _join(values: Iterable[Any], digits: int = 0) -> str:
    vals = [_fmt(v, digits) for v in values]
    return ", ".join(vals) if vals else DASH


def _codec_cell(m: CallMetrics) -> str:
    c = m.codec
    if not c.checked:
        return DASH
    bits = []
    if c.bit_exact is not None:
        bits.append("bit-exact" if c.bit_exact else "not bit-exact")
    if _num(c.snr_db) is not None:
        bits.append(f"SNR {_fmt(c.snr_db)} dB")
    text = ", ".join(bits) or "checked"
    return f'<span title="{_e(c.note)}">{_e(text)}</span>' if c.note else _e(text)


def _problems_cell(m: CallMetrics) -> str:
    items = []
    if _status(m) == "skipped":
        items.append(f"<li><b>skipped:</b> {_e(m.skip_reason or 'the scenario does not apply')}</li>")
    if _status(m) == "error" or (m.error and _status(m) != "passed"):
        items.append(f"<li><b>error:</b> {_e(m.error or failure_text(m)[0])}</li>")
    for e in _expectations(m, "failed"):
        items.append(f"<li>{_e(e.get('message') or e.get('name'))}</li>")
    skipped = _expectations(m, "skipped")
    if skipped:
        why = "; ".join(f"{e.get('name')}: {e.get('message')}" for e in skipped)
        items.append(f'<li class="muted" title="{_e(why)}">{len(skipped)} skipped: {_e(why)}</li>')
    return f'<ul class="msg">{"".join(items)}</ul>' if items else ""


def _files_cell(m: CallMetrics) -> str:
    links = [f'<a href="{_e(p)}">{_e(k)}</a>' for k, p in m.artifacts.items() if k != "dir"]
    return " ".join(links) if links else DASH


def _results_html(calls: list[CallArtifacts], with_figures: set[int]) -> str:
    head = ("<tr><th>call</th><th>status</th><th>duration s</th><th>turn latency ms</th><th>overhead ms</th>"
            "<th>barge-in clear ms</th><th>truncate error ms</th><th>codec</th><th>underrun ms</th>"
            "<th>heard s</th><th>ended</th><th>failed expectations</th><th>files</th></tr>")
    out = []
    for scenario, group in _by_scenario(calls).items():
        counts = Counter(_status(c.metrics) for c in group)
        tally = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
        out.append(f"<h3>{_e(scenario)} <span class=\"muted\">({len(group)} call(s): {_e(tally)})</span></h3>")
        rows = []
        for c in group:
            m = c.metrics
            st = _status(m)
            name = _e(f"call {m.call_index}")
            if id(c) in with_figures:
                name = f'<a href="#{_anchor(m)}">{name}</a>'
            rows.append(
                f"<tr><td>{name}</td><td class=\"{st}\">{st}</td>"
                f'<td class="n">{_e(_fmt((_num(m.duration_ms) or 0) / 1000, 2))}</td>'
                f'<td class="n">{_e(_join(t.latency_ms for t in m.turns))}</td>'
                f'<td class="n">{_e(_join(t.overhead_ms for t in m.turns))}</td>'
                f'<td class="n">{_e(_join(b.clear_ms for b in m.barge_ins))}</td>'
                f'<td class="n">{_e(_join(b.truncate_error_ms for b in m.barge_ins))}</td>'
                f"<td>{_codec_cell(m)}</td>"
                f'<td class="n">{_e(_fmt(m.underrun_ms, 0))}</td>'
                f'<td class="n">{_e(_fmt((_num(m.heard_ms) or 0) / 1000, 2))}</td>'
                f"<td>{_e(m.end_reason or DASH)}</td>"
                f"<td>{_problems_cell(m)}</td><td>{_files_cell(m)}</td></tr>")
        out.append(f"<table class=\"results\">{head}{''.join(rows)}</table>")
    return "\n".join(out)


def _meta_html(meta: dict[str, Any]) -> str:
    first = [k for k in ("when", "target", "command") if k in meta]
    rest = [k for k in meta if k not in first and k != "title"]
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_meta_value(meta[k]))}</td></tr>" for k in first + rest)
    return f'<table class="meta">{rows}</table>'


def _meta_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    if isinstance(v, dict):
        return orjson.dumps(_clean(v)).decode()
    return str(v)


def _write_html(path: Path, calls: list[CallArtifacts], summary: dict[str, Any], title: str,
                meta: dict[str, Any]) -> Path:
    figure_calls = calls[:MAX_CALL_FIGURES]
    with_figures = {id(c) for c in figure_calls if c.result is not None and c.result.core is not None
                    and c.result.core.t0_ns is not None}
    profile = meta.get("bridge_profile") if isinstance(meta.get("bridge_profile"), dict) else None
    body = [f"<h1>{_e(title)}</h1>", _meta_html({k: v for k, v in meta.items() if k != "bridge_profile"}),
            "<h2>Summary</h2>", _summary_html(summary, calls)]
    if profile is not None:
        lines = "".join(f"<li>{_e(x)}</li>" for x in profile.get("lines", []))
        body += ["<h2>Bridge profile</h2>", f'<ul class="profile">{lines}</ul>']
    body += ["<h2>Latency</h2>", _img(latency_histogram(calls), "latency histogram"),
             "<h2>Results</h2>", _results_html(calls, with_figures), "<h2>Calls</h2>"]
    if len(calls) > MAX_CALL_FIGURES:
        body.append(f'<p class="muted">Figures are drawn for the first {MAX_CALL_FIGURES} of {len(calls)} calls; '
                    "every call's numbers are in the tables above and in report.json, its audio and timeline "
                    "under calls/.</p>")
    for c in figure_calls:
        m = c.metrics
        st = _status(m)
        head = (f'<h3 id="{_anchor(m)}">{_e(m.scenario)} · call {m.call_index} '
                f'<span class="{st}">&nbsp;{st}&nbsp;</span> <span class="muted">{_e(m.call_sid or "")}</span></h3>')
        if id(c) not in with_figures:
            why = (c.result.error if c.result is not None else None) or m.error or "the call never started"
            body.append(f'<section class="call">{head}<p class="muted">No audio: {_e(why)}</p></section>')
            continue
        body.append(f'<section class="call">{head}{_img(timeline_figure(c), f"timeline of {m.scenario} call {m.call_index}")}'
                    f'{_img(waveform_figure(c), f"waveform heard in {m.scenario} call {m.call_index}")}</section>')
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{_e(title)}</title>"
           f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path.write_text(doc, encoding="utf-8")
    return path


__all__ = ["CallArtifacts", "write_reports", "call_json", "failure_text", "speech_spans", "heard_spans",
           "envelope", "latency_histogram", "timeline_figure", "waveform_figure", "MAX_CALL_FIGURES"]
