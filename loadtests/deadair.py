"""Dead air as the caller heard it: silence while the assistant owed the caller something.

:func:`callsim.simulator.measure.metrics` measures ``dead_air_ms`` as the longest silence after the
caller's last utterance until the call ended — right for a scenario whose caller hangs up
after its turn, wrong for a caller that stays on the line (the fault matrix's "never"
moment): once a whole reply has been heard, the silence that follows is the caller's turn,
not the bridge's failure. So here a silent stretch after the last utterance counts when it
ended in audio (the caller waited for it) or when it ran to the end of the call *before*
the reply had been heard whole (the caller was left waiting: a stall, a failed response,
an apology that never came). Frames are the caller's 20 ms ticks (what it played).
"""

from __future__ import annotations

from typing import Any

from callsim.simulator.measure.metrics import Playout
from callsim.simulator.measure.timeline import UtteranceEnd

FRAME_MS = 20


def dead_air_ms(result: Any, reply_ms: float, slack_ms: float = 200.0) -> float:
    """Longest silence (ms) the caller waited through after its last utterance (see the module doc).

    ``reply_ms``: how long the whole reply is; heard to within ``slack_ms``, it counts as whole.
    """
    core = result.core
    if core is None or core.t0_ns is None or not len(core.played_bytes):
        return 0.0
    ends = core.timeline.times(UtteranceEnd)
    if not ends:
        return 0.0
    po = Playout(core)
    a = po.tick_of(ends[-1]) + 1
    if a >= po.n:
        return 0.0
    loud = po.loud[a:]
    heard_after = float(po.played[a:].sum()) / 8.0  # μ-law: 8 bytes per ms
    whole = heard_after >= reply_ms - slack_ms
    longest = 0
    run = 0
    for k in range(len(loud)):
        if loud[k]:
            longest = max(longest, run)  # a wait that ended in audio
            run = 0
        else:
            run += 1
    if not whole:
        longest = max(longest, run)  # left waiting until the call ended
    return float(longest * FRAME_MS)


__all__ = ["dead_air_ms"]
