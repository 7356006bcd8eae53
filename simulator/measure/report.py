"""The reports of a run: ``report.json``, ``junit.xml`` and a self-contained ``report.html``.

Everything here is written *from* the measured records (:mod:`.measurements`)
and what the caller recorded (:class:`~..caller.call_result.CallResult`); nothing is
measured here. Layout of ``out_dir``::

    report.json                  {"summary", "calls", "meta"} — keys per design.md
    junit.xml                    one <testsuite> per scenario, one <testcase> per call (.junit)
    report.html                  one file: verdict first, figures and audio inline, no JS (.report_html)
    calls/<scenario>-<i>/        heard.wav, heard.ulaw, timeline.json (recording.write_call)

The figures are drawn by :mod:`.charts`.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..caller.call_result import CallResult
from .junit import _write_junit, failure_text
from .measurements import CallMetrics
from .recording import write_call
from .report_html import write_html

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
        "junit": _write_junit(out_dir / "junit.xml", calls, title),
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


# ===================================================================== report.json


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN/±inf → None, numpy → Python, non-str keys → str, dataclasses → dicts."""
    if isinstance(x, bool) or x is None or isinstance(x, (str, int)):
        return x
    if isinstance(x, float):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, np.generic):
        return _clean(x.item())
    if isinstance(x, Path):
        return x.as_posix()
    if isinstance(x, (set, frozenset)):
        return [_clean(v) for v in sorted(x, key=repr)]
    if hasattr(x, "to_json"):
        return _clean(x.to_json())
    if is_dataclass(x) and not isinstance(x, type):
        return _clean(asdict(x))
    return str(x)


def call_json(m: CallMetrics) -> dict[str, Any]:
    """One call as report.json carries it: every CallMetrics field (design.md keys included)."""
    d = m.to_json()
    d["expectations"] = [e.to_json() if hasattr(e, "to_json") else e for e in m.expectations]
    return _clean(d)


def _write_json(path: Path, calls: list[CallArtifacts], summary: dict[str, Any], meta: dict[str, Any]) -> Path:
    doc = {"summary": _clean(summary), "calls": [call_json(c.metrics) for c in calls], "meta": _clean(meta)}
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY, default=str))
    return path


# ===================================================================== report.html


def _write_html(path: Path, calls: list[CallArtifacts], summary: dict[str, Any], title: str,
                meta: dict[str, Any]) -> Path:
    return write_html(path, calls, summary, title, meta, figure_limit=MAX_CALL_FIGURES)


__all__ = ["CallArtifacts", "write_reports", "call_json", "failure_text", "MAX_CALL_FIGURES"]
