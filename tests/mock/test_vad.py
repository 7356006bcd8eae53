"""The mock's server VAD: turn boundaries where the manifest says the speech is.

Audio goes the way a Twilio bridge forwards it: fixture → 8 kHz μ-law (the
caller's own encoder) → the mock's decode + InputConverter → ServerVad.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from callsim.simulator.audio import codec
from callsim.simulator.audio.fixtures import default_library
from callsim.simulator.mock.audio import BYTES_PER_MS, VAD_RATES, InputConverter, encode
from callsim.simulator.mock.vad import (
    FRAME_MS,
    MAX_DECISIONS,
    ServerVad,
    VadEvent,
    VadParams,
    semantic_wait_ms,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LIB = default_library()
CALLERS = [fx.name for fx in LIB if fx.role == "caller"]
SPEECH = [fx.name for fx in LIB if fx.role != "silence"]
PHONE = "caller_weather_question_phone"
ONSET_TOL_MS = 40
END_TOL_MS = 60
LINE_SILENCE = bytes([codec.SILENCE_BYTE])


@cache
def phone_audio(name: str) -> bytes:
    pcm, rate = LIB.read_pcm(name)
    return codec.to_ulaw_8k(pcm, rate)


#: The rate the session's VAD runs at for a μ-law stream (8 kHz: decoded, not resampled).
RATE = VAD_RATES["pcmu"]
TEN_MS = RATE // 100


@cache
def vad_input(wire: bytes, kind: str = "pcmu") -> np.ndarray:
    """What the session's VAD gets for ``wire``: samples at ``VAD_RATES[kind]``."""
    conv = InputConverter(kind)
    return np.concatenate([conv.feed(wire), conv.flush()])


def run(wire: bytes, params: VadParams = VadParams(), kind: str = "pcmu",
        chunk_ms: int = 20, **kw: float) -> tuple[list[VadEvent], ServerVad]:
    """Append ``wire`` in chunks like a bridge does; return the events and the VAD."""
    conv = InputConverter(kind)
    vad = ServerVad(params, conv.rate, **kw)
    step = chunk_ms * BYTES_PER_MS[kind]
    events: list[VadEvent] = []
    for i in range(0, len(wire), step):
        chunk = wire[i : i + step]
        silent = conv.digital_silence(chunk)
        events += vad.feed_silence(silent) if silent else vad.feed(conv.feed(chunk))
    events += vad.feed(conv.flush())
    return events, vad


def utterance(name: str, before_ms: int = 0, after_ms: int = 1500) -> bytes:
    return LINE_SILENCE * (8 * before_ms) + phone_audio(name) + LINE_SILENCE * (8 * after_ms)


def pairs(events: list[VadEvent]) -> list[tuple[VadEvent, VadEvent]]:
    kinds = [e.kind for e in events]
    assert kinds == ["speech_started", "speech_stopped"] * (len(events) // 2), kinds
    return list(zip(events[::2], events[1::2]))


# ---------------------------------------------------------------- precision


@pytest.mark.parametrize("before_ms", [0, 1000])
@pytest.mark.parametrize("silence_ms", [300, 500])
@pytest.mark.parametrize("name", CALLERS)
def test_one_turn_per_utterance_where_the_manifest_says(name: str, silence_ms: int, before_ms: int) -> None:
    fx = LIB[name]
    events, _ = run(utterance(name, before_ms), VadParams(silence_duration_ms=silence_ms))
    [(start, stop)] = pairs(events)
    assert abs(start.speech_onset_ms - (fx.speech_start_ms + before_ms)) <= ONSET_TOL_MS
    assert abs(stop.speech_end_ms - (fx.speech_end_ms + before_ms)) <= END_TOL_MS
    assert stop.speech_onset_ms == start.speech_onset_ms


# With the server's reported default of 200 ms, pauses of ~220 ms between the
# spelled digits and after "Wait, sorry," split the turn (as a real 200 ms VAD
# would); each piece still starts and ends on speech.
SPLITS_AT_200 = {"caller_spell_number": 3, "caller_barge_in": 2}


@pytest.mark.parametrize("name", CALLERS)
def test_default_200ms_silence_splits_only_long_pauses(name: str) -> None:
    fx = LIB[name]
    events, _ = run(utterance(name), VadParams(silence_duration_ms=200))
    turns = pairs(events)
    assert len(turns) == SPLITS_AT_200.get(name, 1)
    assert abs(turns[0][0].speech_onset_ms - fx.speech_start_ms) <= ONSET_TOL_MS
    assert abs(turns[-1][1].speech_end_ms - fx.speech_end_ms) <= END_TOL_MS
    for (_, stop), (start, _) in zip(turns, turns[1:]):
        assert start.speech_onset_ms - stop.speech_end_ms >= 200  # a real pause


@pytest.mark.parametrize("kind", ["pcma", "pcm16"])
def test_precision_holds_for_the_other_input_formats(kind: str) -> None:
    for name in CALLERS:
        fx = LIB[name]
        pcm, rate = LIB.read_pcm(name)
        wire = encode(kind, pcm, rate) + encode(kind, np.zeros(16000, dtype=np.int16), 16000)
        [(start, stop)] = pairs(run(wire, VadParams(silence_duration_ms=500), kind)[0])
        assert abs(start.speech_onset_ms - fx.speech_start_ms) <= ONSET_TOL_MS, name
        assert abs(stop.speech_end_ms - fx.speech_end_ms) <= END_TOL_MS, name


# ------------------------------------------------------ no false triggers


def _noise(level_dbfs: float, ms: int, seed: int = 7) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(8 * ms) * 10 ** (level_dbfs / 20) * 32768
    return codec.pcm16_to_ulaw(np.clip(x, -32768, 32767).astype(np.int16))


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_silence_never_triggers(threshold: float) -> None:
    p = VadParams(threshold=threshold)
    assert run(LINE_SILENCE * 80000, p)[0] == []
    assert run(b"\x7f" * 80000, p)[0] == []  # μ-law -0
    assert run(bytes([0xD5]) * 80000, p, kind="pcma")[0] == []  # A-law idle (+8)
    assert run(bytes(96000), p, kind="pcm16")[0] == []
    pcm, rate = LIB.read_pcm("silence_2s")
    assert run(codec.to_ulaw_8k(pcm, rate) * 3, p)[0] == []


@pytest.mark.parametrize("level", [-60, -40, -25, -10])
def test_steady_noise_never_triggers(level: int) -> None:
    noise = _noise(level, 4000)
    assert run(noise)[0] == []  # a noise bed from the start
    assert run(LINE_SILENCE * 8000 + noise + LINE_SILENCE * 8000)[0] == []  # after line silence


def test_tone_and_click_do_not_trigger() -> None:
    t = np.arange(8 * 3000) / 8000
    tone = codec.pcm16_to_ulaw((3000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))
    assert run(LINE_SILENCE * 8000 + tone + LINE_SILENCE * 8000)[0] == []
    click = codec.pcm16_to_ulaw(np.full(80, 30000, dtype=np.int16))  # 10 ms
    assert run(LINE_SILENCE * 8000 + click + LINE_SILENCE * 8000)[0] == []


def test_noisy_fixture_after_line_silence_is_not_held_open_by_its_noise() -> None:
    fx = LIB[PHONE]
    wire = LINE_SILENCE * 8000 + phone_audio(PHONE) + _noise(-41, 1000) + LINE_SILENCE * 8000
    [(start, stop)] = pairs(run(wire, VadParams(silence_duration_ms=500))[0])
    assert abs(start.speech_onset_ms - (1000 + fx.speech_start_ms)) <= ONSET_TOL_MS
    assert abs(stop.speech_end_ms - (1000 + fx.speech_end_ms)) <= END_TOL_MS


# ------------------------------------------------------- event arithmetic


def test_prefix_padding_and_silence_duration_arithmetic() -> None:
    p = VadParams(prefix_padding_ms=150, silence_duration_ms=400)
    events, vad = run(utterance("caller_greeting", before_ms=1000), p)
    [(start, stop)] = pairs(events)
    assert start.audio_ms == start.speech_onset_ms - 150
    assert start.speech_end_ms is None
    assert stop.audio_ms == stop.speech_end_ms + 400
    assert start.speech_onset_ms % FRAME_MS == 0 and stop.speech_end_ms % FRAME_MS == 0
    assert [d["event"] for d in vad.decisions if "event" in d] == ["speech_started", "speech_stopped"]


def test_audio_start_is_never_before_the_buffer_start() -> None:
    p = VadParams(prefix_padding_ms=1000)
    [(start, _)] = pairs(run(utterance("caller_stop"), p)[0])
    assert start.speech_onset_ms == pytest.approx(200, abs=ONSET_TOL_MS)
    assert start.audio_ms == 0
    [(start, _)] = pairs(run(utterance("caller_stop"), p, start_ms=5000)[0])
    assert start.speech_onset_ms == pytest.approx(5200, abs=ONSET_TOL_MS)
    assert start.audio_ms == 5000


def test_next_turn_does_not_reach_into_the_committed_one() -> None:
    # "Stop." (speech 200-650 ms of 848), 250 ms of line silence, "Stop." again without its lead-in
    wire = phone_audio("caller_stop") + LINE_SILENCE * 8 * 250 + phone_audio("caller_stop")[8 * 200 :]
    (_, stop1), (start2, _) = pairs(run(wire + LINE_SILENCE * 8000, VadParams())[0])
    assert start2.speech_onset_ms - 300 < stop1.audio_ms  # padding would overlap ...
    assert start2.audio_ms == stop1.audio_ms  # ... so it starts where the last turn ended


def test_events_are_emitted_when_the_buffer_reaches_them() -> None:
    """Fed 10 ms at a time, each event comes out as soon as the audio decides it."""
    samples = vad_input(utterance("caller_greeting"))
    vad = ServerVad(VadParams(silence_duration_ms=300), RATE)
    seen: list[tuple[VadEvent, float]] = []
    for i in range(0, len(samples), TEN_MS):
        seen += [(e, vad.buffer_ms) for e in vad.feed(samples[i : i + TEN_MS])]
    (start, t_start), (stop, t_stop) = seen
    assert t_start - start.speech_onset_ms == 60  # 60 ms of speech in the last 100 ms
    assert t_stop == stop.audio_ms == stop.speech_end_ms + 300


def test_clock_counts_every_sample_fed() -> None:
    vad = ServerVad(VadParams(), start_ms=250)
    vad.feed(np.zeros(17, dtype=np.int16))
    vad.feed(np.zeros(16000, dtype=np.int16))
    assert vad.buffer_ms == pytest.approx(250 + 16017 / 16)
    assert not vad.speaking


def test_speaking_tracks_the_turn() -> None:
    samples = vad_input(utterance("caller_greeting"))
    vad = ServerVad(VadParams(), RATE)
    vad.feed(samples[:RATE])
    assert vad.speaking
    vad.feed(samples[RATE:])
    assert not vad.speaking


# ------------------------------------------------------------- threshold


@pytest.mark.parametrize("name", SPEECH)
def test_higher_threshold_never_detects_speech_a_lower_one_missed(name: str) -> None:
    samples = vad_input(utterance(name, before_ms=300) + _noise(-45, 500) + LINE_SILENCE * 8000)
    timelines = []
    for threshold in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
        vad = ServerVad(VadParams(threshold=threshold), RATE)
        speaking = []
        for i in range(0, len(samples), TEN_MS):
            vad.feed(samples[i : i + TEN_MS])
            speaking.append(vad.speaking)
        timelines.append(np.array(speaking))
    for lower, higher in zip(timelines, timelines[1:]):
        assert not np.any(higher & ~lower)
    assert timelines[2].any()  # the default threshold hears the speech


def test_threshold_is_loudness() -> None:
    quiet = codec.to_ulaw_8k((LIB.read_pcm("caller_greeting")[0] * 0.01).astype(np.int16), 16000)
    wire = quiet + LINE_SILENCE * 8000  # speech peaking near -43 dBFS
    assert pairs(run(wire, VadParams(threshold=0.2))[0])
    assert run(wire, VadParams(threshold=0.9))[0] == []


def test_params_validated() -> None:
    with pytest.raises(ValueError):
        VadParams(threshold=1.5)
    with pytest.raises(ValueError):
        VadParams(silence_duration_ms=-1)
    with pytest.raises(ValueError):
        VadParams(prefix_padding_ms=-1)
    with pytest.raises(ValueError):
        VadParams(eagerness="eager")
    with pytest.raises(ValueError):
        ServerVad(VadParams(), rate=22050)
    with pytest.raises(TypeError):
        ServerVad(VadParams()).feed(np.zeros(160, dtype=np.float32))


def test_params_can_change_mid_session_keeping_the_clock() -> None:
    samples = vad_input(utterance("caller_greeting") + utterance("caller_greeting"))
    half = len(samples) // 2
    vad = ServerVad(VadParams(silence_duration_ms=300), RATE)
    first = vad.feed(samples[:half])
    vad.params = VadParams(silence_duration_ms=700, prefix_padding_ms=0)
    second = vad.feed(samples[half:])
    (_, stop1), = pairs(first)
    (start2, stop2), = pairs(second)
    assert stop1.audio_ms - stop1.speech_end_ms == 300
    assert stop2.audio_ms - stop2.speech_end_ms == 700
    assert start2.audio_ms == start2.speech_onset_ms > half * 1000 / RATE


# -------------------------------------------------------------- semantic


def test_semantic_wait_table() -> None:
    assert semantic_wait_ms("high", 2000) < semantic_wait_ms("medium", 2000) < semantic_wait_ms("low", 2000)
    assert semantic_wait_ms("auto", 2000) == semantic_wait_ms("medium", 2000)
    assert semantic_wait_ms("low", 500) == 2 * semantic_wait_ms("low", 2000)  # a fragment: wait longer
    for eagerness, cap in {"low": 8000, "medium": 4000, "auto": 4000, "high": 2000}.items():
        assert semantic_wait_ms(eagerness, 0) <= cap


@pytest.mark.parametrize("name", ["caller_stop", "caller_weather_question"])
def test_semantic_vad_waits_longer_with_low_eagerness(name: str) -> None:
    waits = {}
    for eagerness in ("low", "medium", "high"):
        p = VadParams(semantic=True, eagerness=eagerness, silence_duration_ms=50)
        [(start, stop)] = pairs(run(utterance(name, after_ms=5000), p)[0])
        waits[eagerness] = stop.audio_ms - stop.speech_end_ms
        assert waits[eagerness] == semantic_wait_ms(eagerness, stop.speech_end_ms - start.speech_onset_ms)
        assert abs(stop.speech_end_ms - LIB[name].speech_end_ms) <= END_TOL_MS
    assert waits["low"] > waits["medium"] > waits["high"]


# ------------------------------------------------------- chunk invariance


BARGE_IN = utterance("caller_barge_in", before_ms=300, after_ms=600)


@pytest.mark.parametrize("kind", ["pcmu", "pcm16"])  # 8 kHz, and 16 kHz from 24 kHz pcm16
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=60))
def test_any_chunking_gives_identical_events(kind: str, sizes: list[int]) -> None:
    samples = vad_input(BARGE_IN) if kind == "pcmu" else vad_input(encode(kind, vad_input(BARGE_IN), RATE), kind)
    rate = VAD_RATES[kind]
    reference = ServerVad(VadParams(), rate)
    expected = reference.feed(samples)
    vad = ServerVad(VadParams(), rate)
    got: list[VadEvent] = []
    i = 0
    while i < len(samples):
        for size in sizes:
            got += vad.feed(samples[i : i + size])
            i += size
    assert got == expected
    assert len(expected) == 4  # the 200 ms default splits "Wait, sorry, | can I ask ..."
    assert vad.decisions == reference.decisions
    assert vad.buffer_ms == reference.buffer_ms


def test_decisions_are_bounded() -> None:
    burst = (np.random.default_rng(3).standard_normal(1600) * 8000).astype(np.int16)  # 100 ms
    gap = np.zeros(800, dtype=np.int16)  # 50 ms
    audio = np.tile(np.concatenate([burst, gap]), 800)  # 120 s, two transitions per 150 ms
    vad = ServerVad(VadParams(silence_duration_ms=40))
    vad.feed(audio)
    assert len(vad.decisions) == MAX_DECISIONS
    assert vad.decisions[-1]["ms"] >= vad.buffer_ms - 200


def test_webrtcvad_fast_path_matches_its_public_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    import callsim.simulator.mock.vad as vad_module

    samples = vad_input(utterance("caller_weather_question_phone", before_ms=500))
    fast = ServerVad(VadParams(), RATE)
    monkeypatch.setattr(vad_module, "_PROCESS_OK", False)
    slow = ServerVad(VadParams(), RATE)
    assert slow._vad_handle is None and fast._vad_handle is not None
    assert fast.feed(samples) == slow.feed(samples)
    assert fast.decisions == slow.decisions


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=3000)), min_size=1, max_size=40))
def test_feed_silence_is_feed_of_zeros(cuts: list[tuple[bool, int]]) -> None:
    """Digital silence skips the energy sums, never the logic: same events, decisions and clock."""
    speech = vad_input(utterance("caller_barge_in", after_ms=300))
    plain, fast = ServerVad(VadParams(), RATE), ServerVad(VadParams(), RATE)
    got_plain: list[VadEvent] = []
    got_fast: list[VadEvent] = []
    pos = 0
    for silent, n in cuts:
        if silent:
            got_plain += plain.feed(np.zeros(n, dtype=np.int16))
            got_fast += fast.feed_silence(n)
        else:
            chunk = speech[pos % len(speech) :][:n]
            pos += len(chunk)
            got_plain += plain.feed(chunk)
            got_fast += fast.feed(chunk)
    got_plain += plain.feed(np.zeros(RATE * 2, dtype=np.int16))  # let every pause end
    got_fast += fast.feed_silence(RATE * 2)
    assert got_fast == got_plain
    assert fast.decisions == plain.decisions
    assert fast.buffer_ms == plain.buffer_ms


def test_feed_silence_runs_the_turn_logic() -> None:
    """Speech then idle line fed as feed_silence: the pause still ends the turn on time."""
    vad = ServerVad(VadParams(silence_duration_ms=300), RATE)
    speech = vad_input(phone_audio("caller_greeting"))
    [start] = vad.feed(speech)
    events = []
    for _ in range(100):
        events += vad.feed_silence(TEN_MS * 2)
    [stop] = events
    assert stop.kind == "speech_stopped" and stop.audio_ms == stop.speech_end_ms + 300
    assert start.speech_onset_ms == stop.speech_onset_ms
