"""Which call is this audio from? The line tags a μ-law session's appends carry.

The fake caller marks each idle-line frame with its call tag and a sequence
number (``callsim.simulator.audio.linetag``). A passthrough (μ-law) bridge forwards those
frames untouched, so the mock can say which calls' audio reached each session
and when, and the harness pairs calls with sessions by what was sent rather
than by a timing window (design.md rule 5). Transcoding bridges (A-law, pcm16)
destroy the mark: nothing is recorded for them and the harness falls back to
timing.

Appends are scanned in 160-byte blocks from their start: Twilio frames are
160 bytes and a bridge that batches frames keeps their boundaries; one that
re-cuts them at other offsets reads no tags (timing again). A tag frame is
−72 dBFS line silence, so :meth:`LineTagLog.observe` also returns the append
as the VAD should hear it — tag blocks as digital silence (0xFF) — which makes
a tagged idle line cost the VAD exactly what an untagged one does and leaves
its decisions unchanged. The input buffer keeps the original bytes (echo mode
must return what was sent, tags included, for the bit-exact codec check).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from ..audio.linetag import FRAME_BYTES, read_tag

__all__ = ["LineTagLog", "MAX_RX_ENTRIES", "MAX_TAGS"]

#: ``(tag, seq, rx_ns)`` entries kept per session for the full snapshot (a minute of tagged frames).
MAX_RX_ENTRIES: Final = 3000
#: Distinct call tags counted per session; more can only come from a confused bridge
#: (or a hostile client), and later ones are counted in ``overflow`` only.
MAX_TAGS: Final = 64
_SILENT_BLOCK: Final = b"\xff" * FRAME_BYTES


class LineTagLog:
    """Per-session record of the line tags seen in appended μ-law audio."""

    __slots__ = ("_tags", "_rx", "overflow")

    def __init__(self) -> None:
        self._tags: dict[int, list[int]] = {}  # tag -> [frames, first_rx_ns, last_rx_ns]
        self._rx: deque[tuple[int, int, int]] = deque(maxlen=MAX_RX_ENTRIES)
        self.overflow = 0  # tag frames whose tag came after MAX_TAGS others

    def observe(self, data: bytes, now_ns: int) -> bytes:
        """Record the tags in ``data`` (μ-law, arrived at ``now_ns``); return it as the VAD hears it.

        The usual append (one untagged 160-byte frame) costs one ``read_tag``
        rejection and returns ``data`` itself.
        """
        n = len(data)
        if n == FRAME_BYTES:  # the usual Twilio-sized append: no slicing, no join
            got = read_tag(data)
            if got is None:
                return data
            self._record(got[0], got[1], now_ns)
            return _SILENT_BLOCK
        if n < FRAME_BYTES:
            return data
        parts: list[bytes] | None = None
        pos = 0  # end of the last tag block replaced
        for off in range(0, n - FRAME_BYTES + 1, FRAME_BYTES):
            got = read_tag(data[off : off + FRAME_BYTES])
            if got is None:
                continue
            self._record(got[0], got[1], now_ns)
            if parts is None:
                parts = []
            parts.append(data[pos:off])
            parts.append(_SILENT_BLOCK)
            pos = off + FRAME_BYTES
        if parts is None:
            return data
        parts.append(data[pos:])
        return b"".join(parts)

    def _record(self, tag: int, seq: int, now_ns: int) -> None:
        rec = self._tags.get(tag)
        if rec is None:
            if len(self._tags) >= MAX_TAGS:
                self.overflow += 1
                return
            self._tags[tag] = [1, now_ns, now_ns]
        else:
            rec[0] += 1
            rec[2] = now_ns
        self._rx.append((tag, seq, now_ns))

    def summary(self) -> dict[str, dict[str, int]]:
        """``{tag_hex: {"frames", "first_rx_ns", "last_rx_ns"}}`` (tag_hex: 8 lowercase hex digits)."""
        return {f"{t:08x}": {"frames": r[0], "first_rx_ns": r[1], "last_rx_ns": r[2]}
                for t, r in self._tags.items()}

    def rx(self) -> dict[str, list[list[int]]]:
        """``{tag_hex: [[seq, rx_ns], ...]}`` for the last :data:`MAX_RX_ENTRIES` tag frames, in arrival order."""
        out: dict[str, list[list[int]]] = {}
        for tag, seq, t in self._rx:
            key = f"{tag:08x}"
            lst = out.get(key)
            if lst is None:
                out[key] = lst = []
            lst.append([seq, t])
        return out

    def as_snapshot(self, full: bool) -> dict[str, Any]:
        """The snapshot keys: ``line_tags`` always, ``line_tag_rx`` (and any overflow) in the full one."""
        d: dict[str, Any] = {"line_tags": self.summary()}
        if full:
            d["line_tag_rx"] = self.rx()
            if self.overflow:
                d["line_tags_overflow"] = self.overflow
        return d
