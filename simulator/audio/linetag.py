"""Line tags: an inaudible, call-specific mark on the idle line's silence frames.

Why: the harness must pair each fake call with the mock OpenAI session its
bridge opened *by what was sent* (design.md rule 5), not by a timing window —
a bridge may open its OpenAI socket early, late, or pool it. The fake caller
sends line silence between utterances; it marks each of those 20 ms frames
with its call tag and a sequence number, and the mock reads them back from
what a μ-law (passthrough) bridge appends. Transcoding bridges (A-law, pcm16)
destroy the mark; the harness then falls back to timing.

Frame layout (160 bytes of 8 kHz μ-law, one bit per byte):

* bytes 0..15   — a fixed 16-bit sync pattern (:data:`SYNC`), starting with a 1;
* bytes 16..79  — 64 payload bits, most significant first: the 32-bit call
  tag, the 24-bit sequence number (``seq mod 2**24``), an 8-bit check
  (``crc32`` of the other 56 bits, low byte);
* bytes 80..159 — plain line silence.

A 1 bit is μ-law ``0xFE`` (decodes to +8/32768, about −72 dBFS), a 0 bit is
``0xFF`` (+0, the idle-line code). So the frame's peak is far below any VAD
and below ``callsim.simulator.audio.codec.SILENCE_PEAK`` (−40 dBFS): to every silence test
in the harness it *is* silence, and the mock feeds it to its VAD as digital
silence.

Both functions run per frame (the caller builds one for every idle frame; the
mock reads every frame a μ-law bridge sends), so they are built on C-level
bytes operations — ``format``/``translate``/``int(s, 2)`` — rather than
per-bit Python loops. :func:`read_tag` rejects an ordinary frame after one
``startswith`` on its first 16 bytes.
"""

from __future__ import annotations

import zlib
from typing import Final

__all__ = [
    "FRAME_BYTES",
    "ONE",
    "ZERO",
    "SYNC",
    "SEQ_MOD",
    "tag_frame",
    "read_tag",
]

FRAME_BYTES: Final = 160  # 20 ms of 8 kHz μ-law
ONE: Final = 0xFE  # μ-law +8: a 1 bit, about −72 dBFS
ZERO: Final = 0xFF  # μ-law +0: a 0 bit, the idle-line code
SEQ_MOD: Final = 1 << 24

_SYNC_BITS: Final = "1011001110001011"  # first bit 1 so that all-0xFF silence fails on byte 0
_PAYLOAD_BITS: Final = 64
_TO_WIRE: Final = bytes.maketrans(b"01", bytes([ZERO, ONE]))
#: Wire byte → ASCII bit; any other byte becomes "x", which makes ``int(s, 2)`` fail.
_FROM_WIRE: Final = bytes(
    ord("1") if b == ONE else ord("0") if b == ZERO else ord("x") for b in range(256)
)
SYNC: Final[bytes] = _SYNC_BITS.encode().translate(_TO_WIRE)
_SYNC_LEN: Final = len(SYNC)
_PAYLOAD_END: Final = _SYNC_LEN + _PAYLOAD_BITS
_TAIL: Final[bytes] = bytes([ZERO]) * (FRAME_BYTES - _PAYLOAD_END)
_MASK32: Final = 0xFFFFFFFF


def _check(body56: int) -> int:
    """8-bit check over the call tag and sequence number (low byte of their CRC-32)."""
    return zlib.crc32(body56.to_bytes(7, "big")) & 0xFF


def tag_frame(call_tag: int, seq: int) -> bytes:
    """The 160-byte μ-law silence frame carrying ``call_tag`` (32 bits) and ``seq`` mod 2**24."""
    if not 0 <= call_tag <= _MASK32:
        raise ValueError(f"call_tag must fit in 32 bits, got {call_tag!r}")
    body = (call_tag << 24) | (seq % SEQ_MOD)
    bits = format((body << 8) | _check(body), "064b").encode("ascii")
    return SYNC + bits.translate(_TO_WIRE) + _TAIL


def read_tag(block: bytes) -> tuple[int, int] | None:
    """``(call_tag, seq)`` if ``block`` is a valid tag frame, else None.

    The common case — speech or plain silence — is rejected by the length
    check and one ``startswith`` on the sync pattern (its first byte, 0xFE,
    already fails for the idle line's 0xFF/0x7F).
    """
    if len(block) != FRAME_BYTES or not block.startswith(SYNC):
        return None
    if not block.endswith(_TAIL):
        return None
    try:
        value = int(block[_SYNC_LEN:_PAYLOAD_END].translate(_FROM_WIRE), 2)
    except ValueError:  # a byte other than 0xFE/0xFF in the payload
        return None
    body = value >> 8
    if _check(body) != value & 0xFF:
        return None
    return body >> 24, body & (SEQ_MOD - 1)
