"""The bridge's share of a turn: what happened between the caller and the mock, and whose time it was.

The caller knows when its speech ended and when the reply reached it; the mock knows when it heard
the end of speech (its VAD), how long it thought, and when it sent the reply's first audio. What is
left is the bridge's: its **uplink hop** (the caller's line-tagged idle frames — the same frames —
sent → received by the mock), its **downlink hop** (the mock's first delta of the reply sent → that
audio reaching the caller) and any **wait it caused** (a response it asked for itself, a tool it ran).
Measured that way, the figure depends neither on the mock's VAD nor on the caller's 20 ms playback
tick, and holds for any bridge that forwards μ-law; one that converts the audio loses the tags, and
its overhead is then the reply's arrival minus what the mock spent.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..caller.core import CallerCore
from .measurements import TurnMetrics

MS = 1_000_000  # ns


def _bridge_waits_ms(chain: list[dict[str, Any]], stopped: int) -> float:
    """Time the mock spent waiting for the bridge between the caller's turn and the reply: a response
    the bridge triggered itself (after its own commit or VAD) and each step of a tool chain."""
    total = 0.0
    before = stopped
    for r in chain:
        trig = r.get("t_trigger_ns")
        if r.get("trigger") == "client" and trig is not None and trig > before:
            total += (trig - before) / MS
        before = r.get("t_done_ns") or trig or before
    return total


def uplink_ms(core: CallerCore, rx: dict[int, int], after_ns: int, window_ms: int = 500) -> float | None:
    """Caller → mock hop of the idle-line frames sent in the ``window_ms`` after ``after_ns``: each
    such frame carries the call's line tag and its grid index, so the mock's arrival time of *that
    frame* minus its send time is the hop (median over the window); ``None`` without line tags."""
    if not rx:
        return None
    grid = np.frombuffer(core.media_sent_grid, dtype=np.int64) if len(core.media_sent_grid) else None
    if grid is None:
        return None
    sent = np.frombuffer(core.media_sent_ns, dtype=np.int64)
    sel = (sent >= after_ns) & (sent < after_ns + window_ms * MS)
    hops = [(rx[int(k) % (1 << 24)] - int(t)) / MS for k, t in zip(grid[sel], sent[sel]) if int(k) % (1 << 24) in rx]
    return float(np.median(hops)) if hops else None


def line_tag_rx(core: CallerCore, mock: dict[str, Any] | None) -> dict[int, int]:
    """seq → the mock's receipt time of this call's tagged frames (first receipt if duplicated)."""
    if not mock or getattr(core, "line_tag", None) is None:
        return {}
    rows = (mock.get("line_tag_rx") or {}).get(f"{core.line_tag:08x}") or []
    out: dict[int, int] = {}
    for seq, t in rows:
        out.setdefault(int(seq), int(t))
    return out


def attach_mock(t: TurnMetrics, start_ns: int, next_start_ns: int | None, mock_turns: list[dict[str, Any]],
                 responses: list[dict[str, Any]], created_delay_ms: float,
                 up_ms: float | None = None) -> None:
    """Pair a caller turn with the mock's turn (by time) and the responses that led to the reply."""
    hi = next_start_ns if next_start_ns is not None else math.inf
    # an idle-timeout turn (mock/timeouts.py: the silence the mock committed itself) is not the caller's
    cands = [mt for mt in mock_turns if not mt.get("idle_timeout")
             and start_ns <= (mt.get("t_speech_started_ns") or mt.get("t_committed_ns") or -1) < hi]
    if not cands:
        return
    mt = cands[-1]  # if the mock's VAD split the utterance, the last part is the one answered
    t.heard = mt.get("heard")
    t.mock_item_id = mt.get("item_id")
    if mt.get("vad_wait_wall_ms") is not None:
        t.mock_vad_wait_ms = float(mt["vad_wait_wall_ms"])
    elif mt.get("manual"):
        t.mock_vad_wait_ms = 0.0  # committed by the bridge: its own wait is overhead
    elif mt.get("vad_wait_ms") is not None:
        t.mock_vad_wait_ms = float(mt["vad_wait_ms"])
    stopped = mt.get("t_speech_stopped_ns") or mt.get("t_committed_ns")
    if stopped is None or t.first_audio_ns is None:
        return
    chain: list[dict[str, Any]] = []
    for r in responses:
        trig = r.get("t_trigger_ns")
        if trig is None or trig < stopped:
            continue
        if trig >= t.first_audio_ns:
            break
        chain.append(r)
        if not str(r.get("reply", "")).startswith("tool:"):
            break  # a tool call is followed by the reply the bridge asks for; anything else ends it
    if not chain:
        return
    t.response_ids = [r.get("id") for r in chain]
    t.mock_think_ms = sum(_mock_response_ms(r, created_delay_ms) for r in chain)
    t.uplink_hop_ms = up_ms
    first_delta = chain[-1].get("t_first_audio_ns")
    if t.first_byte_ns is not None and first_delta is not None:
        t.downlink_hop_ms = (t.first_byte_ns - first_delta) / MS
    if t.uplink_hop_ms is not None and t.downlink_hop_ms is not None:
        # The bridge's share, from the same audio timestamped on both sides of it: its two hops plus
        # whatever the mock had to wait for it (a response the bridge asked for itself, a tool's output).
        t.overhead_ms = t.uplink_hop_ms + t.downlink_hop_ms + _bridge_waits_ms(chain, stopped)
    elif t.first_byte_ns is not None and t.mock_vad_wait_ms is not None:
        # No line tag came through (the bridge converts the audio): the reply's arrival at the caller
        # minus what the mock spent — still free of the caller's 20 ms playback tick.
        t.overhead_ms = (t.first_byte_ns - t.speech_end_ns) / MS - t.mock_vad_wait_ms - t.mock_think_ms


def _mock_response_ms(r: dict[str, Any], created_delay_ms: float) -> float:
    """Time the mock spent on one response before its first output: measured from its own
    timestamps when present (so a mock running late under load is not billed to the bridge),
    else the scripted think time + created delay."""
    trig, created = r.get("t_trigger_ns"), r.get("t_created_ns")
    out = r.get("t_first_audio_ns") or (r.get("t_done_ns") if str(r.get("reply", "")).startswith("tool:") else None)
    if trig is not None and created is not None and out is not None and out >= trig:
        return (out - trig) / MS
    return float(r.get("think_ms") or 0.0) + created_delay_ms
