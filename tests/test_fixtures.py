"""The committed speech fixtures are what the manifest says they are.

Every latency the harness reports is timed from the manifest's speech segments,
so these tests re-measure the WAVs rather than trust the manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from callsim.simulator.audio.fixtures import (
    DEFAULT_FIXTURES_DIR,
    Fixture,
    FixtureLibrary,
    default_library,
    find_speech_segments,
)

REQUIRED = {
    "caller_greeting": ("caller", 16000),
    "caller_weather_question": ("caller", 16000),
    "caller_stop": ("caller", 16000),
    "caller_long_sentence": ("caller", 16000),
    "caller_spell_number": ("caller", 16000),
    "caller_barge_in": ("caller", 16000),
    "assistant_short_reply": ("assistant", 24000),
    "assistant_long_reply": ("assistant", 24000),
    "silence_2s": ("silence", 8000),
    "caller_weather_question_phone": ("caller", 8000),
}
PHONE = "caller_weather_question_phone"

LIB = default_library()
PCM = {fx.name: LIB.read_pcm(fx.name)[0] for fx in LIB}
SPEECH = [fx.name for fx in LIB if fx.role != "silence"]
CLEAN = [n for n in SPEECH if "variant_of" not in LIB[n].extra]


def db(x: float) -> float:
    return 10 * np.log10(max(x, 1e-20))


def mask(fx: Fixture, n: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    for a, b in fx.speech_segments_ms:
        m[int(a * fx.sample_rate / 1000) : int(b * fx.sample_rate / 1000)] = True
    return m


def test_required_fixtures_present_with_roles_and_rates() -> None:
    for name, (role, rate) in REQUIRED.items():
        assert name in LIB, name
        assert LIB[name].role == role
        assert LIB[name].sample_rate == rate
        assert LIB[name].channels == 1
    assert LIB.names() == [fx.name for fx in LIB]


def test_manifest_top_level_schema() -> None:
    m = LIB.manifest
    assert m["generator"] == "fixtures/make_fixtures.py"
    assert m["tools"]["espeak-ng"].startswith("eSpeak NG")
    assert "SoX" in m["tools"]["sox"]
    vad = m["vad"]
    assert vad["engine"] == "webrtcvad" and vad["mode"] == 3 and vad["frame_ms"] == 10
    assert {"merge_gap_ms", "min_segment_ms", "note"} <= vad.keys()


@pytest.mark.parametrize("name", list(REQUIRED))
def test_manifest_matches_file(name: str) -> None:
    fx = LIB[name]
    info = sf.info(str(fx.path))
    assert fx.path.is_file() and fx.path.parent == LIB.root
    assert info.samplerate == fx.sample_rate
    assert info.channels == fx.channels == 1
    assert info.frames == fx.frames
    assert info.subtype == "PCM_16"
    assert fx.duration_ms == pytest.approx(info.frames * 1000 / info.samplerate, abs=0.05)


def test_total_size_under_3mb() -> None:
    total = sum(p.stat().st_size for p in LIB.root.iterdir() if p.is_file())
    assert total < 3_000_000, total


@pytest.mark.parametrize("name", list(REQUIRED))
def test_segments_sorted_disjoint_inside(name: str) -> None:
    fx = LIB[name]
    prev_end = 0.0
    for a, b in fx.speech_segments_ms:
        assert prev_end <= a < b <= fx.duration_ms
        prev_end = b
    if fx.role == "silence":
        assert fx.speech_segments_ms == () and fx.text == ""
        assert fx.speech_start_ms is None and fx.speech_end_ms is None
    else:
        assert len(fx.speech_segments_ms) >= 1 and fx.text
        assert fx.speech_start_ms == fx.speech_segments_ms[0][0]
        assert fx.speech_end_ms == fx.speech_segments_ms[-1][1]


def test_silence_is_digital_zero() -> None:
    x = PCM["silence_2s"]
    assert len(x) == 16000 and not x.any()


@pytest.mark.parametrize("name", CLEAN)
def test_vad_reproduces_manifest(name: str) -> None:
    fx = LIB[name]
    vad = LIB.manifest["vad"]
    params = {k: v for k, v in vad.items() if k not in ("engine", "two_pass", "note")}
    segs = find_speech_segments(PCM[name], fx.sample_rate, **params)
    assert len(segs) == len(fx.speech_segments_ms)
    for got, want in zip(segs, fx.speech_segments_ms):
        assert got == pytest.approx(want, abs=10.0)


@pytest.mark.parametrize("name", CLEAN)
def test_clean_speech_padding_peak_and_energy(name: str) -> None:
    fx = LIB[name]
    x = PCM[name].astype(np.float64)
    pad = int(fx.extra["pad_ms"] * fx.sample_rate / 1000)
    # ~200 ms of digital silence either side, speech right after it.
    assert fx.extra["pad_ms"] == 200
    assert not x[:pad].any() and not x[-pad:].any()
    assert x[pad : pad + fx.sample_rate // 100].any()
    # Peak normalised to about -3 dBFS, nowhere near clipping.
    assert -3.5 <= 20 * np.log10(np.abs(x).max() / 32768) <= -2.5
    # The manifest's segments hold the energy.
    m = mask(fx, len(x))
    assert db(np.mean(x[m] ** 2)) - db(np.mean(x[~m] ** 2)) >= 20
    # Speech starts and ends where the audible energy does (no VAD hangover,
    # no missed onset), so latencies are timed from the right instants.
    hop = fx.sample_rate // 100
    level = 10 * np.log10(np.mean(x[: len(x) // hop * hop].reshape(-1, hop) ** 2, 1) + 1e-9)
    audible = np.nonzero(level >= level.max() - 40)[0]
    assert abs(fx.speech_start_ms - audible[0] * 10) <= 30, (fx.speech_start_ms, audible[0])
    assert abs(fx.speech_end_ms - (audible[-1] + 1) * 10) <= 30, (fx.speech_end_ms, audible[-1])


def test_durations() -> None:
    assert LIB["assistant_long_reply"].duration_ms >= 8000
    assert 1500 <= LIB["assistant_short_reply"].duration_ms <= 3000
    assert 6000 <= LIB["caller_long_sentence"].duration_ms <= 9400
    assert LIB["caller_stop"].duration_ms <= 1200
    assert LIB["silence_2s"].duration_ms == 2000.0


def test_caller_and_assistant_voices_differ() -> None:
    assert LIB["caller_greeting"].extra["voice"] != LIB["assistant_short_reply"].extra["voice"]


def band_power(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[(freqs >= lo) & (freqs <= hi)].sum())


def test_phone_variant_metadata() -> None:
    fx = LIB[PHONE]
    src = LIB[fx.extra["variant_of"]]
    assert src.name == "caller_weather_question" and fx.text == src.text
    assert list(fx.extra["band_hz"]) == [300, 3400]
    assert fx.speech_segments_ms == src.speech_segments_ms
    assert fx.duration_ms == pytest.approx(src.duration_ms, abs=0.2)
    assert abs(fx.extra["snr_db"] - 20) <= 1.5


def test_phone_variant_is_band_limited() -> None:
    x = PCM[PHONE].astype(np.float64)
    inband = band_power(x, 8000, 300, 3400)
    assert db(band_power(x, 8000, 0, 250)) - db(inband) < -30
    assert db(band_power(x, 8000, 3600, 4000)) - db(inband) < -30
    # Noise too: the leading pad holds only line noise, also band-limited.
    noise = x[80 : 8000 * 180 // 1000]
    assert noise.std() > 0
    n_in = band_power(noise, 8000, 300, 3400)
    assert db(band_power(noise, 8000, 0, 250)) - db(n_in) < -20
    assert db(band_power(noise, 8000, 3600, 4000)) - db(n_in) < -20


def test_phone_variant_snr_independently() -> None:
    """SNR from the file alone: noise power from the pads, speech in the segments."""
    fx = LIB[PHONE]
    x = PCM[PHONE].astype(np.float64)
    rate, pad = fx.sample_rate, int(fx.extra["pad_ms"] * fx.sample_rate / 1000)
    guard = rate * 20 // 1000  # filter ringing
    noise = np.concatenate([x[guard : pad - guard], x[-pad + guard : -guard]])
    p_noise = np.mean(noise**2)
    p_total = np.mean(x[mask(fx, len(x))] ** 2)
    snr = db(p_total - p_noise) - db(p_noise)
    assert abs(snr - 20) <= 2.0, snr
    assert abs(snr - fx.extra["snr_db"]) <= 1.5, (snr, fx.extra["snr_db"])


def test_phone_variant_aligned_with_source() -> None:
    """Copying the source's segments is only right if the channel adds no delay."""
    src = soxr.resample(PCM["caller_weather_question"].astype(np.float64), 16000, 8000)
    ph = PCM[PHONE].astype(np.float64)
    n = min(len(src), len(ph))
    corr = np.correlate(ph[:n], src[:n], mode="full")
    lag = int(np.argmax(corr)) - (n - 1)
    assert abs(lag) <= 8  # <= 1 ms at 8 kHz


def test_library_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_library() is LIB
    assert LIB.root == DEFAULT_FIXTURES_DIR.resolve()
    with pytest.raises(KeyError, match="caller_greeting"):
        LIB["no_such_fixture"]
    assert "no_such_fixture" not in LIB
    x, rate = LIB.read_pcm("caller_stop")
    assert x.dtype == np.int16 and x.ndim == 1 and rate == 16000
    # CALLSIM_FIXTURES points the library elsewhere.
    monkeypatch.setenv("CALLSIM_FIXTURES", str(LIB.root))
    assert FixtureLibrary().names() == LIB.names()
    monkeypatch.setenv("CALLSIM_FIXTURES", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make_fixtures"):
        FixtureLibrary()


def test_find_speech_segments_synthetic() -> None:
    """The VAD wrapper itself: silence gives nothing, a tone burst is not lost."""
    rate = 16000
    assert find_speech_segments(np.zeros(rate, dtype=np.int16), rate) == []
    with pytest.raises(TypeError):
        find_speech_segments(np.zeros(rate, dtype=np.float32), rate)
    # 24 kHz input goes through the resampling path and keeps the same timeline.
    x16 = PCM["caller_greeting"]
    x24 = soxr.resample(x16, 16000, 24000)
    a = find_speech_segments(x16, 16000)
    b = find_speech_segments(x24, 24000)
    assert len(a) == len(b)
    for s, t in zip(a, b):
        assert s == pytest.approx(t, abs=20.0)
