"""``report.html``: one self-contained page a person opens from a CI artifact.

Read top-down, the page answers what a CI user asks in order: did it pass, and
if not which call failed which expectation (the verdict banner, first in the
body, linking to each failed call); what ran (command, when, how long, target,
versions, the scenarios); the figures; then each call: every expectation with
what was measured against its limit, the bridge's profile, the timeline, and a
player of what the caller heard.

One file, no script, nothing fetched: CSS inline, figures as PNG ``data:``
URIs, the caller's audio as a WAV ``data:`` URI (the very ``heard.wav`` of the
call's folder), so ``report.html`` kept alone still shows and plays. Audio is
embedded up to :data:`MAX_EMBEDDED_AUDIO_BYTES` for the page; past it the
player points at the call's ``heard.wav`` next to the report.

Nothing is measured here: every number comes from the records
(:mod:`.measurements`), the caller's recordings, or the mock's snapshot.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import platform
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from . import charts
from .bridge_profile import profile_call
from .expectation_text import DASH, limit_text, measured_text, value_text
from .junit import STATUSES, _by_scenario, _expectations, _status, _x
from .measurements import CallMetrics

if TYPE_CHECKING:
    from .report import CallArtifacts

#: WAV bytes embedded in one page (≈ 16 KB per second of call); later calls link to their heard.wav
MAX_EMBEDDED_AUDIO_BYTES = 24 * 1024 * 1024

#: meta keys that are bookkeeping for report.json readers, not for a person
_INTERNAL_META = {"title", "call_figures_limit", "calls_with_figures", "bridge_profile", "scenarios", "generator",
                  "when", "started_at", "seconds", "command", "target", "mock_in_loop"}

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _e(s: Any) -> str:
    return html.escape(_x(s), quote=True)


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    f = charts.number(v)
    return DASH if f is None else f"{f:.{digits}f}"


def _img(data: bytes | None, alt: str, cls: str = "") -> str:
    if not data:
        return f'<p class="muted">{_e(alt)}: nothing to plot.</p>'
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img class="{cls}" alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def anchor(m: CallMetrics) -> str:
    """The id of a call's section."""
    return "call-" + _UNSAFE.sub("_", f"{m.scenario}-{m.call_index}")


def _call_name(m: CallMetrics) -> str:
    return f"{m.scenario} · call {m.call_index}"


def _badge(status: str) -> str:
    return f'<span class="badge {status}">{status}</span>'


# ===================================================================== verdict banner


def _banner(calls: list[CallArtifacts], with_section: set[int]) -> str:
    """Failures first: each failed or broken call, its failed expectations, a link to its section."""
    bad = [c for c in calls if _status(c.metrics) in ("failed", "error")]
    counts = Counter(_status(c.metrics) for c in calls)
    skipped = f"; {counts['skipped']} skipped" if counts["skipped"] else ""
    if not calls:
        return '<div id="verdict" class="banner neutral"><p class="verdict">No call ran.</p></div>'
    if not bad:
        return (f'<div id="verdict" class="banner ok"><p class="verdict">✓ All {counts["passed"]} call(s) '
                f"passed{_e(skipped)}.</p></div>")
    items = []
    for c in bad:
        m = c.metrics
        name = _e(_call_name(m))
        if id(c) in with_section:
            name = f'<a href="#{anchor(m)}">{name}</a>'
        st = _status(m)
        if st == "error":
            detail = f"<li>{_e(m.error or 'the call ended in an error')}</li>"
        else:
            detail = "".join(
                f"<li><b>{_e(e.get('name'))}</b>: measured {_e(measured_text(str(e.get('name')), e.get('measured')))}"
                f", limit {_e(limit_text(str(e.get('name')), e.get('limit')))}"
                f'<div class="why">{_e(e.get("message") or "")}</div></li>'
                for e in _expectations(m, "failed")) or "<li>no failed expectation recorded</li>"
        items.append(f"<li>{name} {_badge(st)}<ul>{detail}</ul></li>")
    errors = f" ({counts['error']} with an error)" if counts["error"] else ""
    head = f"✗ {len(bad)} of {len(calls)} call(s) failed{errors}{skipped}"
    return (f'<div id="verdict" class="banner bad" role="alert"><p class="verdict">{_e(head)}</p>'
            f'<ul class="failures">{"".join(items)}</ul></div>')


# ===================================================================== header


def _when(meta: dict[str, Any]) -> str:
    raw = meta.get("started_at") or meta.get("when")
    if not raw:
        return DASH
    try:
        t = _dt.datetime.fromisoformat(str(raw))
    except ValueError:
        return str(raw)
    return t.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if t.tzinfo else t.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: Any) -> str:
    s = charts.number(seconds)
    if s is None:
        return DASH
    if s < 60:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {s % 60:.0f} s"


def _openai(meta: dict[str, Any]) -> str | None:
    mock = meta.get("mock_in_loop")
    if mock is True:
        return "the mock OpenAI Realtime server (its records are in each call)"
    if mock is False:
        return "not the mock: figures that need its records are skipped"
    return None


def command_text(command: str) -> str:
    """The command as typed: ``callsim demo …``, not the venv's path to the script that ran it."""
    prog, sep, rest = str(command).partition(" ")
    if "/" in prog or "\\" in prog:
        prog = re.split(r"[/\\]", prog)[-1]
        prog = "callsim" if prog in ("__main__.py", "cli.py") else prog
    return prog + sep + rest


def _header(title: str, meta: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    if meta.get("command"):
        rows.append(("command", f"<code>{_e(command_text(meta['command']))}</code>"))
    rows.append(("started", _e(_when(meta))))
    if "seconds" in meta:
        rows.append(("took", _e(_duration(meta.get("seconds")))))
    if meta.get("target"):
        rows.append(("target", _e(meta["target"])))
    if (o := _openai(meta)) is not None:
        rows.append(("OpenAI", _e(o)))
    gen = str(meta.get("generator") or "callsim")
    rows.append(("versions", _e(f"{gen}, Python {platform.python_version()} ({platform.system()} "
                                 f"{platform.machine()})")))
    for k, v in meta.items():  # what a caller of write_reports added, written for a person
        if k not in _INTERNAL_META:
            rows.append((_e(str(k).replace("_", " ")), _e(value_text(v))))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<h1>{_e(title)}</h1>\n<table class="meta">{body}</table>'


def _scenarios_table(scenarios: Any) -> str:
    if not isinstance(scenarios, list) or not scenarios:
        return ""
    rows = []
    for s in scenarios:
        if not isinstance(s, dict):
            continue
        st = str(s.get("status") or ("passed" if s.get("passed") else "failed"))
        st = st if st in STATUSES else "error"
        why = [str(s["skip_reason"])] if s.get("skip_reason") else []
        why += [str(n) for n in s.get("notes") or []]
        rows.append(f"<tr><td><b>{_e(s.get('name', DASH))}</b></td><td>{_badge(st)}</td>"
                    f"<td>{_e(s.get('description') or DASH)}</td>"
                    f"<td>{'<br>'.join(_e(w) for w in why) or DASH}</td></tr>")
    return ('<h2>Scenarios</h2><table class="scenarios"><tr><th>scenario</th><th>result</th><th>description</th>'
            "<th>skip reason / notes</th></tr>" + "".join(rows) + "</table>")


# ===================================================================== summary


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
             f'<span class="badge passed">passed {_e(_fmt(passed))}</span>'
             f'<span class="badge failed">failed {_e(_fmt(failed))}</span>']
    skipped = summary.get("skipped", counts["skipped"])
    if skipped:
        parts.append(f'<span class="badge skipped">skipped {_e(_fmt(skipped))}</span>')
    errors = summary.get("errors", counts["error"])
    if errors:
        parts.append(f'<span class="badge error">errors {_e(_fmt(errors))}</span>')
    parts.append("</p>")
    rows = []
    for key, label, unit in _SUMMARY_METRICS:
        st = summary.get(key) or {}
        if not isinstance(st, dict):
            st = {}
        cells = "".join(f'<td class="n">{_e(_fmt(st.get(q)))}</td>' for q in ("p50", "p95", "p99", "max"))
        rows.append(f"<tr><td>{_e(label)}</td><td>{unit}</td>{cells}</tr>")
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


# ===================================================================== histograms

# metric: (title, values of a call, the expectations that limit it)
_HISTOGRAMS: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
    ("turn latency", lambda m: [t.latency_ms for t in m.turns], ("turn_latency_p95_ms",)),
    ("overhead: bridge + transport", lambda m: [t.overhead_ms for t in m.turns], ("overhead_p95_ms",)),
    ("barge-in → clear", lambda m: [b.clear_ms for b in m.barge_ins], ("barge_in_clear_max_ms",)),
    ("talk-over after barge-in", lambda m: [b.talk_over_ms for b in m.barge_ins], ("talk_over_max_ms",)),
    ("truncate error", lambda m: [b.truncate_error_ms for b in m.barge_ins], ("truncate_error_max_ms",)),
)


def _limits(calls: list[CallArtifacts], names: tuple[str, ...]) -> list[charts.Limit]:
    """Each distinct limit the scenarios set on this metric, with the scenarios that set it."""
    by_value: dict[tuple[str, float], list[str]] = {}
    for c in calls:
        for e in c.metrics.expectations:
            d = e.to_json() if hasattr(e, "to_json") else e
            if d.get("name") in names and (v := charts.number(d.get("limit"))) is not None:
                scen = by_value.setdefault((str(d["name"]), v), [])
                if c.metrics.scenario not in scen:
                    scen.append(c.metrics.scenario)
    out = []
    for (name, v), scen in sorted(by_value.items(), key=lambda kv: kv[0][1]):
        who = ", ".join(scen[:3]) + (f" +{len(scen) - 3}" if len(scen) > 3 else "")
        out.append(charts.Limit(v, f"{limit_text(name, v)} ({who})"))
    return out


def _histograms_html(calls: list[CallArtifacts]) -> str:
    figs = []
    for title, values_of, names in _HISTOGRAMS:
        vals = [v for c in calls for x in values_of(c.metrics) if (v := charts.number(x)) is not None]
        png = charts.metric_histogram(vals, title, "ms", _limits(calls, names))
        if png is not None:
            figs.append(_img(png, f"histogram of {title}", "hist"))
    if not figs:
        return '<p class="muted">Histograms: no turn or barge-in was measured, nothing to plot.</p>'
    return '<div class="hists">' + "".join(figs) + "</div>"


# ===================================================================== results table


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
    if charts.number(c.snr_db) is not None:
        bits.append(f"SNR {_fmt(c.snr_db)} dB")
    text = ", ".join(bits) or "checked"
    return f'<span title="{_e(c.note)}">{_e(text)}</span>' if c.note else _e(text)


def _problems_cell(m: CallMetrics) -> str:
    items = []
    st = _status(m)
    if st == "skipped":
        items.append(f"<li><b>skipped:</b> {_e(m.skip_reason or 'the scenario does not apply')}</li>")
    if st == "error" or (m.error and st != "passed"):
        items.append(f"<li><b>error:</b> {_e(m.error or 'the call ended in an error')}</li>")
    for e in _expectations(m, "failed"):
        items.append(f"<li>{_e(e.get('name'))}</li>")
    skipped = _expectations(m, "skipped")
    if skipped and st != "error":
        items.append(f'<li class="muted">{len(skipped)} skipped</li>')
    return f'<ul class="msg">{"".join(items)}</ul>' if items else ""


def _files_cell(m: CallMetrics) -> str:
    links = [f'<a href="{_e(p)}">{_e(k)}</a>' for k, p in m.artifacts.items() if k != "dir"]
    return " ".join(links) if links else DASH


def _results_html(calls: list[CallArtifacts], with_section: set[int]) -> str:
    head = ("<tr><th>call</th><th>result</th><th>duration s</th><th>turn latency ms</th><th>overhead ms</th>"
            "<th>barge-in clear ms</th><th>truncate error ms</th><th>codec</th><th>underrun ms</th>"
            "<th>heard s</th><th>ended</th><th>problems</th><th>files</th></tr>")
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
            if id(c) in with_section:
                name = f'<a href="#{anchor(m)}">{name}</a>'
            rows.append(
                f"<tr><td>{name}</td><td>{_badge(st)}</td>"
                f'<td class="n">{_e(_fmt((charts.number(m.duration_ms) or 0) / 1000, 2))}</td>'
                f'<td class="n">{_e(_join(t.latency_ms for t in m.turns))}</td>'
                f'<td class="n">{_e(_join(t.overhead_ms for t in m.turns))}</td>'
                f'<td class="n">{_e(_join(b.clear_ms for b in m.barge_ins))}</td>'
                f'<td class="n">{_e(_join(b.truncate_error_ms for b in m.barge_ins))}</td>'
                f"<td>{_codec_cell(m)}</td>"
                f'<td class="n">{_e(_fmt(m.underrun_ms, 0))}</td>'
                f'<td class="n">{_e(_fmt((charts.number(m.heard_ms) or 0) / 1000, 2))}</td>'
                f"<td>{_e((m.end_reason or DASH).replace('_', ' '))}</td>"
                f"<td>{_problems_cell(m)}</td><td>{_files_cell(m)}</td></tr>")
        out.append(f"<table class=\"results\">{head}{''.join(rows)}</table>")
    return "\n".join(out)


# ===================================================================== one call


_ORDER = {"failed": 0, "passed": 1, "skipped": 2}


def _expectations_table(m: CallMetrics) -> str:
    exps = sorted((e.to_json() if hasattr(e, "to_json") else dict(e) for e in m.expectations),
                  key=lambda e: _ORDER.get(str(e.get("status")), 3))
    if not exps:
        return '<p class="muted">No expectation was judged for this call.</p>'
    rows = []
    for e in exps:
        name, st = str(e.get("name")), str(e.get("status"))
        rows.append(f'<tr class="{_e(st)}"><td><code>{_e(name)}</code></td><td>{_badge(_e(st))}</td>'
                    f'<td class="v">{_e(measured_text(name, e.get("measured")))}</td>'
                    f'<td class="v">{_e(limit_text(name, e.get("limit")))}</td>'
                    f"<td>{_e(e.get('message') or '')}</td></tr>")
    return ('<table class="expect"><tr><th>expectation</th><th>result</th><th>measured</th><th>limit</th>'
            "<th>detail</th></tr>" + "".join(rows) + "</table>")


def _profile_html(c: CallArtifacts) -> str:
    core = c.result.core if c.result is not None else None
    if core is None:
        return ""
    lines = profile_call(c.mock_snapshot, core, c.metrics.barge_ins).lines()
    return ('<details class="profile" open><summary>bridge profile of this call</summary><pre>'
            + "\n".join(_e(x) for x in lines) + "</pre></details>")


class _AudioBudget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def player(self, out_dir: Path, m: CallMetrics) -> str:
        rel = m.artifacts.get("heard.wav")
        if not rel:
            return ""
        wav = out_dir / rel
        size = wav.stat().st_size
        seconds = max(size - 44, 0) / (2 * 8000)
        if size <= self.left:
            self.left -= size
            src = "data:audio/wav;base64," + base64.b64encode(wav.read_bytes()).decode("ascii")
            where = "embedded in this page"
        else:
            src = _e(rel)
            where = f"linked: {_e(rel)} next to this report (the page's audio budget is spent)"
        return (f'<div class="player"><span>what the caller heard ({seconds:.1f} s; 0 s is the stream start, '
                f'as on the timeline)</span><audio controls preload="metadata" src="{src}"></audio>'
                f'<span class="muted">{where}</span></div>')


def _call_section(c: CallArtifacts, out_dir: Path, figures: bool, audio: _AudioBudget, profile: bool = True) -> str:
    m = c.metrics
    st = _status(m)
    facts = [f"{_fmt((charts.number(m.duration_ms) or 0) / 1000, 1)} s"]
    if m.end_reason:
        facts.append(f"ended: {m.end_reason.replace('_', ' ')}")
    if m.call_sid:
        facts.append(m.call_sid)
    head = (f'<h3>{_e(_call_name(m))} {_badge(st)} '
            f'<span class="muted">{_e(" · ".join(facts))}</span></h3>')
    parts = [head]
    if st == "skipped":
        parts.append(f'<p class="muted">Skipped: {_e(m.skip_reason or "the scenario does not apply")}</p>')
    if m.error:
        parts.append(f'<p class="errline"><b>error:</b> {_e(m.error)}</p>')
    parts.append(_expectations_table(m))
    has_stream = c.result is not None and c.result.core is not None and c.result.core.t0_ns is not None
    if not has_stream:
        why = (c.result.error if c.result is not None else None) or m.error or "the call never started"
        parts.append(f'<p class="muted">No audio: {_e(why)}</p>')
        return f'<section class="call {st}" id="{anchor(m)}">' + "".join(parts) + "</section>"
    if profile:
        parts.append(_profile_html(c))
    if figures:
        parts.append(audio.player(out_dir, m))
        parts.append(_img(charts.timeline_figure(m, c.result, c.mock_snapshot), f"timeline of {_call_name(m)}",
                          "wide"))
        parts.append(_img(charts.waveform_figure(c.result), f"waveform heard in {_call_name(m)}", "wide"))
    else:
        parts.append(f'<p class="muted">Figures and player are drawn for the first calls only; this call\'s '
                     f"audio and timeline are in {_files_cell(m)}.</p>")
    return f'<section class="call {st}" id="{anchor(m)}">' + "".join(parts) + "</section>"


# ===================================================================== page


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px auto;max-width:1160px;
color:#1d1d1f;padding:0 16px}
h1{font-size:22px;margin:18px 0 6px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d8d8d8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.meta th{width:90px}table.meta td{word-break:break-all}
table.expect{width:100%}table.expect td.v{text-align:right;font-variant-numeric:tabular-nums;width:17%}
table.expect td:first-child{width:190px}table.results td:first-child{white-space:nowrap}
.badge{display:inline-block;border-radius:4px;padding:0 6px;font-size:12px;font-weight:600;vertical-align:1px}
.badge.passed{background:#dff3e3;color:#14612a}.badge.failed{background:#fbe0e0;color:#9b1c1c}
.badge.error{background:#fdebd0;color:#8a4b00}.badge.skipped{background:#eceef1;color:#4b5563}
tr.failed td{background:#fff4f4}tr.skipped td{color:#6b7280}
.banner{border-radius:6px;padding:10px 16px;margin:0 0 8px;border:1px solid}
.banner.bad{background:#fdecec;border-color:#e5a0a0;color:#5c1010}
.banner.ok{background:#e6f6ea;border-color:#9fd3ad;color:#14612a}
.banner.neutral{background:#f3f4f6;border-color:#d1d5db}
.banner .verdict{font-size:18px;font-weight:700;margin:0}
.banner ul.failures{margin:6px 0 0;padding-left:20px}.banner ul ul{padding-left:18px;margin:2px 0 6px}
.banner a{color:#9b1c1c;font-weight:600}.why{color:#6b4040;font-size:13px}
.muted{color:#6b7280}.errline{color:#8a4b00}
.totals span{margin-right:12px;font-size:15px}
ul.msg{margin:0;padding-left:16px}
section.call{margin:14px 0 26px;padding-top:4px;border-top:3px solid #e5e7eb}
section.call.failed,section.call.error{border-top-color:#e5a0a0}
details.profile pre{margin:4px 0 8px;font-size:12px;background:#f8f9fa;padding:6px 10px;overflow-x:auto}
details.profile summary{cursor:pointer;color:#374151;font-size:13px}
.player{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin:6px 0;font-size:13px}
.player audio{width:420px;max-width:100%}
img{display:block;max-width:100%;height:auto}img.wide{width:100%}
.hists{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:8px 16px}
code{font-size:12px}
"""


def write_html(path: Path, calls: list[CallArtifacts], summary: dict[str, Any], title: str,
               meta: dict[str, Any], *, figure_limit: int) -> Path:
    """Write the page; per-call figures and players for the first ``figure_limit`` calls.

    Each failed or errored call past the limit still gets its section (the banner links to it).
    """
    out_dir = path.parent
    figured = {id(c) for c in calls[:figure_limit]}
    with_section = figured | {id(c) for c in calls if _status(c.metrics) in ("failed", "error")}
    profile = meta.get("bridge_profile") if isinstance(meta.get("bridge_profile"), dict) else None
    body = [_banner(calls, with_section), _header(title, meta), _scenarios_table(meta.get("scenarios")),
            "<h2>Summary</h2>", _summary_html(summary, calls)]
    if profile is not None:
        lines = "\n".join(_e(x) for x in profile.get("lines", []))
        body += ["<h2>Bridge profile</h2>", f'<pre class="profile">{lines}</pre>']
    body += ["<h2>Distributions</h2>", _histograms_html(calls),
             "<h2>Results</h2>", _results_html(calls, with_section), "<h2>Calls</h2>"]
    if len(calls) > figure_limit:
        body.append(f'<p class="muted">Figures and players are drawn for the first {figure_limit} of {len(calls)} '
                    "calls; every call's numbers are in the tables above and in report.json, its audio and "
                    "timeline under calls/.</p>")
    audio = _AudioBudget(MAX_EMBEDDED_AUDIO_BYTES)
    # a dialled call's caller core carried callsim's own frames, not a bridge's: no profile to draw
    profiles = not isinstance(meta.get("dial"), dict)
    for c in calls:
        if id(c) in with_section:
            body.append(_call_section(c, out_dir, id(c) in figured, audio, profiles))
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{_e(title)}</title>"
           f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path.write_text(doc, encoding="utf-8")
    return path
