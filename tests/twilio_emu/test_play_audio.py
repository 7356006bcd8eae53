"""``<Play>`` audio decoding: a fetched file becomes 8 kHz μ-law at the level it was recorded."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from callsim.simulator.audio.codec import downmix, to_ulaw_8k, ulaw_to_pcm16
from callsim.simulator.twilio_emu.play_audio import to_line_audio


def _tone(peak: int, rate: int = 8000, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(peak * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.mark.parametrize("rate", [8000, 16000])
def test_a_stereo_wav_plays_at_its_own_level_not_full_scale(rate: int) -> None:
    tone = _tone(1000, rate)
    stereo = np.stack([tone, tone], axis=1)
    peak = int(np.abs(ulaw_to_pcm16(to_line_audio(_wav(stereo, rate), "audio/wav")).astype(np.int32)).max())
    assert 900 <= peak <= 1100


def test_stereo_plays_as_its_mono_downmix() -> None:
    tone = _tone(1000)
    stereo = np.stack([tone, tone], axis=1)
    assert to_line_audio(_wav(stereo, 8000), "audio/wav") == to_line_audio(_wav(tone, 8000), "audio/wav")


def test_downmix_keeps_the_dtype_and_scale() -> None:
    ints = np.array([[32767, 32767], [-32768, -32768], [1000, -1000], [3, 4]], dtype=np.int16)
    mixed = downmix(ints)
    assert mixed.dtype == np.int16
    assert mixed.tolist() == [32767, -32768, 0, 4]
    floats = np.array([[0.5, 0.25], [-1.0, -1.0]], dtype=np.float32)
    assert downmix(floats).dtype == np.float32
    assert downmix(floats).tolist() == [0.375, -1.0]


def test_float_stereo_is_still_scaled_from_unit_range() -> None:
    tone = _tone(1000).astype(np.float64) / 32767.0
    stereo = np.stack([tone, tone], axis=1)
    assert to_ulaw_8k(stereo, 8000) == to_ulaw_8k(_tone(1000), 8000)
