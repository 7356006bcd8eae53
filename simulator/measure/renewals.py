"""Session renewal seen from the wire: how many OpenAI sessions a call used, and what the caller's
audio went through at each switch-over.

A bridge that renews its OpenAI session (the Realtime API ends one at its maximum duration) moves
the call from one mock session to the next; the harness sees that only in what the sessions
received (design.md rule 5). Each caller frame is identified by the CRC-32 of its μ-law bytes; the
mock records the arrival time and CRC of every 20 ms block each session received
(:mod:`callsim.simulator.mock.fingerprint`), so the frames are paired with the union of the
sessions' blocks by content (:mod:`.framepairing`) and each paired frame is known to have reached
a given session at a given time.

* ``caller_audio_lost_ms``: caller frames that reached no session, after the first one that reached
  any (frames before it are the bridge's set-up, measured elsewhere) and before the last
  :data:`END_SLACK_MS` of the call (frames in flight when it ended).
* ``switch_gap_ms`` of a switch: the gap the switch made in the caller's audio — the frames missing
  between the last frame the old session received and the first the new one received (20 ms each),
  plus how much later than its predecessor the first frame reached the new session beyond its
  sending interval (receive-time difference minus send-time difference, i.e. minus one frame period
  for consecutive frames: the caller's own send jitter does not count). A seamless switch is 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..caller.core import CallerCore
from .framepairing import FRAME_MS, pair_frames
from .measurements import RenewalMetrics

MS = 1_000_000
END_SLACK_MS = 200.0

#: the expectations judged from the sessions' per-frame receive times and CRCs: a run fetches those
#: (four arrays per session, over HTTP for an external mock) only when the scenario sets one of them
FRAME_TIMED = ("switch_gap_max_ms", "no_caller_audio_lost")


def needs_frame_timings(expect: Any) -> bool:
    """Does a scenario's ``[expect]`` set an expectation measured from per-frame receive times?"""
    return any(getattr(expect, name, None) not in (None, False) for name in FRAME_TIMED)


def measure_renewals(core: CallerCore, sessions: list[dict[str, Any]]) -> RenewalMetrics:
    """What the call's mock sessions (ordered by open time) received of the caller's audio."""
    m = RenewalMetrics(sessions=len(sessions), renewals=max(0, len(sessions) - 1),
                       session_ids=[str(s.get("id")) for s in sessions])
    if not sessions:
        m.note = "no mock session"
        return m
    blocks = [(np.asarray(s.get("block_ns") or [], dtype=np.int64), np.asarray(s.get("block_crc") or [], dtype=np.int64))
              for s in sessions]
    if not any(len(ns) for ns, _ in blocks) or any("block_ns" not in s for s in sessions):
        m.note = ("not measured: no per-frame receive times from the mock (a run fetches them only for "
                  + " and ".join(FRAME_TIMED) + ")")
        return m
    r_ns = np.concatenate([ns for ns, _ in blocks])
    r_crc = np.concatenate([crc for _, crc in blocks])
    r_sess = np.concatenate([np.full(len(ns), k, dtype=np.int64) for k, (ns, _) in enumerate(blocks)])
    order = np.argsort(r_ns, kind="stable")
    r_ns, r_crc, r_sess = r_ns[order], r_crc[order], r_sess[order]
    s_ns = np.frombuffer(core.media_sent_ns, dtype=np.int64) if len(core.media_sent_ns) else np.zeros(0, np.int64)
    s_crc = np.asarray(core.media_sent_crc, dtype=np.int64)
    fp = pair_frames(s_ns, s_crc, r_ns, r_crc)
    if not fp.paired:
        m.note = ("not measured: no caller frame was found in what the sessions received (the bridge converts "
                  "the audio, so frames cannot be recognised by content)")
        return m
    end_ns = core.timeline.end_ns() if core.timeline else int(s_ns[-1])
    lost = fp.lost_mask() & (s_ns < end_ns - END_SLACK_MS * MS)
    m.caller_audio_lost_ms = float(lost.sum() * FRAME_MS)
    sess_of_pair = r_sess[fp.recv]
    t0 = core.t0_ns or 0
    for k in range(1, len(sessions)):
        old, new = np.flatnonzero(sess_of_pair == k - 1), np.flatnonzero(sess_of_pair == k)
        sw: dict[str, Any] = {"from": m.session_ids[k - 1], "to": m.session_ids[k], "gap_ms": None,
                              "frames_missing": None, "t_ms": None}
        if len(old) and len(new):
            a = old[np.argmax(fp.recv[old])]  # the last frame the old session received
            b = new[np.argmin(fp.recv[new])]  # the first the new one received
            ia, ib = int(fp.sent[a]), int(fp.sent[b])
            missing = max(0, ib - ia - 1)
            late_ns = (int(r_ns[fp.recv[b]]) - int(r_ns[fp.recv[a]])) - (int(s_ns[ib]) - int(s_ns[ia]))
            sw.update(gap_ms=round(missing * FRAME_MS + max(0, late_ns) / MS, 1), frames_missing=missing,
                      t_ms=round((int(r_ns[fp.recv[b]]) - t0) / MS))
        m.switches.append(sw)
    gaps = [s["gap_ms"] for s in m.switches if s["gap_ms"] is not None]
    m.switch_gap_ms = max(gaps) if gaps else None
    if len(gaps) < len(m.switches):
        m.note = "a switch could not be measured: one of its sessions received no caller frame"
    return m
