"""An expectation's measured value and limit as a person reads them: ``1039 ms``, ``≤ 1500 ms``.

The expectation records (:func:`.expectations.judge`) keep ``measured`` and
``limit`` as the checks compare them: ``limit`` is ``True`` for the "no X"
expectations, a list for ``transcript_contains``, a number for the rest. Shown
as they are they read as Python (``True``, ``['help please']``, ``None``);
this module says what each one means, with its unit and comparison.
"""

from __future__ import annotations

import math
from typing import Any

DASH = "—"

# name → (comparison written before the limit, unit); a limit of True reads as _REQUIRED[name]
_LIMITS: dict[str, tuple[str, str]] = {
    "turn_latency_p95_ms": ("p95 ≤", "ms"),
    "overhead_p95_ms": ("p95 ≤", "ms"),
    "barge_in_clear_max_ms": ("≤", "ms"),
    "talk_over_max_ms": ("≤", "ms"),
    "truncate_error_max_ms": ("≤", "ms"),
    "snr_min_db": ("≥", "dB"),
    "underrun_max_ms": ("≤", "ms"),
    "openai_closed_within_ms": ("≤", "ms"),
    "dead_air_max_ms": ("≤", "ms"),
    "heard_min_ms": ("≥", "ms"),
    "heard_max_ms": ("≤", "ms"),
    "barge_ins": ("=", ""),
    "renewals_min": ("≥", ""),
    "switch_gap_max_ms": ("≤", "ms"),
    "replies_after_last_utterance": ("=", ""),
    "replies_after_last_utterance_min": ("≥", ""),
    "dtmf_heard": ("keys:", ""),
    "transferred_to": ("to:", ""),
    "end_reason": ("=", ""),
    "tool_called": ("called:", ""),
    "codec": ("=", ""),
    "transcript_contains": ("heard:", ""),
}
_REQUIRED = {
    "openai_session": "accepted",
    "no_underruns": "0 ms",
    "no_twilio_warnings": "0 warnings",
    "no_rejected_truncate": "0 rejected",
    "heard_goodbye": "ended by the bridge, 0 ms unheard",
    "no_caller_audio_lost": "0 ms",
}
_MEASURED_UNIT = {
    "no_underruns": "ms",
    "no_twilio_warnings": "warning(s)",
    "no_rejected_truncate": "rejected",
    "barge_ins": "barge-in(s)",
    "replies_after_last_utterance": "reply(ies)",
    "replies_after_last_utterance_min": "reply(ies)",
    "heard_goodbye": "ms unheard",
    "renewals_min": "renewal(s)",
    "no_caller_audio_lost": "ms",
}


def unit(name: str) -> str:
    """The unit a measured value of expectation ``name`` reads with: ``ms``, ``dB``, ``warning(s)``, ``ms unheard``."""
    if name in _MEASURED_UNIT:
        return _MEASURED_UNIT[name]
    if name in _LIMITS:
        return _LIMITS[name][1]
    return "ms" if name.endswith("_ms") else "dB" if name.endswith("_db") else ""


def requirement(name: str) -> str | None:
    """What a "no X" expectation (set to true) requires, as read: ``0 warnings``; None for other kinds."""
    return _REQUIRED.get(name)


def value_text(v: Any, unit: str = "") -> str:
    """Any JSON-ish value, without Python's spelling: numbers trimmed, lists joined, quotes typographic."""
    if v is None:
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        f = float(v)
        if not math.isfinite(f):
            return DASH
        text = f"{f:.0f}" if unit == "ms" and abs(f) >= 10 else f"{f:.1f}".removesuffix(".0")
        return f"{text} {unit}".rstrip()
    if isinstance(v, (list, tuple, set, frozenset)):
        items = [value_text(x, unit) for x in v]
        return ", ".join(items) if items else "none"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {value_text(x)}" for k, x in v.items()) or DASH
    if isinstance(v, str):
        return v.replace("_", " ") if v in ("bit_exact", "closed_by_app", "max_duration") else v
    return str(v)


def _quoted(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_quoted(x) for x in v) if v else "none"
    return f"“{v}”" if isinstance(v, str) else value_text(v)


def comparison(name: str) -> str:
    """How expectation ``name`` compares the measured value with a numeric limit: ``≤``, ``≥``,
    ``p95 ≤``, ``=`` (the console, JUnit and the HTML all say it the same way)."""
    return _LIMITS.get(name, ("≤" if name.endswith("_ms") else "", ""))[0]


def limit_text(name: str, limit: Any) -> str:
    """``≤ 1500 ms``, ``p95 ≤ 1500 ms``, ``= hangup``, ``0 warnings``, ``heard: “help please”``."""
    if limit is None:
        return DASH
    if limit is True:
        return requirement(name) or "required"
    if limit is False:
        return "not checked"
    if name == "transcript_contains":
        return "heard: " + _quoted(limit)
    cmp, u = _LIMITS.get(name, ("≤" if name.endswith("_ms") else "", unit(name)))
    return f"{cmp} {value_text(limit, u)}".strip()


def measured_text(name: str, measured: Any) -> str:
    """What was measured, with the expectation's unit: ``1039 ms``, ``0 warning(s)``, ``“Hello…”``."""
    if measured is None:
        return DASH
    if name == "transcript_contains":
        return _quoted(measured)
    return value_text(measured, unit(name))


def expectation_line(e: dict[str, Any]) -> str:
    """``name: measured X, limit Y`` (the message says the rest)."""
    name = str(e.get("name"))
    return f"{name}: measured {measured_text(name, e.get('measured'))}, limit {limit_text(name, e.get('limit'))}"
