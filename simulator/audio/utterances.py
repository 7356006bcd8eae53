"""Fixtures as the caller sends them: 8 kHz μ-law, cut into base64 20 ms frames.

Converting a fixture (soxr + libsndfile) and base64-encoding its frames costs
far more than sending them, and a load test plays the same few fixtures in
hundreds of calls, so each fixture is converted once per process and shared.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass

from .codec import FRAME_BYTES, FRAME_MS, SILENCE_BYTE, to_ulaw_8k
from .fixtures import FixtureLibrary, default_library


@dataclass(frozen=True)
class Utterance:
    name: str
    text: str
    ulaw: bytes  # whole fixture, padded with line silence to whole frames
    frames_b64: tuple[str, ...]
    duration_ms: float
    speech_segments_ms: tuple[tuple[float, float], ...]

    @property
    def frame_count(self) -> int:
        return len(self.frames_b64)

    def frame_of_ms(self, ms: float) -> int:
        """Index of the frame holding the sample at ``ms`` (clamped to the fixture)."""
        return max(0, min(self.frame_count - 1, int(ms // FRAME_MS)))

    @property
    def speech_start_frame(self) -> int | None:
        if not self.speech_segments_ms:
            return None
        return self.frame_of_ms(self.speech_segments_ms[0][0])

    @property
    def speech_end_frame(self) -> int | None:
        """The frame holding the last speech sample: its send marks the utterance's end."""
        if not self.speech_segments_ms:
            return None
        return self.frame_of_ms(max(0.0, self.speech_segments_ms[-1][1] - 0.001))


class UtteranceBank:
    """Lazily converted, process-wide cache of fixtures as μ-law frames."""

    def __init__(self, library: FixtureLibrary | None = None) -> None:
        self.library = library or default_library()
        self._cache: dict[str, Utterance] = {}
        self._lock = threading.Lock()

    def __contains__(self, name: str) -> bool:
        return name in self.library

    def get(self, name: str) -> Utterance:
        u = self._cache.get(name)
        if u is not None:
            return u
        with self._lock:
            if name not in self._cache:
                self._cache[name] = self._convert(name)
            return self._cache[name]

    def _convert(self, name: str) -> Utterance:
        fx = self.library[name]
        samples, rate = self.library.read_pcm(name)
        ulaw = to_ulaw_8k(samples, rate)
        pad = (-len(ulaw)) % FRAME_BYTES
        ulaw += bytes([SILENCE_BYTE]) * pad
        frames = tuple(
            base64.b64encode(ulaw[i : i + FRAME_BYTES]).decode("ascii")
            for i in range(0, len(ulaw), FRAME_BYTES)
        )
        return Utterance(fx.name, fx.text, ulaw, frames, fx.duration_ms, tuple(fx.speech_segments_ms))


_default: UtteranceBank | None = None


def default_bank() -> UtteranceBank:
    global _default
    if _default is None:
        _default = UtteranceBank()
    return _default
