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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..caller.call_result import CallResult
from .timeline import SpeechStart

MS = 1_000_000


@dataclass
class Pairing:
    snapshot: dict[str, Any] | None
    how: str | None = None  # "line_tag" | "timing" | None (no session)
    note: str = ""


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
        best = max((j for j in free if tag in (snapshots[j].get("line_tags") or {})
                    # causality: a frame of this call cannot have reached the mock before the call began
                    and (t0 is None or (snapshots[j]["line_tags"][tag].get("first_rx_ns") or t0) >= t0)),
                   key=lambda j: snapshots[j]["line_tags"][tag].get("frames", 0), default=None)
        if best is not None:
            out[i] = Pairing(snapshots[best], "line_tag")
            free.remove(best)
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
                         "audio): paired by when the caller's speech reached it" + note)
        taken.add(j)
    return out
