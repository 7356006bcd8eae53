"""``junit.xml``, and the per-call verdict text it shares with the HTML report.

One ``<testcase>`` per call: a failed call carries a ``<failure>`` with its failed expectations, an
errored one an ``<error>``, a call whose scenario does not apply to the bridge a ``<skipped
message=…>`` with the reason — so a CI system shows a skip as a skip, never as a pass.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .measurements import CallMetrics

if TYPE_CHECKING:
    from .report import CallArtifacts

STATUSES = ("passed", "failed", "skipped", "error")


_XML_BAD = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(s: Any, limit: int | None = None) -> str:
    """Text XML 1.0 can carry (ElementTree writes control characters unparseably)."""
    s = _XML_BAD.sub("\ufffd", str(s))
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def _exp(e: Any) -> dict[str, Any]:
    return e.to_json() if hasattr(e, "to_json") else dict(e)


def _expectations(m: CallMetrics, status: str) -> list[dict[str, Any]]:
    return [e for e in map(_exp, m.expectations) if e.get("status") == status]


def _status(m: CallMetrics) -> str:
    return m.status if m.status in STATUSES else "error"


def _by_scenario(calls: Iterable[CallArtifacts]) -> dict[str, list[CallArtifacts]]:
    out: dict[str, list[CallArtifacts]] = {}
    for c in calls:
        out.setdefault(c.metrics.scenario, []).append(c)
    return out


def failure_text(m: CallMetrics) -> tuple[str, str]:
    """(one-line message, full text) of a failed or broken call."""
    if _status(m) == "error":
        msg = m.error or f"the call ended in error ({m.end_reason or 'no reason recorded'})"
        return msg, msg
    failed = _expectations(m, "failed")
    if not failed:
        return "the call failed (no failed expectation recorded)", ""
    msg = "; ".join(str(e.get("message") or e.get("name")) for e in failed)
    body = "\n".join(f"{e.get('name')}: {e.get('message')} (measured {e.get('measured')!r}, limit {e.get('limit')!r})"
                     for e in failed)
    return msg, body


def _write_junit(path: Path, calls: list[CallArtifacts], title: str) -> Path:
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
    root = ET.Element("testsuites", name=_x(title))
    totals: Counter[str] = Counter()
    total_time = 0.0
    for scenario, group in _by_scenario(calls).items():
        suite = ET.SubElement(root, "testsuite", name=_x(scenario), timestamp=now)
        counts: Counter[str] = Counter()
        suite_time = 0.0
        for c in group:
            m = c.metrics
            secs = max(0.0, float(m.duration_ms or 0.0)) / 1000 if math.isfinite(m.duration_ms or 0.0) else 0.0
            suite_time += secs
            case = ET.SubElement(suite, "testcase", classname=_x(f"callsim.{scenario}"),
                                 name=f"call {m.call_index}", time=f"{secs:.3f}")
            status = _status(m)
            if status == "skipped":
                ET.SubElement(case, "skipped", message=_x(m.skip_reason or "the scenario does not apply", 2000))
                counts["skipped"] += 1
            elif status != "passed":
                msg, body = failure_text(m)
                el = ET.SubElement(case, "error" if status == "error" else "failure",
                                   message=_x(msg, 2000), type="error" if status == "error" else "expectation")
                el.text = _x(body)
                counts["errors" if status == "error" else "failures"] += 1
            out_lines = [f"skipped expectation {e.get('name')}: {e.get('message')}"
                         for e in _expectations(m, "skipped")]
            if out_lines:
                ET.SubElement(case, "system-out").text = _x("\n".join(out_lines))
        counts["tests"] = len(group)
        suite.set("tests", str(len(group)))
        suite.set("failures", str(counts["failures"]))
        suite.set("errors", str(counts["errors"]))
        suite.set("skipped", str(counts["skipped"]))
        suite.set("time", f"{suite_time:.3f}")
        totals.update(counts)
        total_time += suite_time
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", str(totals["errors"]))
    root.set("skipped", str(totals["skipped"]))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
