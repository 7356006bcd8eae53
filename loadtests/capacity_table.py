"""The capacity benchmark's table: one row per step of the ramp."""

from __future__ import annotations

from typing import Any

from bench import fmt, row

COLUMNS = [  # (name, unit, width)
    ("calls", "", 5), ("p50", "ms", 6), ("p99", "ms", 7), ("max", "ms", 7), ("late", "frames", 6),
    ("lost", "frames", 6), ("lost@start", "ms/call", 10),
    ("underrun", "ms", 8), ("pacing p99", "ms", 10), ("bridge cpu", "ms/call·s", 10), ("b-core", "%", 6),
    ("bridge RSS", "MB/call", 10), ("harn cpu", "ms/call·s", 9), ("harn RSS", "MB/call", 8),
    ("mock cpu", "ms/call·s", 9), ("h-core", "%", 6), ("leak", "ms / active", 14), ("SLO", "", 4),
]
WIDTHS = [w for _, _, w in COLUMNS]


def table_header() -> str:
    head = row([name for name, _, _ in COLUMNS], WIDTHS)
    units = row([unit for _, unit, _ in COLUMNS], WIDTHS)
    return head + "\n" + units + "\n" + "-" * len(head)


def table_row(s: dict[str, Any]) -> str:
    lat, cpu, rss, cores, leak = s["latency_ms"], s["cpu"], s["rss"], s["cores"], s["leak"]
    mock_lag = leak["mock_zero_after_last_hangup_ms"]
    if leak["ok"]:
        word = "ok "
    elif leak["mock_sessions_still_open"] or leak["bridge_active_calls"]:
        word = "LEAK "  # something never closed
    else:
        word = "slow "  # everything closed, but not within 1 s of the last hang-up
    leak_s = word + fmt(mock_lag, "{:.0f}") + "/" + fmt(leak["bridge_active_calls"], "{}")
    cells = [
        str(s["calls"]), fmt(lat["p50"], "{:.2f}"), fmt(lat["p99"], "{:.2f}"), fmt(lat["max"], "{:.1f}"),
        str(lat["late"]), str(s["frames"]["lost_in_window"]),
        fmt(s["frames"]["lost_at_start_ms_per_call"]["mean"], "{:.0f}"), f"{s['underrun_ms_total']:.0f}", fmt(s["pacing_ms"]["p99"], "{:.2f}"),
        fmt(cpu["bridge"]["ms_per_call_s"], "{:.2f}"), fmt(cores["bridge_cpus_busy"] and 100 * cores["bridge_cpus_busy"], "{:.0f}"),
        fmt(rss["bridge"]["per_call_mb"], "{:.2f}"), fmt(cpu["harness"]["ms_per_call_s"], "{:.2f}"),
        fmt(rss["harness"]["per_call_mb"], "{:.2f}"), fmt(cpu["mock"]["ms_per_call_s"], "{:.2f}"),
        fmt(cores["harness_cpus_busy"] and 100 * cores["harness_cpus_busy"], "{:.0f}"), leak_s,
        "yes" if s["slo_ok"] else "NO",
    ]
    notes = list(s["flags"]) + ([] if s["slo_ok"] else s["slo_why"])
    return row(cells, WIDTHS) + ("   " + "; ".join(notes) if notes else "")
