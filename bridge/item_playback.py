"""What Twilio was given of one assistant audio item, and what the caller has heard of it.

The barge-in truncate is only as true as this estimate: the core names every forwarded delta
with a mark, and an echoed mark says how far playback got; between echoes playback advances a
20 ms frame at a time (protocols.md, Twilio playback).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_PENDING_MARKS = 3000  # marks not yet echoed per item: 60 s of 20 ms deltas
FRAME_BYTES = 160  # Twilio plays 20 ms frames of μ-law
FRAME_NS = 20_000_000
# A mark echo reaches us a little after Twilio's frame boundary (transit, scheduling);
# count from a few ms earlier so a boundary crossed in that gap is not missed.
ECHO_SLACK_NS = 3_000_000


@dataclass
class ItemPlayback:
    """What Twilio was given of one assistant audio item, and what it has played."""

    item_id: str
    seq: int
    response_id: str | None
    received: int = 0  # bytes received from OpenAI (output format)
    sent: int = 0  # μ-law bytes forwarded to Twilio
    acked: int = 0  # μ-law bytes confirmed played by an echoed mark
    t_ref_ns: int | None = None  # when playback was at `acked` (mark echo, or first send)
    # end bytes of marks not yet echoed; past the bound the oldest is forgotten (the
    # playback estimate is then capped by a later mark: a little generous, never wrong by more)
    pending: deque[int] = field(default_factory=lambda: deque(maxlen=MAX_PENDING_MARKS))
    transcript: str = ""

    def played(self, now_ns: int) -> int:
        """μ-law bytes of this item the caller has heard by ``now_ns`` (best estimate).

        Twilio plays 20 ms frames: when the mark for byte ``acked`` comes back,
        the next frame starts playing at once, and one more starts every 20 ms.
        A frame that has started is heard (a ``clear`` cannot recall it), so
        count whole frames begun since the reference point. Never past what was
        sent, nor more than a frame past the next mark not yet echoed (that mark
        says the audio before it has not all played).
        """
        if self.t_ref_ns is None or self.sent <= self.acked:
            return min(self.acked, self.sent)
        frames = max(0, now_ns - self.t_ref_ns + ECHO_SLACK_NS) // FRAME_NS + 1
        est = self.acked + frames * FRAME_BYTES
        cap = min(self.sent, self.pending[0] + FRAME_BYTES - 1) if self.pending else self.sent
        return max(self.acked, min(est, cap))

    @property
    def playing(self) -> bool:
        return self.sent > self.acked
