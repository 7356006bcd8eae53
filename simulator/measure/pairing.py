"""Which mock OpenAI session did each call's bridge open? Decided by what was sent, not by when.

A bridge may open its OpenAI socket before it accepts Twilio's, on ``start``, on the first audio,
or keep one warm; several calls of one scenario may start in the same instant. So the harness never
pairs by a timing window. Each call's idle-line frames carry an inaudible tag naming the call
(:mod:`.linetag`), and the mock records the tags it received: a session that heard call X's tag is
call X's session. That is exact for any bridge that forwards μ-law as it comes.

A bridge that converts the audio (μ-law → pcm16 24 kHz) destroys the tag. Those calls fall back to
*causality and content*: a session can only be a call's if the caller's utterances reached it — the
mock's turns start while that caller was speaking — and the pairing with the smallest total offset
between the caller's speech starts and the mock's ``speech_started`` wins. A session with no turn at
all is paired only if it opened while the call was up, nearest the call's start. Every pairing says
how it was made (``line_tag`` or ``timing``), and a timing pairing of calls that said the same thing
at the same moment says that it may have swapped them.

A call may have **several sessions**: a bridge that renews its OpenAI session before the maximum
duration moves the call to a new one. Every session that heard the call's tag is the call's; so is,
for a call paired by timing, a leftover untagged session whose turns fit this call best. The call's
sessions are ordered by open time (:attr:`Pairing.sessions`), and :attr:`Pairing.snapshot` is their
merged view (:func:`merge_sessions`), so each caller turn is matched with the turn of whichever
session answered it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..caller.call_result import CallResult
from .timeline import SpeechStart

MS = 1_000_000


@dataclass
class Pairing:
    snapshot: dict[str, Any] | None  # the call's session, or the merged view of its sessions
    how: str | None = None  # "line_tag" | "timing" | None (no session)
    note: str = ""
    sessions: list[dict[str, Any]] = field(default_factory=list)  # each of the call's sessions, by open time


#: per-session records joined in session order (``dtmf`` and ``dtmf_ns`` are parallel: both are joined)
_LISTS = ("turns", "responses", "truncates", "errors", "events", "vad_decisions", "invalid_sent", "faults",
          "dtmf", "dtmf_ns")

#: records joined then put in time order: while a bridge switches sessions it may feed both, so an old
#: session's later turn or response must not come before the new one's earlier ones (the metrics pick
#: a caller turn's mock turn and its responses by position in these lists)
_TIMED: dict[str, Callable[[dict[str, Any]], int | None]] = {
    "turns": lambda t: t.get("t_speech_started_ns") or t.get("t_committed_ns"),
    "responses": lambda r: r.get("t_trigger_ns"),
}


def _in_time_order(records: list[Any], when: Callable[[dict[str, Any]], int | None]) -> list[Any]:
    """Stable sort by time; a record with no time (nothing to place it by) keeps its order, at the end."""
    def key(r: Any) -> tuple[bool, int]:
        t = when(r) if isinstance(r, dict) else None
        return (t is None, t or 0)
    return sorted(records, key=key)


def merge_sessions(snaps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One snapshot standing for a call's sessions (ordered by open time): records concatenated in
    order (turns and responses then put in time order), counts summed, the first session's identity
    and configuration, the last one's close.
    ``behaviour_tag`` is the first that differs from the first session's, so a session that ran
    another scenario's behaviour is still caught. ``sessions`` lists each one briefly."""
    if not snaps:
        return None
    if len(snaps) == 1:
        return snaps[0]
    first, last = snaps[0], snaps[-1]
    d = dict(first)
    for key in _LISTS:
        vals = [s.get(key) for s in snaps]
        if all(isinstance(v, list) for v in vals if v is not None):
            d[key] = [x for v in vals if v for x in v]
            if key in _TIMED:
                d[key] = _in_time_order(d[key], _TIMED[key])
        elif all(isinstance(v, int) for v in vals if v is not None):
            d[key] = sum(v or 0 for v in vals)
    counts: dict[str, int] = {}
    for s in snaps:
        for k, v in (s.get("counts") or {}).items():
            counts[k] = counts.get(k, 0) + v
    d["counts"] = counts
    d["audio_in_ms"] = round(sum(float(s.get("audio_in_ms") or 0) for s in snaps), 3)
    d["close"], d["open"] = last.get("close"), last.get("open")
    tags: dict[str, dict[str, int]] = {}
    rx: dict[str, list[list[int]]] = {}
    for s in snaps:
        for t, r in (s.get("line_tags") or {}).items():
            cur = tags.get(t)
            tags[t] = dict(r) if cur is None else {
                "frames": cur["frames"] + r.get("frames", 0),
                "first_rx_ns": min(cur["first_rx_ns"], r.get("first_rx_ns", cur["first_rx_ns"])),
                "last_rx_ns": max(cur["last_rx_ns"], r.get("last_rx_ns", cur["last_rx_ns"]))}
        for t, rows in (s.get("line_tag_rx") or {}).items():
            rx.setdefault(t, []).extend(rows)
    d["line_tags"] = tags
    if rx:
        d["line_tag_rx"] = rx
    d["behaviour_tag"] = next((s.get("behaviour_tag") for s in snaps
                               if s.get("behaviour_tag") != first.get("behaviour_tag")), first.get("behaviour_tag"))
    for key in ("append_ns", "block_ns", "block_crc", "delta_ns"):
        d.pop(key, None)  # per session only: see Pairing.sessions
    d["sessions"] = [{"id": s.get("id"), "t_open_ns": s.get("t_open_ns"), "close": s.get("close"),
                      "behaviour_tag": s.get("behaviour_tag")} for s in snaps]
    return d


def _by_open(snaps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(snaps, key=lambda s: s.get("t_open_ns") or 0)


def call_tag_hex(result: CallResult) -> str | None:
    core = result.core
    tag = getattr(core, "line_tag", None) if core is not None else None
    return None if tag is None else f"{tag:08x}"


def _span(result: CallResult) -> tuple[int, int] | None:
    core = result.core
    if core is None or core.t0_ns is None or not core.timeline:
        return None
    return core.t0_ns, core.timeline.end_ns()  # type: ignore[return-value]


def _speech_starts(result: CallResult) -> list[int]:
    core = result.core
    return core.timeline.times(SpeechStart) if core is not None else []


def _timing_cost(result: CallResult, snap: dict[str, Any]) -> float | None:
    """Total |mock speech_started − caller speech start| over the caller's utterances, in ms; ``None``
    when the session cannot be this call's (it heard speech while this caller was silent or gone)."""
    span = _span(result)
    if span is None:
        return None
    t0, t1 = span
    turns = [t.get("t_speech_started_ns") for t in snap.get("turns") or [] if isinstance(t, dict)]
    turns = [t for t in turns if t is not None]
    starts = _speech_starts(result)
    if not turns:
        opened = snap.get("t_open_ns")
        if opened is None or not (t0 - 10_000 * MS <= opened <= t1):
            return None
        return 1e6 + abs(opened - t0) / MS  # worse than any content match
    if any(t < t0 or t > t1 + 2_000 * MS for t in turns) or not starts:
        return None
    cost = 0.0
    for s in starts:
        after = [t - s for t in turns if t >= s - 200 * MS]
        if not after:
            return None
        cost += min(abs(d) for d in after) / MS
    return cost


def _within(result: CallResult, snap: dict[str, Any]) -> float | None:
    """A further session of this call? It opened, and heard every turn, while the call was up: the
    smallest distance from the call's start wins (content cannot say more once the audio is converted)."""
    span = _span(result)
    opened = snap.get("t_open_ns")
    if span is None or opened is None or not (span[0] <= opened <= span[1]):
        return None
    turns = [t.get("t_speech_started_ns") for t in snap.get("turns") or [] if isinstance(t, dict)]
    if any(t is not None and not (span[0] <= t <= span[1] + 2_000 * MS) for t in turns):
        return None
    return (opened - span[0]) / MS


def pair_calls(results: list[CallResult], snapshots: list[dict[str, Any]]) -> list[Pairing]:
    """One :class:`Pairing` per call, in order; each snapshot is given to at most one call."""
    out = [Pairing(None) for _ in results]
    free = list(range(len(snapshots)))
    # 1. by line tag: exact
    for i, r in enumerate(results):
        tag = call_tag_hex(r)
        if tag is None:
            continue
        t0 = r.core.t0_ns if r.core is not None else None
        mine = [j for j in free if tag in (snapshots[j].get("line_tags") or {})
                # causality: a frame of this call cannot have reached the mock before the call began
                and (t0 is None or (snapshots[j]["line_tags"][tag].get("first_rx_ns") or t0) >= t0)]
        if mine:
            sessions = _by_open([snapshots[j] for j in mine])
            out[i] = Pairing(merge_sessions(sessions), "line_tag", sessions=sessions)
            for j in mine:
                free.remove(j)
    # 2. the rest by causality and content
    rest = [i for i, p in enumerate(out) if p.snapshot is None and results[i].core is not None]
    cands = sorted((c, i, j) for i in rest for j in free
                   if not (snapshots[j].get("line_tags") or {})  # tagged sessions belong to other calls
                   and (c := _timing_cost(results[i], snapshots[j])) is not None)
    taken: set[int] = set()
    for c, i, j in cands:
        if out[i].snapshot is not None or j in taken:
            continue
        rivals = [k for cc, k, jj in cands if jj == j and k != i and abs(cc - c) < 20]
        note = ("; calls " + ", ".join(str(k) for k in [i, *rivals]) + " said the same thing at the same "
                "moment and may be swapped") if rivals else ""
        out[i] = Pairing(snapshots[j], "timing", "no line tag reached the mock (the bridge converts the "
                         "audio): paired by when the caller's speech reached it" + note, sessions=[snapshots[j]])
        taken.add(j)
    # 3. sessions left over: a renewal's further sessions of a call paired by timing, where they fit best
    timed = [i for i, p in enumerate(out) if p.how == "timing"]
    for j in free:
        if j in taken or (snapshots[j].get("line_tags") or {}):
            continue
        costs = [(c, i) for i in timed if (c := _within(results[i], snapshots[j])) is not None]
        if costs:
            out[min(costs)[1]].sessions.append(snapshots[j])
    for p in out:
        if p.how == "timing" and len(p.sessions) > 1:
            p.sessions = _by_open(p.sessions)
            p.snapshot = merge_sessions(p.sessions)
    return out
