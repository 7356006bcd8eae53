"""Why a bridge's ``conversation.item.truncate`` missed what the caller heard — from the evidence.

A truncate error alone ("audio_end_ms 11191, heard 2960") tells a bridge author
that something is wrong, not what. Each common way of computing ``audio_end_ms``
(protocols.md 2.5 and part 3, pitfalls 1, 5 and 7) leaves a figure the harness
can recompute from what it recorded, and the one the bridge's value matches is
the likely cause:

* the audio forwarded for the item by the truncate (caller) or sent by OpenAI
  (mock): audio counted as heard when it was sent (pitfall 5);
* the caller's media ``timestamp`` elapsed since the item's first audio reached
  the caller: Twilio timestamps count the caller's audio, not what was played,
  and run on after the reply ends (pitfall 1, the Twilio sample's method);
* the same since the call's *first* assistant audio: the start was not reset
  per item (pitfall 1, twilio-samples/...-python#45);
* the audio before the last mark echoed as played: right only to within the
  mark spacing unless the time played since the echo is added;
* the audio before the last mark echoed at all, clear included: marks echoed
  by ``clear`` are not playback (pitfall 7).

Pure: it reads a :class:`~.measurements.BargeInMetrics`, the caller core and
the mock's session snapshot.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from ..caller.core import CallerCore
from .measurements import BargeInMetrics
from .twilio_evidence import (
    ItemAudio,
    first_media_ns,
    item_audio,
    item_audio_playing_at,
    media_timestamp_at,
)

#: a truncate within this of the audio heard is right (the barge_in scenario's own limit)
HEARD_OK_MS = 20.0
#: a recomputed figure within this of audio_end_ms explains it (a frame, plus transit)
MATCH_MS = 25.0
#: marks further apart than this (audio between them) are coarser than one delta
COARSE_MARK_MS = 150.0


@dataclass(frozen=True)
class TruncateDiagnosis:
    """``cause`` is one of: none, heard, sent, timestamps, timestamps_not_reset, mark,
    cleared_marks, unknown; ``figures`` what was recomputed (ms, None where unknown)."""

    cause: str
    sentence: str
    figures: dict[str, float | None]


def diagnose_truncate(barge: BargeInMetrics, core: CallerCore | None, snapshot: dict[str, Any] | None) -> str:
    """The likely cause of this barge-in's truncate error, as one sentence ending in the fix."""
    return explain_truncate(barge, core, snapshot).sentence


def explain_truncate(barge: BargeInMetrics, core: CallerCore | None,
                     snapshot: dict[str, Any] | None) -> TruncateDiagnosis:
    """:func:`diagnose_truncate` with its cause code and the figures behind it."""
    heard = float(barge.heard_ms)
    end = barge.truncate_audio_end_ms
    if end is None:
        return TruncateDiagnosis("none", (
            f"No conversation.item.truncate followed this barge-in ({heard:.0f} ms heard): OpenAI keeps"
            " the whole reply as if heard — truncate the item to the audio played."), {"heard_ms": heard})
    rec = _truncate_record(snapshot, barge.truncate_ns)
    t_trunc = barge.truncate_ns if barge.truncate_ns is not None else (rec or {}).get("t_ns")
    fig = _figures(barge, core, snapshot, rec, t_trunc)
    fig["heard_ms"], fig["audio_end_ms"] = heard, float(end)
    rejected = f"The truncate was rejected ({barge.truncate_rejection}). " if barge.truncate_rejection else ""
    off = abs(end - heard)
    if off <= HEARD_OK_MS:
        return TruncateDiagnosis("heard", rejected + (
            f"audio_end_ms {end} matches the {heard:.0f} ms heard (off by {off:.0f} ms): nothing to fix."), fig)
    head = f"{rejected}audio_end_ms {end} vs {heard:.0f} ms heard: "
    if barge.clear_ns is None and heard > end:
        # Without a clear Twilio plays on after the truncate: the caller hears more than any bridge
        # could have known at that moment, so no way of computing audio_end_ms would have matched.
        return TruncateDiagnosis("no_clear", head + (
            "the bridge sent no clear, so Twilio kept playing the item after the truncate — send clear as"
            " soon as the caller starts talking, then truncate to what had played."), fig)
    cause, value = _best_match(float(end), off, fig)
    gap = fig.get("mark_gap_ms")
    if cause == "sent":
        text = (f"it equals the {value:.0f} ms of the item's audio already sent, so the bridge counted audio"
                " as heard when it was sent — count what Twilio played (mark echoes plus time since the last).")
    elif cause == "timestamps":
        text = (f"it equals the {value:.0f} ms of media timestamps elapsed since the item's first audio, so it"
                " was computed from Twilio media timestamps, which count the caller's audio, not what was"
                " played — use mark echoes and cap at the audio sent.")
    elif cause == "timestamps_not_reset":
        text = (f"it equals the {value:.0f} ms of media timestamps since the call's first assistant audio, so"
                " the start time was not reset for this item — reset it when item_id changes, or use marks.")
    elif cause == "mark" and gap is not None and gap > COARSE_MARK_MS:
        text = (f"it equals the audio before the last echoed mark ({value:.0f} ms), so it truncated at the last"
                f" echoed mark; marks come every {gap:.0f} ms — mark every delta and add the time played"
                " since the last echo.")
    elif cause == "mark":
        text = (f"it equals the audio before the last echoed mark ({value:.0f} ms; marks every"
                f" {_ms(gap)} ms) — add the time played since the last echo, capped at the audio sent.")
    elif cause == "cleared_marks":
        text = (f"it equals the audio before the last mark echoed by the clear ({value:.0f} ms), so it counted"
                " marks echoed by clear as played — ignore marks echoed after sending clear.")
    else:
        seen = "marks came with every delta" if gap is not None and gap <= COARSE_MARK_MS else (
            f"marks every {gap:.0f} ms" if gap is not None else "no marks for the item")
        text = (f"it matches none of the audio sent ({_ms(fig.get('sent_ms'))} ms), the media-timestamp time"
                f" ({_ms(fig.get('timestamp_ms'))} ms) or the last played mark ({_ms(fig.get('mark_ms'))} ms);"
                f" {seen} — check how the bridge measures playback.")
    return TruncateDiagnosis(cause if cause else "unknown", head + text, fig)


def _ms(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f}"


_ORDER = ("sent", "mock_sent", "timestamps", "mark", "cleared_marks", "timestamps_not_reset")
_FIGURE = {"sent": "sent_ms", "mock_sent": "mock_sent_ms", "timestamps": "timestamp_ms", "mark": "mark_ms",
           "cleared_marks": "cleared_mark_ms", "timestamps_not_reset": "call_timestamp_ms"}


def _best_match(end: float, heard_off: float, fig: dict[str, float | None]) -> tuple[str | None, float]:
    """The recomputed figure closest to ``end`` within :data:`MATCH_MS`, and closer than the
    audio heard; ties go to the earlier (simpler) cause in :data:`_ORDER`."""
    best: tuple[float, int, str, float] | None = None
    for rank, cause in enumerate(_ORDER):
        v = fig.get(_FIGURE[cause])
        if v is None:
            continue
        d = abs(end - v)
        if d <= MATCH_MS and d < heard_off and (best is None or (d, rank) < best[:2]):
            best = (d, rank, cause, v)
    if best is None:
        return None, 0.0
    cause = "sent" if best[2] == "mock_sent" else best[2]
    return cause, best[3]


def _truncate_record(snapshot: dict[str, Any] | None, t_ns: int | None) -> dict[str, Any] | None:
    recs = snapshot.get("truncates") if snapshot else None
    if not isinstance(recs, list) or t_ns is None:
        return None
    return next((r for r in recs if isinstance(r, dict) and r.get("t_ns") == t_ns), None)


def _figures(barge: BargeInMetrics, core: CallerCore | None, snapshot: dict[str, Any] | None,
             rec: dict[str, Any] | None, t_trunc: int | None) -> dict[str, float | None]:
    fig: dict[str, float | None] = {k: None for k in _FIGURE.values()}
    fig["mark_gap_ms"] = None
    if rec is not None and rec.get("audio_sent_ms") is not None:
        fig["mock_sent_ms"] = float(rec["audio_sent_ms"])
    if core is None or core.t0_ns is None or t_trunc is None:
        return fig
    item = _item(core, snapshot, rec, barge, t_trunc)
    if item is None:
        return fig
    fig["sent_ms"] = item.sent_ms
    ts_now, ts_first = media_timestamp_at(core, t_trunc), media_timestamp_at(core, item.first_ns)
    if ts_now is not None and ts_first is not None:
        fig["timestamp_ms"] = float(ts_now - ts_first)
    call_first = first_media_ns(core)
    ts_call = media_timestamp_at(core, call_first) if call_first is not None else None
    if ts_now is not None and ts_call is not None and call_first != item.first_ns:
        fig["call_timestamp_ms"] = float(ts_now - ts_call)
    # What was played is known before the clear; marks echoed by it say nothing (pitfall 7).
    played_by = min(t_trunc, barge.clear_ns) if barge.clear_ns is not None else t_trunc
    last = item.last_echo_ms(played_by, ("played", "idle"))
    fig["mark_ms"] = last if last is not None else (0.0 if item.marks_ms else None)  # none echoed yet: 0
    cleared = item.last_echo_ms(t_trunc, ("played", "idle", "cleared"))
    fig["cleared_mark_ms"] = cleared if cleared != fig["mark_ms"] else None
    gaps = item.gaps_ms()
    fig["mark_gap_ms"] = float(statistics.median(gaps)) if gaps else None
    return fig


def _item(core: CallerCore, snapshot: dict[str, Any] | None, rec: dict[str, Any] | None,
          barge: BargeInMetrics, t_trunc: int) -> ItemAudio | None:
    """The truncated item's audio at the caller: from the mock's record of when OpenAI sent
    its first delta when known, else the reply the caller was hearing."""
    item_id = (rec or {}).get("item_id")
    for r in (snapshot or {}).get("responses") or []:
        if isinstance(r, dict) and item_id in (r.get("item_ids") or []) and r.get("t_first_audio_ns"):
            found = item_audio(core, int(r["t_first_audio_ns"]), t_trunc)
            if found is not None:
                return found
    anchor = barge.reply_start_ns if barge.reply_start_ns is not None else t_trunc
    return item_audio_playing_at(core, anchor)
