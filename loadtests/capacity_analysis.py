"""The capacity benchmark's figures from the raw material of one step, and its verdicts.

:func:`pair` matches each call with the mock session that carried it — by content (the
CRC-32s of the frames the caller sent against those of the blocks the mock received), or
by index for a transcoding bridge whose blocks never match; :func:`analyse` turns the paired
arrays into the step's latency, loss, pacing and underrun figures; :func:`judge` holds
them to the SLO and flags a harness-limited or disturbed step; :func:`summary` sums up
the ramp.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from typing import Any

import numpy as np
from bench import FRAME_NS, MS, fmt, pct
from callsim.simulator.measure.framepairing import pair_frames
from capacity_worker import unpack_ints

_KEY_BITS = 31  # pairing keys: CRC-32 above, µs since the run's first frame below (35 minutes)
_KEY_MASK = (1 << _KEY_BITS) - 1


def pair(calls: list[dict[str, Any]], sessions: list[dict[str, Any]]) -> tuple[dict[int, int], set[int]]:
    """Call index → session index, by what was sent; and the calls that had to be paired by index.

    For up to 48 frames of each call whose content occurs once in that call (speech, or an idle
    line the caller tagged), spread over it, the cost of a session is the median offset from the
    frame's sending to the first block of the same CRC the session received at or after it —
    infinite when fewer than half are found. For the true session that is the bridge's latency;
    another call's session carries the same fixture at other times, or a tagged line never. Greedy
    over the cost. Calls no session matches by content (a transcoding bridge: the mock's blocks are
    not the caller's μ-law) fall back to :func:`pair_by_index` over the sessions left.
    """
    cs = [c for c in calls if "sent" in c and len(c["sent"]) and len(c.get("crc", ()))]
    s_idx = [j for j, s in enumerate(sessions) if len(s.get("block_ns", ()))]
    out: dict[int, int] = {}
    if cs and s_idx:
        base = min(min(int(c["sent"][0]) for c in cs), min(int(sessions[j]["block_ns"][0]) for j in s_idx))

        def keys(crc: np.ndarray, ns: np.ndarray) -> np.ndarray:
            return (crc << _KEY_BITS) | np.clip((ns - base) // 1000, 0, _KEY_MASK)

        q = np.full((len(cs), 48), -1, dtype=np.int64)
        for row, c in enumerate(cs):
            _, inv, cnt = np.unique(c["crc"], return_inverse=True, return_counts=True)
            pick = np.flatnonzero(cnt[inv] == 1)
            if len(pick) < 8:  # nothing distinctive (an untagged silent call): any frames
                pick = np.arange(len(c["crc"]))
            pick = pick[np.unique(np.linspace(0, len(pick) - 1, num=min(48, len(pick))).astype(int))]
            q[row, :len(pick)] = keys(c["crc"][pick], c["sent"][pick])
        cost = np.full((len(cs), len(s_idx)), np.inf)
        for col, j in enumerate(s_idx):
            sk = np.sort(keys(sessions[j]["block_crc"], sessions[j]["block_ns"]))
            at = sk[np.minimum(np.searchsorted(sk, q), len(sk) - 1)]
            hit = ((at >> _KEY_BITS) == (q >> _KEY_BITS)) & (at >= q)
            off = np.where(hit, (at & _KEY_MASK) - (q & _KEY_MASK), np.inf)
            off[q < 0] = np.nan  # padding
            cost[:, col] = np.nanmedian(off, axis=1)
        out = {cs[ci]["i"]: s_idx[si] for ci, si in _greedy(cost)}
    left_c = [c for c in calls if c.get("i") not in out]
    used = set(out.values())
    left_s = [j for j in range(len(sessions)) if j not in used]
    by_index = pair_by_index(left_c, [sessions[j] for j in left_s])
    out.update({ci: left_s[sj] for ci, sj in by_index.items()})
    return out, set(by_index)


def _greedy(cost: np.ndarray) -> list[tuple[int, int]]:
    """Row/column pairs in order of increasing finite cost, each row and column once."""
    used_r: set[int] = set()
    used_c: set[int] = set()
    out = []
    for flat in np.argsort(cost, axis=None):
        r, c = divmod(int(flat), cost.shape[1])
        if not math.isfinite(cost[r, c]):
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        out.append((r, c))
        if len(used_r) == cost.shape[0]:
            break
    return out


def pair_by_index(calls: list[dict[str, Any]], sessions: list[dict[str, Any]]) -> dict[int, int]:
    """Call index → session index when content cannot tell: the smallest causal offsets by index.

    For a true pair the k-th append arrives a little *after* the caller sent frame k, on every
    frame; for a wrong pair the offset is another call's start difference, often negative.
    Greedy over (median offset) with "never negative" as the constraint.
    """
    cs = [c for c in calls if "sent" in c and len(c["sent"])]
    s_idx = [j for j, s in enumerate(sessions) if len(s["append_ns"])]
    ss = [sessions[j] for j in s_idx]
    if not cs or not ss:
        return {}
    n = min(min(len(c["sent"]) for c in cs), min(len(s["append_ns"]) for s in ss))
    lo = min(75, n // 3)  # past the early frames the bridge buffers until session.updated
    ks = np.unique(np.linspace(lo, n - 1, num=min(48, max(1, n - lo))).astype(int))
    sent = np.stack([c["sent"][ks] for c in cs])  # calls × K
    app = np.stack([s["append_ns"][ks] for s in ss])  # sessions × K
    diff = app[None, :, :] - sent[:, None, :]  # calls × sessions × K
    cost = np.median(diff, axis=2).astype(np.float64)
    cost[diff.min(axis=2) < 0] = np.inf
    return {cs[ci]["i"]: s_idx[si] for ci, si in _greedy(cost)}


def analyse(a: argparse.Namespace, n_calls: int, calls: list[dict[str, Any]], sessions: list[dict[str, Any]],
            w0: int, w1: int) -> dict[str, Any]:
    for c in calls:
        if c.get("sent_ns"):
            c["sent"] = unpack_ints(c["sent_ns"])
            c["grid_k"] = unpack_ints(c["grid"])
            c["media_in"] = unpack_ints(c["media_in_ns"])
            c["crc"] = unpack_ints(c["sent_crc"]) if c.get("sent_crc") else np.zeros(0, dtype=np.int64)
    pairs, by_index = pair(calls, sessions)
    skip_ns = int(a.skip_s * 1e9)
    lat_all: list[np.ndarray] = []
    late_all: list[np.ndarray] = []
    down_all: list[np.ndarray] = []
    frames_vs_appends = 0
    late_frames: list[tuple[float, float, int]] = []
    lost_start: list[int] = []  # per call measured by content: frames before the first one received
    fr = Counter()  # frame fates, summed over the calls measured by content
    for c in calls:
        if "sent" not in c:
            continue
        sent, k = c["sent"], c["grid_k"]
        in_win = (sent >= max(w0, c["t0_ns"] + skip_ns)) & (sent <= w1)
        late_all.append((sent - (c["t0_ns"] + k * FRAME_NS))[in_win])
        si = pairs.get(c["i"])
        if si is None:
            continue
        s = sessions[si]
        fp = None if c["i"] in by_index else pair_frames(sent, c["crc"], s["block_ns"], s["block_crc"])
        if fp is not None and fp.paired:  # by content: each frame with the block that carried it
            k_in = fp.sent[in_win[fp.sent]]
            lat = fp.latency_ns[in_win[fp.sent]]
            lost_start.append(fp.lost_start)
            fr.update(lost_in_window=int(np.count_nonzero(fp.lost_mask() & in_win)), lost_later=fp.lost_later,
                      lost_end=fp.lost_end, duplicated=fp.duplicated, unpaired_blocks=fp.unpaired)
        else:  # content never matched (a transcoding bridge): k-th frame → k-th append
            fr["calls_measured_by_index"] += 1
            app = s["append_ns"]
            n = min(len(sent), len(app))
            if len(sent) != len(app):
                frames_vs_appends += 1
            k_in = np.flatnonzero(in_win[:n])
            lat = app[k_in] - sent[k_in]
        lat_all.append(lat)
        bad = np.flatnonzero(lat > a.late_ms * MS)
        late_frames += [((int(sent[k_in[j]]) - w0) / 1e6, int(lat[j]) / 1e6, c["i"]) for j in bad[:50]]
        d, m = s["delta_ns"], c["media_in"]
        nd = min(len(d), len(m))
        if nd:
            down = m[:nd] - d[:nd]
            down_all.append(down[(m[:nd] >= w0) & (m[:nd] <= w1)])
    lat = np.concatenate(lat_all) / 1e6 if lat_all else np.zeros(0)
    late = np.concatenate(late_all) / 1e6 if late_all else np.zeros(0)
    down = np.concatenate(down_all) / 1e6 if down_all else np.zeros(0)
    errors = Counter(c["error"] for c in calls if c.get("error"))
    # WebSocket messages through the bridge per second of call: both legs, both directions
    call_s = sum(c.get("duration_ms", 0) for c in calls) / 1000
    msgs = sum(c.get("msgs_sent", 0) + c.get("msgs_received", 0) for c in calls) + sum(
        s.get("counts", {}).get("events_in", 0) + s.get("counts", {}).get("events_out", 0) for s in sessions)
    placed = sum(1 for c in calls if "sent" in c)
    return {
        "calls": n_calls,
        "placed": placed,
        "errors": dict(errors),
        "paired": len(pairs),
        "sessions": len(sessions),
        "calls_appends_mismatch": frames_vs_appends,
        # caller frames by content (callsim.simulator.measure.framepairing): lost ones are never counted as latency
        "frames": {
            "lost_at_start": int(sum(lost_start)),
            "lost_at_start_ms_per_call": {
                "mean": float(np.mean(lost_start)) * FRAME_NS / MS if lost_start else None,
                "max": max(lost_start) * FRAME_NS / MS if lost_start else None},
            "calls_lost_at_start": sum(1 for v in lost_start if v),
            "lost_in_window": fr["lost_in_window"],  # after each call's first received frame, in the window
            "lost_later": fr["lost_later"],  # whole calls, after the first received frame ...
            "lost_at_end": fr["lost_end"],  # ... of which after the last one (the hang-up's tail)
            "duplicated": fr["duplicated"], "unpaired_blocks": fr["unpaired_blocks"],
            "calls_measured_by_index": fr["calls_measured_by_index"],
        },
        "latency_ms": {"frames": int(len(lat)), "p50": pct(lat, 50), "p99": pct(lat, 99),
                       "max": float(lat.max()) if len(lat) else None,
                       "late": int(np.count_nonzero(lat > a.late_ms)), "late_threshold_ms": a.late_ms},
        "late_frames": sorted(late_frames)[:300],  # (ms into the window, latency ms, call)
        "downstream_ms": {"deltas": int(len(down)), "p50": pct(down, 50), "p99": pct(down, 99),
                          "max": float(down.max()) if len(down) else None},
        "pacing_ms": {"frames": int(len(late)), "p50": pct(late, 50), "p99": pct(late, 99),
                      "max": float(late.max()) if len(late) else None},
        "underrun_ms_total": float(sum(c.get("underrun_ms") or 0.0 for c in calls)),
        "calls_with_underrun": sum(1 for c in calls if (c.get("underrun_ms") or 0) > 0),
        "turns_per_call": float(np.mean([c.get("turns", 0) for c in calls])) if calls else 0.0,
        "heard_s_per_call": float(np.mean([c.get("heard_ms", 0) for c in calls]) / 1000) if calls else 0.0,
        "calls_heard_nothing": sum(1 for c in calls if "sent" in c and not c.get("heard_ms")),
        "bridge_msgs_per_call_s": msgs / call_s if call_s else None,
        "twilio_warnings": int(sum(c.get("warnings", 0) for c in calls)),
        "end_reasons": dict(Counter(c.get("end_reason") for c in calls)),
    }


def judge(a: argparse.Namespace, step: dict[str, Any]) -> None:
    why = []
    if step["placed"] < step["calls"] or step["errors"]:
        why.append(f"{step['calls'] - step['placed'] or sum(step['errors'].values())} call(s) failed")
    if step["paired"] < step["placed"]:
        why.append(f"{step['placed'] - step['paired']} call(s) unpaired")
    lat = step["latency_ms"]
    if lat["p99"] is None or lat["p99"] > a.slo_p99_ms:
        why.append(f"p99 {lat['p99'] if lat['p99'] is None else round(lat['p99'], 2)} ms > {a.slo_p99_ms}")
    if lat["late"]:
        why.append(f"{lat['late']} late frame(s)")
    if step["frames"]["lost_in_window"]:
        why.append(f"{step['frames']['lost_in_window']} frame(s) lost")
    if step["underrun_ms_total"] > 0:
        why.append(f"underruns {step['underrun_ms_total']:.0f} ms in {step['calls_with_underrun']} call(s)")
    if step["calls_heard_nothing"]:
        why.append(f"{step['calls_heard_nothing']} call(s) heard no reply")
    if not step["leak"]["ok"]:
        lk = step["leak"]
        why.append(f"leak check failed ({lk['mock_sessions_still_open']} mock session(s) still open, "
                   f"bridge active calls {lk['bridge_active_calls']}, mock at 0 "
                   f"{fmt(lk['mock_zero_after_last_hangup_ms'], '{:.0f}')} ms after the last hang-up)")
    step["slo_ok"] = not why
    step["slo_why"] = why
    flags = []
    pac = step["pacing_ms"]["p99"]
    hb = step["cores"]["harness_cpus_busy"]
    if (pac is not None and pac > a.harness_pacing_ms) or (hb is not None and hb > a.harness_busy):
        flags.append("harness-limited")
    if step["other_processes_core_share"] > a.disturbed:
        flags.append(f"disturbed (other processes used {100 * step['other_processes_core_share']:.0f}% of a core)")
    if step["profiled"]:
        flags.append("profiled")
    step["flags"] = flags


def summary(a: argparse.Namespace, steps: list[dict[str, Any]]) -> dict[str, Any]:
    held = None
    for s in steps:  # the ramp is monotone: the first failure ends it
        if not s["slo_ok"]:
            break
        held = s["calls"]
    first_fail = next((s for s in steps if not s["slo_ok"]), None)
    # Per-call CPU is only meaningful while the harness really ran the calls in real time: past
    # that, frames go out late and the bridge gets less than real-time traffic per call.
    best = [s for s in steps if s["cpu"]["bridge"]["ms_per_call_s"] > 0
            and (s["pacing_ms"]["p99"] or 1e9) <= a.realtime_pacing_ms] or steps[:1]
    # calls one bridge core could carry at 100 % busy, from the per-call CPU of the largest step
    per_call = best[-1]["cpu"]["bridge"]["ms_per_call_s"] if best else None
    return {
        "slo": {"p99_ms": a.slo_p99_ms, "late_ms": a.late_ms, "underruns": 0},
        "max_calls_slo_held": held,
        "first_failure": None if first_fail is None else {
            "calls": first_fail["calls"], "why": first_fail["slo_why"], "flags": first_fail["flags"]},
        "harness_limited_steps": [s["calls"] for s in steps if "harness-limited" in s["flags"]],
        "per_call_figures_from_step": best[-1]["calls"] if best else None,
        "bridge_ms_cpu_per_call_s": per_call,
        "bridge_cpu_us_per_msg": best[-1].get("bridge_cpu_us_per_msg") if best else None,
        "bridge_msgs_per_call_s": best[-1].get("bridge_msgs_per_call_s") if best else None,
        "bridge_calls_per_core_by_cpu": (1000 / per_call) if per_call else None,
        "harness_ms_cpu_per_call_s": best[-1]["cpu"]["harness"]["ms_per_call_s"] if best else None,
        "harness_calls_per_core_by_cpu": (1000 / best[-1]["cpu"]["harness"]["ms_per_call_s"])
        if best and best[-1]["cpu"]["harness"]["ms_per_call_s"] else None,
        "mock_ms_cpu_per_call_s": best[-1]["cpu"]["mock"]["ms_per_call_s"] if best else None,
        "mock_sessions_per_core_by_cpu": (1000 / best[-1]["cpu"]["mock"]["ms_per_call_s"])
        if best and best[-1]["cpu"]["mock"]["ms_per_call_s"] else None,
        "bridge_rss_mb_per_call": best[-1]["rss"]["bridge"]["per_call_mb"] if best else None,
    }
