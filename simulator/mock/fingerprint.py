"""Content fingerprints of the input audio, one per 20 ms block, with its arrival time.

Why: a per-frame latency measured as "k-th caller frame → k-th append" is only right
while the bridge forwards every frame, one per append. A bridge that drops its first
frames (sent before its OpenAI socket opened) or batches frames into larger appends
shifts that index pairing for the rest of the call. A CRC of each 20 ms block of the
audio *as received* lets the harness pair frames by what they carried instead
(:mod:`callsim.simulator.measure.framepairing`).

Blocks are cut from the input *stream*, not per append: the bytes left over from one
append (a bridge re-chunking at odd sizes) start the next block, so block *b* always
covers bytes ``[b·size, (b+1)·size)`` of what arrived. A block's time is the arrival of
the append that completed it. For G.711 a block is 160 bytes — exactly one caller
frame, so its CRC equals the caller's CRC of that frame when the bridge passes μ-law
through. Transcoded audio (pcm16, 960-byte blocks) is fingerprinted too but cannot
match the caller's μ-law CRCs; pairing then finds nothing, which it reports.

Cost: one CRC32 per 160-byte append, a small share of what an append costs the mock in all
(``loadtests/mock_capacity.py`` measures the whole).
"""

from __future__ import annotations

from array import array
from zlib import crc32

BLOCK_MS = 20


class BlockPrints:
    """Arrival time and CRC-32 of each 20 ms block of one session's input audio.

    Bounded like the mock's other per-append timings: at most ``cap`` blocks are kept
    (the first ones); past that, nothing more is recorded.
    """

    __slots__ = ("cap", "ns", "crc", "_part", "_size")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.ns = array("q")
        self.crc = array("I")
        self._part = b""  # the bytes of an unfinished block
        self._size = 0

    def add(self, now_ns: int, data: bytes, size: int) -> None:
        """Record the blocks ``data`` completes; ``size`` = bytes per 20 ms in the input format."""
        crcs = self.crc
        if len(crcs) >= self.cap:
            return
        if len(data) == size and not self._part:  # the usual case: one frame per append
            crcs.append(crc32(data))
            self.ns.append(now_ns)
            return
        if size != self._size:  # the input format changed: a partial block of the old one is void
            self._size, self._part = size, b""
        if self._part:
            data = self._part + data
        whole = len(data) - len(data) % size
        view = memoryview(data)
        for o in range(0, whole, size):
            if len(crcs) >= self.cap:
                break
            crcs.append(crc32(view[o:o + size]))
            self.ns.append(now_ns)
        self._part = bytes(view[whole:])

    def timings(self) -> dict[str, list[int]]:
        """The snapshot's ``block_ns`` / ``block_crc`` (parallel lists)."""
        return {"block_ns": self.ns.tolist(), "block_crc": self.crc.tolist()}
