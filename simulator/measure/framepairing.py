"""Pair the frames a caller sent with the audio blocks the mock received, by content.

Why not by position ("k-th frame sent → k-th append received"): one frame dropped at
the call start (a bridge discarding audio until its OpenAI socket is open) would then
read as +20 ms on *every* frame instead of one lost frame, and a bridge batching frames
into larger appends could not be measured at all. Here each
frame is identified by the CRC-32 of its 160 μ-law bytes (the caller records it;
the mock records the CRC of each 160-byte block of what it received, see
:mod:`callsim.simulator.mock.fingerprint`), so a frame pairs with the block that carried it.

The pairing is a monotone alignment — frames are never reordered, some are lost, some
may be duplicated — built in three passes, numpy-vectorised (tens of thousands of
frames take milliseconds):

1. **Anchors (content alone).** A CRC that occurs equally often among the sent frames
   and the received blocks pairs occurrence by occurrence (its q-th sending with its
   q-th receipt); a frame seen once on each side is the plainest case. Pairs that
   would be non-causal (received before sent: one clock for all processes) are
   discarded, and of the rest the longest chain monotone on both sides is kept.
2. **Lossless gaps (order).** Between two consecutive anchors (and before the first,
   after the last), if the sent frames and the received blocks carry the same CRCs in
   the same order, they pair in order.
3. **Other gaps (order + time, the ambiguity rule).** Where a gap lost or gained
   frames, content cannot say *which* of a run of identical frames (line silence
   0xFF, say) went missing: every block pairs with the frame of the same content,
   inside its gap, whose latency is closest to the reference latency — the median
   latency of the anchors around the previous one (the following one before the
   first anchor) — and is causal. With no anchor at all (an all-silence call) the
   reference is 0: each block pairs with the latest identical frame sent before it
   arrived, i.e. the smallest causal latency; that is right while the true latency
   stays under one frame (20 ms). Two blocks claiming one frame: the closer keeps it,
   the other is a **duplicate**; a block that would break the order is **unpaired**.

Callers that tag their idle line (simulator/audio/linetag.py) make silence frames unique,
so almost everything is settled in pass 1; the pairing does not depend on it.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

FRAME_MS = 20
_SMOOTH = 5  # anchors in the running median of the reference latency


@dataclass(frozen=True)
class FramePairing:
    """Which sent frame went out as which received block, and what happened to the rest.

    ``sent``/``recv`` are parallel index arrays (increasing) into the inputs;
    ``latency_ns`` = receipt − sending per pair. Lost frames are split at the first
    paired one: **lost at start** are the frames before it (audio the bridge dropped
    before it started forwarding — never a latency), **lost later** every unpaired one
    after it, of which **lost at end** the ones after the last paired frame (the
    hang-up's in-flight tail). Received blocks that paired with nothing are
    **duplicated** (a second copy of a frame already paired) or **unpaired**.
    """

    sent: np.ndarray
    recv: np.ndarray
    latency_ns: np.ndarray
    n_sent: int
    n_recv: int
    lost_start: int
    lost_later: int
    lost_end: int
    duplicated: int
    unpaired: int
    anchors: int

    @property
    def paired(self) -> int:
        return int(len(self.sent))

    @property
    def lost_start_ms(self) -> int:
        return self.lost_start * FRAME_MS

    @property
    def lost_later_ms(self) -> int:
        return self.lost_later * FRAME_MS

    def lost_mask(self) -> np.ndarray:
        """Per sent frame: lost after the first paired frame (``lost_later``)."""
        m = np.zeros(self.n_sent, dtype=bool)
        if self.paired:
            m[self.sent[0]:] = True
            m[self.sent] = False
        return m

    def summary(self) -> dict[str, Any]:
        """The counts as plain numbers (JSON), with the lost audio in ms."""
        return {"sent": self.n_sent, "received": self.n_recv, "paired": self.paired, "anchors": self.anchors,
                "lost_start": self.lost_start, "lost_start_ms": self.lost_start_ms,
                "lost_later": self.lost_later, "lost_later_ms": self.lost_later_ms, "lost_end": self.lost_end,
                "duplicated": self.duplicated, "unpaired": self.unpaired}


def pair_frames(sent_ns: ArrayLike, sent_crc: ArrayLike, recv_ns: ArrayLike, recv_crc: ArrayLike) -> FramePairing:
    """Pair caller frames (send time ns, CRC, in sending order) with received blocks
    (arrival ns, CRC, in arrival order) by content; see the module docstring for the rule."""
    s_ns, r_ns = np.asarray(sent_ns, dtype=np.int64), np.asarray(recv_ns, dtype=np.int64)
    s_crc, r_crc = np.asarray(sent_crc, dtype=np.int64), np.asarray(recv_crc, dtype=np.int64)
    n, m = len(s_ns), len(r_ns)
    if len(s_crc) != n or len(r_crc) != m:
        raise ValueError("times and CRCs must be parallel arrays")
    if n == 0 or m == 0:
        return _result(np.zeros(0, np.int64), np.zeros(0, np.int64), s_ns, r_ns, 0, 0)
    _, ids = np.unique(np.concatenate([s_crc, r_crc]), return_inverse=True)
    s_id, r_id = ids[:n].astype(np.int64), ids[n:].astype(np.int64)

    ai, aj = _anchors(s_id, r_id, s_ns, r_ns)
    choice = np.full(m, -1, dtype=np.int64)  # the sent frame each block pairs with
    err = np.zeros(m, dtype=np.int64)  # how far from the reference latency (ns); anchors 0
    choice[aj] = ai
    gap_j = _gap_of(aj, m)  # gap g = between anchors g-1 and g (0: before the first)
    lo = np.concatenate([[-1], ai])  # sent index bounds (exclusive) of each gap
    hi = np.concatenate([ai, [n]])
    jlo = np.concatenate([[-1], aj])
    free = choice < 0
    _in_order(s_id, r_id, s_ns, r_ns, lo, hi, jlo, gap_j, free, choice)
    free = choice < 0
    if free.any():
        ref = _reference_latency(s_ns[ai], r_ns[aj], gap_j)
        _by_time(s_id, r_id, s_ns, r_ns, lo, hi, gap_j, ref, free, choice, err)

    js = np.flatnonzero(choice >= 0)
    is_ = choice[js]
    # two blocks on one frame: the one nearer the reference keeps it, the other is a duplicate
    order = np.lexsort((err[js], is_))
    first = np.ones(len(order), dtype=bool)
    first[1:] = is_[order][1:] != is_[order][:-1]
    keep = np.sort(order[first])
    dup = len(js) - len(keep)
    js, is_ = js[keep], is_[keep]
    mono = _longest_increasing(is_)
    return _result(is_[mono], js[mono], s_ns, r_ns, len(ai), dup)


def _result(si: np.ndarray, rj: np.ndarray, s_ns: np.ndarray, r_ns: np.ndarray, anchors: int,
            dup: int) -> FramePairing:
    n, m, p = len(s_ns), len(r_ns), len(si)
    start = int(si[0]) if p else n
    return FramePairing(sent=si, recv=rj, latency_ns=r_ns[rj] - s_ns[si], n_sent=n, n_recv=m,
                        lost_start=start, lost_later=n - start - p, lost_end=(n - 1 - int(si[-1])) if p else 0,
                        duplicated=dup, unpaired=m - p - dup, anchors=anchors)


def _occurrence(ids: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements carry the same id."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(ids)]))
    occ = np.empty(len(ids), dtype=np.int64)
    occ[order] = np.arange(len(ids)) - group_start
    return occ


def _anchors(s_id: np.ndarray, r_id: np.ndarray, s_ns: np.ndarray, r_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: CRCs seen equally often on both sides, paired occurrence by occurrence."""
    k = int(max(s_id.max(), r_id.max())) + 1
    same = np.bincount(s_id, minlength=k) == np.bincount(r_id, minlength=k)
    es, er = np.flatnonzero(same[s_id]), np.flatnonzero(same[r_id])
    # both sides hold the same (id, occurrence) keys once each: sorted, they line up
    span = max(len(s_id), len(r_id)) + 1
    ks = s_id[es] * span + _occurrence(s_id)[es]
    kr = r_id[er] * span + _occurrence(r_id)[er]
    ai, aj = es[np.argsort(ks)], er[np.argsort(kr)]
    causal = r_ns[aj] >= s_ns[ai]
    ai, aj = ai[causal], aj[causal]
    order = np.argsort(ai)
    ai, aj = ai[order], aj[order]
    mono = _longest_increasing(aj)
    return ai[mono], aj[mono]


def _gap_of(aj: np.ndarray, m: int) -> np.ndarray:
    """For each received block, the gap it lies in: g = number of anchors before it."""
    return np.searchsorted(aj, np.arange(m), side="left")


def _in_order(s_id: np.ndarray, r_id: np.ndarray, s_ns: np.ndarray, r_ns: np.ndarray, lo: np.ndarray,
              hi: np.ndarray, jlo: np.ndarray, gap_j: np.ndarray, free: np.ndarray, choice: np.ndarray) -> None:
    """Pass 2: a gap with as many blocks as frames, carrying the same CRCs in order (and each
    received after it was sent), pairs in order."""
    js = np.flatnonzero(free)
    if not len(js):
        return
    g = gap_j[js]
    n_frames = hi - lo - 1
    n_blocks = np.bincount(g, minlength=len(lo))
    cand = lo[g] + (js - jlo[g])  # the frame at the same offset in the gap
    fits = (n_frames[g] == n_blocks[g])
    ok = fits.copy()
    ok[fits] = (s_id[cand[fits]] == r_id[js[fits]]) & (s_ns[cand[fits]] <= r_ns[js[fits]])
    bad_gaps = np.bincount(g[~ok], minlength=len(lo)) > 0
    take = fits & ~bad_gaps[g]
    choice[js[take]] = cand[take]


def _reference_latency(a_sent: np.ndarray, a_recv: np.ndarray, gap_j: np.ndarray) -> np.ndarray:
    """Per received block: the running-median anchor latency at the anchor before its gap
    (the first anchor's for the gap before it; 0 with no anchors)."""
    if not len(a_sent):
        return np.zeros(len(gap_j), dtype=np.int64)
    lat = a_recv - a_sent
    half = _SMOOTH // 2
    padded = np.pad(lat, half, mode="edge")
    smooth = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)
    return smooth[np.maximum(gap_j - 1, 0)].astype(np.int64)


def _by_time(s_id: np.ndarray, r_id: np.ndarray, s_ns: np.ndarray, r_ns: np.ndarray, lo: np.ndarray,
             hi: np.ndarray, gap_j: np.ndarray, ref: np.ndarray, free: np.ndarray, choice: np.ndarray,
             err: np.ndarray) -> None:
    """Pass 3: each remaining block takes the identical frame in its gap nearest the reference latency."""
    n = len(s_id)
    js = np.flatnonzero(free)
    g = gap_j[js]
    # where the frame sent at (arrival − reference) sits, kept inside the gap
    pos = np.searchsorted(s_ns, r_ns[js] - ref[js], side="right")
    pos = np.clip(pos, lo[g] + 1, hi[g])
    # frames sorted by (CRC id, index): the identical frames just before and from pos
    order = np.argsort(s_id, kind="stable")
    keys = s_id[order] * (n + 1) + order
    q = np.searchsorted(keys, r_id[js] * (n + 1) + pos)
    best = np.full(len(js), -1, dtype=np.int64)
    best_err = np.full(len(js), np.iinfo(np.int64).max, dtype=np.int64)
    for qq in (q - 1, q):
        ok = (qq >= 0) & (qq < n)
        c = np.where(ok, order[np.clip(qq, 0, n - 1)], 0)
        ok &= (s_id[c] == r_id[js]) & (c > lo[g]) & (c < hi[g]) & (s_ns[c] <= r_ns[js])
        e = np.abs(r_ns[js] - s_ns[c] - ref[js])
        better = ok & (e < best_err)
        best[better], best_err[better] = c[better], e[better]
    found = best >= 0
    choice[js[found]] = best[found]
    err[js[found]] = best_err[found]


def _longest_increasing(a: np.ndarray) -> np.ndarray:
    """Indices of a longest strictly increasing subsequence of ``a`` (all of it when already increasing)."""
    if len(a) < 2 or bool(np.all(np.diff(a) > 0)):
        return np.arange(len(a))
    tails: list[int] = []  # a-value ending the best chain of each length
    tail_at: list[int] = []  # ... and its position
    prev = np.full(len(a), -1, dtype=np.int64)
    for k, v in enumerate(a.tolist()):
        p = bisect_left(tails, v)
        if p == len(tails):
            tails.append(v)
            tail_at.append(k)
        else:
            tails[p] = v
            tail_at[p] = k
        prev[k] = tail_at[p - 1] if p else -1
    out = []
    k = tail_at[-1]
    while k >= 0:
        out.append(k)
        k = int(prev[k])
    return np.array(out[::-1], dtype=np.int64)
