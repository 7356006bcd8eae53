"""The reports of a run: ``report.json``, ``junit.xml`` and a self-contained ``report.html``.

Everything here is written *from* the measured records (:mod:`.measurements`)
and what the caller recorded (:class:`~..caller.call_result.CallResult`); nothing is
measured here. Layout of ``out_dir``::

    report.json                  {"summary", "calls", "meta"} — keys per design.md (.report_json)
    report.schema.json           its JSON Schema (draft 2020-12), the one shipped in this package
    junit.xml                    one <testsuite> per scenario, one <testcase> per call (.junit)
    report.html                  one file: verdict first, figures and audio inline, no JS (.report_html)
    calls/<scenario>-<i>/        heard.wav, heard.ulaw, timeline.json (recording.write_call)

The figures are drawn by :mod:`.charts`.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from ..caller.call_result import CallResult
from .junit import _write_junit, failure_text
from .measurements import CallMetrics
from .recording import write_call
from .report_html import write_html
from .report_json import call_json
from .report_json import write_json as _write_json

#: per-call figures (timeline + waveform) and audio players are drawn for this many calls at most
MAX_CALL_FIGURES = 50


@dataclass
class CallArtifacts:
    """What the report needs from each call besides the metrics."""

    metrics: CallMetrics
    result: CallResult | None  # for timelines and waveforms (None if the call never started)
    mock_snapshot: dict[str, Any] | None = None  # the mock session's snapshot: replies, tools, truncates, faults


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


# ===================================================================== report.html


def _write_html(path: Path, calls: list[CallArtifacts], summary: dict[str, Any], title: str,
                meta: dict[str, Any]) -> Path:
    return write_html(path, calls, summary, title, meta, figure_limit=MAX_CALL_FIGURES)


__all__ = ["CallArtifacts", "write_reports", "call_json", "failure_text", "MAX_CALL_FIGURES"]
