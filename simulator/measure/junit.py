"""``junit.xml``, and the per-call verdict text it shares with the HTML report.

The shape is the one CI test reporters read (GitLab ``artifacts:reports:junit``, Jenkins'
JUnit plugin, GitHub test-report actions; Ant's ``junit.xsd``)::

    <testsuites name tests failures errors skipped time>
      <testsuite name=SCENARIO timestamp=START (UTC) time=ITS DURATION tests failures errors skipped>
        <testcase classname="callsim.SCENARIO" name="SCENARIO[call N]" time=CALL DURATION>
          <properties><property name="turn_latency_ms.p95" value="812.4"/>…</properties>
          <failure message="SCENARIO[call N]: EXPECTATION — measured X, limit Y">one line each</failure>
          | <error message=…> | <skipped message=…/>
          <system-out>every expectation's verdict, one line each; the recording's path</system-out>

A call that failed an expectation carries a ``<failure>``, one that errored an ``<error>``, one
whose scenario does not apply to the bridge a ``<skipped>`` with the reason — a skip shown as a
skip, never as a pass. A call whose expectations were *all* skipped (nothing was judged, e.g.
every one needs the mock and the mock was not in the loop) is a ``<skipped>`` too, naming them;
a call that passed with some expectations skipped is a pass, and the skipped ones are listed in
``<system-out>`` (the text GitLab and Jenkins show under a test) and in the property
``skipped_expectations``. Figures that were not measured are left out of the properties; a
failed expectation that was not measured says "not measured", and its message says why.

``timestamp`` follows Ant's ``junit.xsd`` (ISO 8601 without a UTC offset): it is in UTC.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .expectation_text import comparison
from .measurements import CallMetrics
from .metrics import percentiles
from .report_json import unit_of

if TYPE_CHECKING:
    from .report import CallArtifacts

STATUSES = ("passed", "failed", "skipped", "error")
_UNIT_TEXT = {"ms": " ms", "db": " dB", "s": " s"}


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


# ===================================================================== verdict text


def case_name(m: CallMetrics) -> str:
    """``scenario[call N]``: a call as CI lists it (the form pytest gives parametrized tests)."""
    return f"{m.scenario}[call {m.call_index}]"


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = float(v)  # numpy scalars
        except (TypeError, ValueError):
            return None
    f = float(v)
    return f if math.isfinite(f) else None


def _number(v: float, unit: str | None) -> str:
    """0.1 ms / 0.1 dB / 1 ms in seconds; a whole number without decimals; other figures 4 digits."""
    if unit in ("ms", "db"):
        text = f"{v:.1f}"
    elif unit == "s":
        text = f"{v:.3f}"
    else:
        text = f"{v:.4g}"
    return text[:-2] if text.endswith(".0") else text


def value_text(name: str, v: Any, *, limit: bool = False) -> str:
    """A measured value or a limit of expectation ``name`` for a person: ``812.4 ms``, ``hangup``,
    ``"weather", "Paris"``; ``not measured`` for a value that was not."""
    if v is None:
        return "not set" if limit else "not measured"
    if isinstance(v, bool):
        if limit:
            return ("none" if name.startswith("no_") else "required") if v else "off"
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return ", ".join(f'"{x}"' if isinstance(x, str) else value_text(name, x) for x in v) or "none"
    if isinstance(v, dict):
        return ", ".join(f"{k} {value_text(name, x)}" for k, x in v.items()) or "none"
    f = _finite(v)
    if f is None:
        return "not measured"
    unit = unit_of(name)
    text = _number(f, unit) + _UNIT_TEXT.get(unit or "", "")
    cmp = comparison(name) if limit else ""
    return f"{cmp} {text}" if cmp else text  # a limit says which way it bounds: ≤ 600 ms, ≥ 30 dB


def _verdict(e: dict[str, Any], why: bool) -> str:
    """``expectation — measured X, limit Y`` (+ `` — what to fix``), or ``expectation — skipped: why``."""
    name = str(e.get("name"))
    if e.get("status") == "skipped":
        return f"{name} — skipped: {e.get('message') or 'not judged'}"
    measured = value_text(name, e.get("measured"))
    line = f"{name} — {measured if measured == 'not measured' else 'measured ' + measured}"
    if e.get("limit") is not None:
        line += f", limit {value_text(name, e.get('limit'), limit=True)}"
    if why and e.get("message"):
        line += f" — {e['message']}"
    return line


def expectation_line(m: CallMetrics, e: dict[str, Any], *, why: bool = True) -> str:
    """``scenario[call N]: expectation — measured X, limit Y`` (+ `` — what to fix`` with ``why``);
    a skipped expectation reads ``scenario[call N]: expectation — skipped: the reason``."""
    return f"{case_name(m)}: {_verdict(_exp(e), why)}"


def failure_text(m: CallMetrics) -> tuple[str, str]:
    """(one-line message, full text) of a failed or broken call.

    The message names the call and each failed expectation with what was measured and the limit
    (``scenario[call N]: expectation — measured X, limit Y; …``); the full text gives one line per
    failed expectation, with what to fix."""
    if _status(m) == "error":
        msg = m.error or f"the call ended in error ({m.end_reason or 'no reason recorded'})"
        return msg, msg
    failed = _expectations(m, "failed")
    if not failed:
        return f"{case_name(m)}: the call failed (no failed expectation recorded)", ""
    msg = f"{case_name(m)}: " + "; ".join(_verdict(e, why=False) for e in failed)
    body = "\n".join(expectation_line(m, e) for e in failed)
    return msg, body


def _verdict_lines(m: CallMetrics) -> list[str]:
    """Every expectation of the call, one line each, failures first; then where its recording is."""
    order = {"failed": 0, "skipped": 2}
    lines = []
    for e in sorted(map(_exp, m.expectations), key=lambda e: order.get(str(e.get("status")), 1)):
        text = _verdict(e, why=True)
        lines.append(text if e.get("status") == "skipped" else f"{e.get('status')}: {text}")
    if wav := m.artifacts.get("heard.wav"):
        lines.append(f"what the caller heard: {wav} (in the report folder)")
    return lines


# ===================================================================== figures as properties


def call_properties(m: CallMetrics) -> list[tuple[str, str]]:
    """The call's figures as (name, value) — only those that were measured; ms to 0.1 ms."""
    props: list[tuple[str, str]] = []

    def add(name: str, v: Any) -> None:
        f = _finite(v)
        if f is not None:
            props.append((name, _number(f, unit_of(name))))

    if m.call_sid:
        props.append(("call_sid", m.call_sid))
    if m.end_reason:
        props.append(("end_reason", m.end_reason))
    streamed = (_finite(m.duration_ms) or 0.0) > 0
    if m.turns:
        add("turns", len(m.turns))
    for key, attr in (("turn_latency_ms", "latency_ms"), ("overhead_ms", "overhead_ms")):
        pct = percentiles(getattr(t, attr) for t in m.turns)
        for stat in ("p50", "p95", "max"):
            add(f"{key}.{stat}", pct[stat])
    if m.barge_ins:
        add("barge_ins", len(m.barge_ins))
        for key, attr in (("barge_in_clear_ms", "clear_ms"), ("talk_over_ms", "talk_over_ms"),
                          ("truncate_error_ms", "truncate_error_ms")):
            add(f"{key}.max", percentiles(getattr(b, attr) for b in m.barge_ins)["max"])
    if streamed:
        add("underrun_ms", m.underrun_ms)
        add("heard_ms", m.heard_ms)
        add("dead_air_ms", m.dead_air_ms)
        add("pacing.lateness_ms_p99", m.pacing.get("lateness_ms_p99"))
    if m.codec.checked:
        if m.codec.bit_exact is not None:
            props.append(("codec", "bit-exact" if m.codec.bit_exact else "not bit-exact"))
        add("codec.snr_db", m.codec.snr_db)
    add("openai_closed_after_hangup_ms", m.openai_closed_after_hangup_ms)
    if m.warnings:
        add("twilio_warnings", sum(m.warnings.values()))
    skipped = [str(e.get("name")) for e in _expectations(m, "skipped")]
    if skipped:
        props.append(("skipped_expectations", ", ".join(skipped)))
    return props


# ===================================================================== junit.xml


def _timestamp(v: Any) -> str | None:
    """ISO 8601 in UTC without offset (Ant's junit.xsd form), from a datetime or an ISO string."""
    if isinstance(v, str):
        try:
            v = _dt.datetime.fromisoformat(v)
        except ValueError:
            return None
    if not isinstance(v, _dt.datetime):
        return None
    if v.tzinfo is not None:
        v = v.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return v.isoformat(timespec="seconds")


def _seconds(v: Any) -> float | None:
    f = _finite(v)
    return max(0.0, f) if f is not None else None


def _skip_message(m: CallMetrics) -> str | None:
    """Why the call counts as skipped: its scenario does not apply, or none of its expectations was judged."""
    if _status(m) == "skipped":
        return m.skip_reason or "the scenario does not apply to this bridge"
    exps = list(map(_exp, m.expectations))
    if _status(m) == "passed" and exps and all(e.get("status") == "skipped" for e in exps):
        reasons = "; ".join(dict.fromkeys(str(e.get("message") or "not judged") for e in exps))
        return f"no expectation was judged ({', '.join(str(e.get('name')) for e in exps)}): {reasons}"
    return None


def _write_junit(path: Path, calls: list[CallArtifacts], title: str,
                 meta: dict[str, Any] | None = None) -> Path:
    """Write junit.xml. ``meta["scenarios"]`` (name, started_at, seconds) gives each suite its
    start and duration; without it a suite is stamped with the time of writing and its calls' total."""
    meta = meta or {}
    runs = {s.get("name"): s for s in meta.get("scenarios") or [] if isinstance(s, dict)}
    now = _timestamp(_dt.datetime.now(_dt.timezone.utc))
    root = ET.Element("testsuites", name=_x(title))
    totals: Counter[str] = Counter()
    total_time = 0.0
    for scenario, group in _by_scenario(calls).items():
        run = runs.get(scenario, {})
        suite = ET.SubElement(root, "testsuite", name=_x(scenario),
                              timestamp=_timestamp(run.get("started_at")) or now)
        counts: Counter[str] = Counter()
        calls_time = 0.0
        for c in group:
            m = c.metrics
            secs = (_seconds(m.duration_ms) or 0.0) / 1000
            calls_time += secs
            case = ET.SubElement(suite, "testcase", classname=_x(f"callsim.{scenario}"),
                                 name=_x(case_name(m)), time=f"{secs:.3f}")
            props = call_properties(m)
            if props:
                el = ET.SubElement(case, "properties")
                for name, value in props:
                    ET.SubElement(el, "property", name=_x(name), value=_x(value, 2000))
            status = _status(m)
            skip = _skip_message(m)
            if skip is not None:
                ET.SubElement(case, "skipped", message=_x(f"{case_name(m)}: {skip}", 2000))
                counts["skipped"] += 1
            elif status != "passed":
                msg, body = failure_text(m)
                el = ET.SubElement(case, "error" if status == "error" else "failure",
                                   message=_x(msg, 2000), type="error" if status == "error" else "expectation")
                el.text = _x(body)
                counts["errors" if status == "error" else "failures"] += 1
            out_lines = _verdict_lines(m)
            if out_lines:
                ET.SubElement(case, "system-out").text = _x("\n".join(out_lines))
        suite_time = _seconds(run.get("seconds"))
        suite_time = calls_time if suite_time is None else suite_time
        counts["tests"] = len(group)
        for key in ("tests", "failures", "errors", "skipped"):
            suite.set(key, str(counts[key]))
        suite.set("time", f"{suite_time:.3f}")
        totals.update(counts)
        total_time += suite_time
    placed = set(_by_scenario(calls))
    for run in runs.values():  # a scenario skipped before it placed a call is a skip, not nothing
        if run.get("status") != "skipped" or run.get("name") in placed:
            continue
        scenario = str(run.get("name"))
        suite = ET.SubElement(root, "testsuite", name=_x(scenario), timestamp=_timestamp(run.get("started_at")) or now,
                              tests="1", failures="0", errors="0", skipped="1", time="0.000")
        case = ET.SubElement(suite, "testcase", classname=_x(f"callsim.{scenario}"), name=_x(scenario), time="0.000")
        reason = run.get("skip_reason") or "the scenario does not apply here"
        ET.SubElement(case, "skipped", message=_x(f"{scenario}: {reason}", 2000))
        totals.update({"tests": 1, "skipped": 1})
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(totals[key]))
    run_time = _seconds(meta.get("seconds"))
    root.set("time", f"{total_time if run_time is None else run_time:.3f}")
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
