"""``report.json``: the measured records as JSON, rounded to what the clock can tell, with its schema.

A figure's unit is read from its key, as the report names them: ``*_ms`` (and the
statistics under an ``*_ms`` key, ``turn_latency_ms.p95``) is rounded to 0.1 ms —
the caller's clock resolves frames to well under that, but a CI user diffing two
reports needs the stable digits, not float noise; ``*_db`` to 0.1 dB; ``*_s`` and
``seconds`` to 1 ms (0.001 s). An expectation's ``measured`` and ``limit`` take the
unit of its ``name`` (``turn_latency_p95_ms``). Other floats (ratios, VAD scores
and thresholds, drift in frames) keep four significant digits. Integers —
nanosecond timestamps, counts, byte totals — are never touched. NaN and ±inf
become ``null``: JSON has no spelling for them and a reader must not take a
made-up number for a measured one.

The document's shape is described by ``report.schema.json`` (JSON Schema
draft 2020-12), shipped beside this module and copied into every report folder,
which ``report.json`` names in ``"$schema"``.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import asdict, is_dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from .measurements import CallMetrics

if TYPE_CHECKING:
    from .report import CallArtifacts

#: the schema's file name, in this package and in a report folder
SCHEMA_NAME = "report.schema.json"

_UNIT_DIGITS = {"ms": 1, "db": 1, "s": 3}
_UNIT = re.compile(r"(?:^|[_.])(ms|db|s|seconds)(?:[_.]|$)")
#: keys that are a statistic of their parent's figure (``turn_latency_ms.p95``): they take its unit
_STAT = re.compile(r"^(?:p\d+|max|min|mean|median|avg)$")
#: keys that carry the unit of the expectation named beside them
_JUDGED = frozenset({"measured", "limit", "failures"})
#: expectations whose measured value has a unit their name does not spell
_NAMED_UNITS = {"no_underruns": "ms"}


def schema_text() -> str:
    """The report.json schema, as shipped in the package."""
    return resources.files(__package__).joinpath(SCHEMA_NAME).read_text(encoding="utf-8")


def schema() -> dict[str, Any]:
    """The report.json schema as a dict (for ``jsonschema``)."""
    return orjson.loads(schema_text())


def clean(x: Any) -> Any:
    """JSON-safe copy: NaN/±inf → None, numpy → Python, non-str keys → str, dataclasses → dicts,
    datetimes → ISO 8601."""
    if isinstance(x, bool) or x is None or isinstance(x, (str, int)):
        return x
    if isinstance(x, float):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return clean(x.tolist())
    if isinstance(x, np.generic):
        return clean(x.item())
    if isinstance(x, Path):
        return x.as_posix()
    if isinstance(x, (_dt.datetime, _dt.date)):
        return x.isoformat()
    if isinstance(x, (set, frozenset)):
        return [clean(v) for v in sorted(x, key=repr)]
    if hasattr(x, "to_json"):
        return clean(x.to_json())
    if is_dataclass(x) and not isinstance(x, type):
        return clean(asdict(x))
    return str(x)


def unit_of(key: str) -> str | None:
    """``"ms"``, ``"db"``, ``"s"`` or None, from a report key (``lateness_ms_p99`` → ms, ``snr_db`` → db)."""
    if key in _NAMED_UNITS:
        return _NAMED_UNITS[key]
    m = _UNIT.search(key.lower())
    if m is None:
        return None
    return "s" if m.group(1) == "seconds" else m.group(1)


def _round(v: float, unit: str | None) -> float:
    if unit in _UNIT_DIGITS:
        return round(v, _UNIT_DIGITS[unit]) + 0.0  # + 0.0: no "-0.0" in the report
    if v == 0:
        return 0.0
    return round(v, max(0, 3 - math.floor(math.log10(abs(v))))) + 0.0


def rounded(x: Any, unit: str | None = None) -> Any:
    """A cleaned document with every float rounded for its unit (module docstring); ints as they are."""
    if isinstance(x, float):
        return _round(x, unit) if math.isfinite(x) else None
    if isinstance(x, list):
        return [rounded(v, unit) for v in x]
    if not isinstance(x, dict):
        return x
    name = x.get("name")
    judged_unit = unit_of(name) if isinstance(name, str) else unit
    out = {}
    for k, v in x.items():
        own = unit_of(k)
        if own is None and (_STAT.match(k) or k in _JUDGED):
            own = judged_unit if k in _JUDGED else unit
        out[k] = rounded(v, own)
    return out


def call_json(m: CallMetrics) -> dict[str, Any]:
    """One call as report.json carries it: every CallMetrics field (design.md keys included), rounded."""
    d = m.to_json()
    d["expectations"] = [e.to_json() if hasattr(e, "to_json") else e for e in m.expectations]
    return rounded(clean(d))


def report_doc(calls: list[CallArtifacts], summary: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The whole report.json document."""
    return {"$schema": f"./{SCHEMA_NAME}", "summary": rounded(clean(summary)),
            "calls": [call_json(c.metrics) for c in calls], "meta": rounded(clean(meta))}


def write_json(path: Path, calls: list[CallArtifacts], summary: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write report.json and, beside it, the schema it names (so the report folder alone validates)."""
    doc = report_doc(calls, summary, meta)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str))
    (path.parent / SCHEMA_NAME).write_text(schema_text(), encoding="utf-8")
    return path


__all__ = ["SCHEMA_NAME", "call_json", "clean", "report_doc", "rounded", "schema", "schema_text", "unit_of",
           "write_json"]
