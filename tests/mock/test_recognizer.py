"""The recogniser names the fixture a caller said, through the phone path, whole or cut."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from callsim.simulator.audio import codec
from callsim.simulator.audio.fixtures import default_library
from callsim.simulator.mock.audio import analysis_pcm, decode, encode
from callsim.simulator.mock.recognizer import THRESHOLD, Recognizer

LIB = default_library()
CALLERS = [fx.name for fx in LIB if fx.role == "caller"]
ASSISTANT = [fx.name for fx in LIB if fx.role == "assistant"]
SAME_TEXT = {fx.name: {g.name for g in LIB if g.text == fx.text and g.role == "caller"} for fx in LIB}
MARGIN = 0.05  # best score above any fixture with a different text


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer()


@cache
def heard(name: str, kind: str = "pcmu", before_ms: int = 300, after_ms: int = 300) -> np.ndarray:
    """A fixture as the mock's recogniser hears it: phone line (μ-law 8 kHz) → the committed turn → 16 kHz."""
    pcm, rate = LIB.read_pcm(name)
    wire = (bytes([0xFF]) * 8 * before_ms + codec.to_ulaw_8k(pcm, rate)
            + bytes([0xFF]) * 8 * after_ms)
    if kind != "pcmu":
        wire = encode(kind, decode("pcmu", wire), 8000)
    return analysis_pcm(kind, wire)


def speech_span(name: str, before_ms: int = 300) -> tuple[int, int]:
    fx = LIB[name]
    return int((fx.speech_start_ms + before_ms) * 16), int((fx.speech_end_ms + before_ms) * 16)


def assert_identified(rec: Recognizer, samples: np.ndarray, name: str, min_score: float = 0.95) -> None:
    scores = rec.scores(samples)
    best, score = rec.identify(samples)
    assert best in SAME_TEXT[name], (best, score)
    assert score == scores[best] >= min_score
    others = [v for k, v in scores.items() if k not in SAME_TEXT[name]]
    assert score - max(others) >= MARGIN, sorted(scores.items(), key=lambda kv: -kv[1])


def test_knows_the_caller_fixtures(rec: Recognizer) -> None:
    assert rec.names == CALLERS
    assert rec.library is LIB


@pytest.mark.parametrize("name", CALLERS)
def test_whole_utterance_through_the_phone_path(rec: Recognizer, name: str) -> None:
    assert_identified(rec, heard(name), name)
    if name == "caller_weather_question_phone":  # same text, either is right; its own wins
        assert rec.identify(heard(name))[0] == name


@pytest.mark.parametrize("name", CALLERS)
def test_first_300ms_of_speech_cut_off(rec: Recognizer, name: str) -> None:
    a, _ = speech_span(name)
    assert_identified(rec, heard(name)[a + 300 * 16 :], name, min_score=0.9)


@pytest.mark.parametrize("name", CALLERS)
def test_only_the_first_60_percent(rec: Recognizer, name: str) -> None:
    a, b = speech_span(name)
    assert_identified(rec, heard(name)[: a + int(0.6 * (b - a))], name, min_score=0.9)


@pytest.mark.parametrize("kind", ["pcma", "pcm16"])
def test_other_session_formats(rec: Recognizer, kind: str) -> None:
    for name in CALLERS:
        assert_identified(rec, heard(name, kind), name)


def test_quiet_and_noisy_callers(rec: Recognizer) -> None:
    pcm, rate = LIB.read_pcm("caller_long_sentence")
    quiet = decode("pcmu", codec.to_ulaw_8k((pcm * 0.05).astype(np.int16), rate))  # -26 dB
    assert_identified(rec, analysis_pcm("pcmu", codec.pcm16_to_ulaw(quiet)), "caller_long_sentence")
    rng = np.random.default_rng(1)
    x = heard("caller_barge_in").astype(np.float64)
    noisy = x + rng.standard_normal(len(x)) * x[x != 0].std() / 10  # ~20 dB SNR
    assert_identified(rec, np.clip(noisy, -32768, 32767).astype(np.int16), "caller_barge_in", 0.9)


def test_long_leading_and_trailing_silence(rec: Recognizer) -> None:
    assert_identified(rec, heard("caller_stop", before_ms=3000, after_ms=4000), "caller_stop")


@pytest.mark.parametrize("name", ASSISTANT)
def test_assistant_replies_are_not_callers(rec: Recognizer, name: str) -> None:
    best, score = rec.identify(heard(name))
    assert best is None
    assert score < THRESHOLD - 0.2


def test_silence_and_noise_are_nothing(rec: Recognizer) -> None:
    rng = np.random.default_rng(0)
    cases = {
        "line silence": np.zeros(48000, dtype=np.int16),
        "silence_2s": heard("silence_2s"),
        "dither": rng.integers(-2, 3, 48000).astype(np.int16),
        "noise -40": (rng.standard_normal(48000) * 328).astype(np.int16),
        "noise -10": (rng.standard_normal(48000) * 10000).astype(np.int16),
        "tone": (3000 * np.sin(2 * np.pi * 440 * np.arange(48000) / 16000)).astype(np.int16),
        "too short": heard("caller_stop")[: 16 * 100],
        "empty": np.zeros(0, dtype=np.int16),
    }
    for label, samples in cases.items():
        best, score = rec.identify(samples)
        assert best is None, label
        assert 0.0 <= score < 0.3, (label, score)


def test_reversed_speech_is_not_the_fixture(rec: Recognizer) -> None:
    best, score = rec.identify(heard("caller_long_sentence")[::-1].copy())
    assert best is None and score < THRESHOLD


def test_roles_and_rate(rec: Recognizer) -> None:
    assistants = Recognizer(roles=("assistant",))
    assert assistants.names == ASSISTANT
    assert assistants.identify(heard("assistant_short_reply"))[0] == "assistant_short_reply"
    assert assistants.identify(heard("caller_greeting"))[0] is None
    at8k = Recognizer(rate=8000)
    pcm, rate = LIB.read_pcm("caller_spell_number")
    best, score = at8k.identify(decode("pcmu", codec.to_ulaw_8k(pcm, rate)))
    assert best == "caller_spell_number" and score >= 0.95


def test_identify_turn_remembers_committed_audio(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same committed bytes are recognised once; the answer is what identify() gives."""
    import callsim.simulator.mock.recognizer as rec_mod

    r = Recognizer()
    wire = codec.to_ulaw_8k(*LIB.read_pcm("caller_weather_question"))
    expected = r.identify(analysis_pcm("pcmu", wire))
    assert expected[0] == "caller_weather_question"
    calls = []
    real = r.identify
    monkeypatch.setattr(r, "identify", lambda pcm: calls.append(len(pcm)) or real(pcm))
    assert r.identify_turn("pcmu", wire) == expected
    assert r.identify_turn("pcmu", bytes(wire)) == expected  # equal bytes, another object
    assert len(calls) == 1 and r.turn_hits == 1
    assert r.identify_turn("pcma", wire)[0] != "caller_weather_question"  # same bytes, other format
    assert len(calls) == 2
    # bounded: the oldest turn is forgotten
    monkeypatch.setattr(rec_mod, "TURN_CACHE", 3)
    for i in range(4):
        r.identify_turn("pcmu", wire[: 8000 + 800 * i])
    r.identify_turn("pcmu", wire)
    assert len(r._turns) == 3 and len(calls) == 2 + 4 + 1
