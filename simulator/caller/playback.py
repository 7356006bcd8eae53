"""Twilio's outbound playback buffer, emulated (protocols.md 1.3).

Twilio queues the audio an app sends and plays it in arrival order at exactly
8 kHz, however fast it arrives. ``mark`` messages sit in the same queue: one is
echoed back when the audio queued before it has *finished* playing, or at once if
nothing is queued or playing. ``clear`` drops every unplayed byte and echoes all
pending marks immediately — so an echoed mark means "played OR cleared".

This is a sans-IO object driven by the caller's 20 ms clock: each :meth:`tick`
plays one 160-byte frame. A frame that starts playing at tick *k* finishes at
tick *k+1*, so a mark that follows it is echoed at *k+1*. Partial frames (less
than 160 bytes queued) are padded with line silence and counted.

Memory is bounded: audio beyond ``max_queued_bytes`` is dropped and counted
(Twilio's own limit is undocumented; 10 minutes of audio is far beyond any
sane reply).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..audio.codec import FRAME_BYTES, SILENCE_BYTE

_SILENCE = bytes([SILENCE_BYTE]) * FRAME_BYTES


@dataclass
class _Mark:
    name: str


@dataclass(frozen=True)
class Frame:
    """What one tick played."""

    audio: bytes  # always FRAME_BYTES long; silence-padded
    played_bytes: int  # bytes of app audio in it (0 = idle)
    echoed: tuple[str, ...]  # mark names echoed at the start of this tick (played)


class Playback:
    def __init__(self, max_queued_bytes: int = 8000 * 600) -> None:
        self._queue: deque[bytes | _Mark] = deque()
        self._head_offset = 0  # bytes of the head chunk already played
        self.queued_bytes = 0
        self.max_queued_bytes = max_queued_bytes
        self._passed: list[str] = []  # marks reached inside the frame now playing
        self._playing = False  # a frame with app audio is playing until the next tick
        # counters
        self.bytes_received = 0
        self.bytes_played = 0
        self.bytes_cleared = 0
        self.bytes_dropped = 0  # over max_queued_bytes
        self.partial_frames = 0

    # -- what the app sent -------------------------------------------------

    def add_audio(self, payload: bytes) -> int:
        """Queue audio; returns how many bytes were dropped for lack of room."""
        self.bytes_received += len(payload)
        room = self.max_queued_bytes - self.queued_bytes
        dropped = max(0, len(payload) - room)
        if dropped:
            payload = payload[: len(payload) - dropped]
            self.bytes_dropped += dropped
        if payload:
            self._queue.append(payload)
            self.queued_bytes += len(payload)
        return dropped

    def add_mark(self, name: str) -> bool:
        """Queue a mark. Returns True if it is echoed at once (nothing buffered or playing)."""
        if not self._queue and not self._playing and not self._passed:
            return True
        self._queue.append(_Mark(name))
        return False

    def clear(self) -> tuple[int, tuple[str, ...]]:
        """Drop unplayed audio; return (bytes dropped, pending mark names in queue order).

        The frame already playing is not recalled (it is on the wire), but marks
        behind it are echoed now, as Twilio does.
        """
        names = list(self._passed)
        self._passed.clear()
        dropped = self.queued_bytes
        for item in self._queue:
            if isinstance(item, _Mark):
                names.append(item.name)
        self._queue.clear()
        self._head_offset = 0
        self.queued_bytes = 0
        self.bytes_cleared += dropped
        return dropped, tuple(names)

    @property
    def pending_marks(self) -> int:
        return len(self._passed) + sum(1 for i in self._queue if isinstance(i, _Mark))

    @property
    def busy(self) -> bool:
        """True while audio is queued or still playing."""
        return self._playing or self.queued_bytes > 0

    # -- the 20 ms clock ------------------------------------------------------

    def tick(self) -> Frame:
        """Finish the frame that was playing, then start playing the next one."""
        echoed = list(self._passed)
        self._passed.clear()
        # Marks at the head follow audio that has now fully played.
        q = self._queue
        while q and isinstance(q[0], _Mark):
            echoed.append(q.popleft().name)  # type: ignore[union-attr]

        need = FRAME_BYTES
        parts: list[bytes] = []
        while need and q:
            head = q[0]
            if isinstance(head, _Mark):
                # Reached inside this frame: played once the frame ends.
                self._passed.append(head.name)
                q.popleft()
                continue
            avail = len(head) - self._head_offset
            take = min(avail, need)
            parts.append(head[self._head_offset : self._head_offset + take])
            need -= take
            if take == avail:
                q.popleft()
                self._head_offset = 0
            else:
                self._head_offset += take

        played = FRAME_BYTES - need
        self.queued_bytes -= played
        self.bytes_played += played
        self._playing = played > 0
        if played == 0:
            return Frame(_SILENCE, 0, tuple(echoed))
        if need:
            self.partial_frames += 1
            parts.append(_SILENCE[:need])
        return Frame(b"".join(parts) if len(parts) > 1 else parts[0], played, tuple(echoed))
