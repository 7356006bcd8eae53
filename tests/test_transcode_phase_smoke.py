"""loadtests/transcode_phase.py shifts a caller utterance inside the 20 ms frame consistently: the
WAV gains exactly the phase of silence up front, and the manifest's speech times move with it, so
the harness's speech end (from the manifest) stays where the audible speech ends."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from callsim.simulator.audio.fixtures import DEFAULT_FIXTURES_DIR, FixtureLibrary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtests"))

import transcode_phase  # noqa: E402


def test_shifted_fixture_moves_audio_and_manifest_together(tmp_path):
    name = transcode_phase.UTTERANCE
    before = FixtureLibrary(DEFAULT_FIXTURES_DIR)[name]
    folder = transcode_phase.shifted_fixtures(DEFAULT_FIXTURES_DIR, tmp_path / "p7", 7)
    after = FixtureLibrary(folder)[name]
    assert after.speech_end_ms == before.speech_end_ms + 7
    assert after.speech_start_ms == before.speech_start_ms + 7
    old, rate = sf.read(DEFAULT_FIXTURES_DIR / before.file, dtype="int16")
    new, _ = sf.read(folder / after.file, dtype="int16")
    pad = rate * 7 // 1000
    assert not new[:pad].any() and np.array_equal(new[pad:], old)
    assert (before.speech_end_ms % 20, after.speech_end_ms % 20) == (0, 7)  # the shipped one ends on a frame edge
