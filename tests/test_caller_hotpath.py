"""The caller core's per-frame shortcuts decide exactly as the slow originals."""

from __future__ import annotations

from callsim.simulator.audio.codec import SILENCE_PEAK, frame_peak
from callsim.simulator.caller.core import is_loud
from hypothesis import given, settings
from hypothesis import strategies as st


def test_is_loud_matches_frame_peak_for_every_byte_value():
    for b in range(256):
        assert is_loud(bytes([b]) * 160) == (frame_peak(bytes([b]) * 160) >= SILENCE_PEAK), b
    assert is_loud(b"") is False


@settings(max_examples=2000)
@given(st.binary(min_size=0, max_size=200), st.integers(0, 255))
def test_is_loud_matches_frame_peak_on_mixed_frames(quiet: bytes, loudest: int):
    # mostly near-silent frames (μ-law 0x7x/0xFx) with one byte anywhere: the threshold matters there
    frame = bytes(0x70 | (b & 0x0F) | (b & 0x80) for b in quiet) + bytes([loudest])
    assert is_loud(frame) == (frame_peak(frame) >= SILENCE_PEAK)
