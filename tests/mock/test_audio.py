"""The mock's audio formats: exact decoding, sane encoding, a streaming converter that keeps state."""

from __future__ import annotations

import audioop

import numpy as np
import pytest
import soxr
from callsim.simulator.audio import codec
from callsim.simulator.audio.fixtures import default_library
from callsim.simulator.mock.audio import (
    BYTES_PER_MS,
    CONVERTER_DELAY_SAMPLES,
    RATES,
    VAD_RATES,
    InputConverter,
    decode,
    duration_ms,
    encode,
    fixture_audio,
)

LIB = default_library()
CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def test_format_constants_match_protocols() -> None:
    assert RATES == {"pcm16": 24000, "pcmu": 8000, "pcma": 8000}
    assert BYTES_PER_MS == {"pcm16": 48, "pcmu": 8, "pcma": 8}


# ------------------------------------------------------------------ decode


def test_ulaw_decode_equals_g711_reference_for_all_codes() -> None:
    ref = np.frombuffer(audioop.ulaw2lin(CODES, 2), dtype="<i2")
    out = decode("pcmu", CODES)
    assert out.dtype == np.int16
    assert np.array_equal(out, ref)


def test_alaw_decode_equals_g711_reference_for_all_codes() -> None:
    ref = np.frombuffer(audioop.alaw2lin(CODES, 2), dtype="<i2")
    assert np.array_equal(decode("pcma", CODES), ref)


def test_line_silence_codes_decode_to_silence() -> None:
    assert decode("pcmu", b"\xff\x7f").tolist() == [0, 0]
    assert decode("pcma", b"\xd5\x55").tolist() == [8, -8]  # A-law has no zero code


def test_pcm16_is_little_endian_and_drops_an_odd_last_byte() -> None:
    assert decode("pcm16", b"\x01\x00\xfe\xff").tolist() == [1, -2]
    assert decode("pcm16", b"\x01\x00\xfe\xff\x07").tolist() == [1, -2]
    assert decode("pcm16", b"\x07").tolist() == []
    assert decode("pcmu", b"").size == 0


def test_decode_returns_a_writable_copy() -> None:
    data = bytes(encode("pcm16", np.array([5, 6], dtype=np.int16), 24000))
    out = decode("pcm16", data)
    out[0] = 9  # would raise on a read-only view of the bytes
    assert decode("pcm16", data)[0] == 5


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="g711_ulaw"):
        decode("g711_ulaw", b"\xff")
    with pytest.raises(ValueError):
        encode("opus", np.zeros(4, dtype=np.int16), 8000)
    with pytest.raises(ValueError):
        InputConverter("pcm24")


# ------------------------------------------------------------------ encode


def test_pcm16_round_trip_is_bit_exact() -> None:
    assert np.array_equal(decode("pcm16", encode("pcm16", ALL_INT16, 24000)), ALL_INT16)
    assert encode("pcm16", np.array([1, -2], dtype=np.int16), 24000) == b"\x01\x00\xfe\xff"


@pytest.mark.parametrize("kind", ["pcmu", "pcma"])
def test_g711_codes_survive_decode_then_encode(kind: str) -> None:
    again = encode(kind, decode(kind, CODES), 8000)
    mismatched = [c for c, r in zip(CODES, again) if c != r]
    # μ-law has two zeros (0x7F = -0, 0xFF = +0); the encoder picks +0
    assert mismatched == ([0x7F] if kind == "pcmu" else [])
    assert again[0x7F] == (0xFF if kind == "pcmu" else 0x7F)


@pytest.mark.parametrize("kind", ["pcmu", "pcma"])
def test_g711_quantisation_error_is_within_half_a_step(kind: str) -> None:
    y = decode(kind, encode(kind, ALL_INT16, 8000)).astype(np.int64)
    x = ALL_INT16.astype(np.int64)
    assert np.all(np.abs(y - x) <= np.maximum(16, np.abs(x) / 16))


def test_ulaw_encoding_is_the_callers_libsndfile_encoding() -> None:
    pcm, rate = LIB.read_pcm("caller_greeting")
    assert encode("pcmu", pcm, rate) == codec.to_ulaw_8k(pcm, rate)


@pytest.mark.parametrize(("kind", "rate", "n_in", "n_bytes"), [
    ("pcmu", 16000, 16000, 8000),
    ("pcma", 24000, 24000, 8000),
    ("pcm16", 8000, 8000, 48000),
    ("pcm16", 24000, 100, 200),
])
def test_encode_resamples_to_the_format_rate(kind: str, rate: int, n_in: int, n_bytes: int) -> None:
    t = np.arange(n_in) / rate
    x = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    out = encode(kind, x, rate)
    assert len(out) == n_bytes
    assert duration_ms(kind, len(out)) == pytest.approx(n_in * 1000 / rate)


def test_encode_rejects_non_int16_and_stereo() -> None:
    with pytest.raises(TypeError):
        encode("pcmu", np.zeros(8, dtype=np.float32), 8000)
    with pytest.raises(ValueError):
        encode("pcmu", np.zeros((8, 2), dtype=np.int16), 8000)


# ---------------------------------------------------------------- duration


def test_duration_ms() -> None:
    assert duration_ms("pcm16", 48000) == 1000.0
    assert duration_ms("pcmu", 160) == 20.0
    assert duration_ms("pcma", 8) == 1.0
    assert duration_ms("pcm16", 47) == pytest.approx(23 / 24)  # whole samples only
    assert duration_ms("pcm16", 1) == 0.0
    assert duration_ms("pcmu", 0) == 0.0
    with pytest.raises(ValueError):
        duration_ms("pcmu", -1)


# --------------------------------------------------------- InputConverter


def _wire(kind: str, name: str = "caller_barge_in") -> bytes:
    pcm, rate = LIB.read_pcm(name)
    return encode(kind, pcm, rate)


@pytest.mark.parametrize("kind", ["pcmu", "pcma"])
def test_g711_reaches_the_vad_decoded_not_resampled(kind: str) -> None:
    """webrtcvad takes 8 kHz: G.711 is only decoded, sample for sample, nothing held back."""
    data = _wire(kind)
    conv = InputConverter(kind)
    assert conv.rate == VAD_RATES[kind] == 8000
    parts = [conv.feed(data[i : i + 160]) for i in range(0, len(data), 160)]
    assert all(len(p) == len(data[i : i + 160]) for p, i in zip(parts, range(0, len(data), 160)))
    assert len(conv.flush()) == 0
    assert np.array_equal(np.concatenate(parts), decode(kind, data))
    assert conv.output_ms == conv.input_ms == len(data) / 8


def test_pcm16_streams_to_16k_as_one_shot_gives() -> None:
    kind = "pcm16"
    data = _wire(kind)
    step = 20 * BYTES_PER_MS[kind]
    conv = InputConverter(kind)
    assert conv.rate == VAD_RATES[kind] == 16000
    parts = []
    for i in range(0, len(data), step):
        parts.append(conv.feed(data[i : i + step]))
        expected = round(conv.input_ms * conv.rate / 1000)
        emitted = sum(len(p) for p in parts)
        # only the documented few samples are held back, no burst delay
        assert 0 <= expected - emitted <= CONVERTER_DELAY_SAMPLES[kind] + 1
    parts.append(conv.flush())
    streamed = np.concatenate(parts)
    pcm = decode(kind, data)
    assert len(streamed) == len(pcm) * conv.rate // RATES[kind]
    assert streamed.dtype == np.int16
    one_shot = soxr.resample(pcm, RATES[kind], conv.rate, quality="QQ")
    assert np.abs(streamed.astype(np.int32) - one_shot).max() <= 2  # soxr's int16 dither
    hq = soxr.resample(pcm, RATES[kind], conv.rate, quality="HQ").astype(np.float64)
    err = streamed - hq
    snr = 10 * np.log10(np.sum(hq**2) / np.sum(err**2))
    assert snr > 15  # QQ is coarse (≈ 37 dB for 24k->16k speech), fine for a VAD


@pytest.mark.parametrize("kind, chunk, silent", [
    ("pcmu", b"\xff" * 160, True), ("pcmu", b"\x7f\xff" * 80, True),  # μ-law +0 and -0
    ("pcmu", b"\xff" * 159 + b"\xfe", False), ("pcmu", b"", False),
    ("pcma", bytes([0xD5]) * 160, False),  # A-law idle decodes to +8, not 0
    ("pcm16", bytes(960), False),  # soxr keeps state: pcm16 always goes through feed()
])
def test_digital_silence_is_exactly_what_decodes_to_zeros(kind: str, chunk: bytes, silent: bool) -> None:
    conv = InputConverter(kind)
    n = conv.digital_silence(chunk)
    if silent:
        assert n == len(chunk) and not decode(kind, chunk).any()
        assert conv.input_ms == conv.output_ms == len(chunk) / 8  # the clock counts it
        assert np.array_equal(conv.feed(b"\x00\x80"), decode(kind, b"\x00\x80"))  # no state disturbed
    else:
        assert n == 0 and conv.input_ms == 0  # left for feed()


def test_converter_keeps_state_across_chunks() -> None:
    """Chunk sizes that split samples and filter history give the same audio."""
    data = _wire("pcm16")
    whole = InputConverter("pcm16")
    a = np.concatenate([whole.feed(data), whole.flush()])
    split = InputConverter("pcm16")
    parts, i = [], 0
    for size in [1, 2, 3, 959, 961, 7, 480] * 1000:
        if i >= len(data):
            break
        parts.append(split.feed(data[i : i + size]))
        i += size
    b = np.concatenate([*parts, split.flush()])
    assert len(a) == len(b)
    assert np.abs(a.astype(np.int32) - b).max() <= 2


def test_converter_state_is_per_instance() -> None:
    data = _wire("pcmu")[:1600]
    a, b = InputConverter("pcmu"), InputConverter("pcmu")
    out_a = a.feed(data)
    b.feed(b"\x00" * 800)  # loud garbage in another session
    assert np.array_equal(InputConverter("pcmu").feed(data), out_a)


def test_converter_line_silence_stays_silent() -> None:
    assert not InputConverter("pcmu").feed(bytes([codec.SILENCE_BYTE]) * 8000).any()
    assert np.abs(InputConverter("pcm16").feed(bytes(48000))).max() <= 2  # soxr's dither


# ----------------------------------------------------------- fixture_audio


@pytest.mark.parametrize("kind", ["pcmu", "pcma", "pcm16"])
def test_fixture_audio_is_rendered_once(kind: str) -> None:
    a = fixture_audio("assistant_short_reply", kind)
    assert fixture_audio("assistant_short_reply", kind, LIB) is a
    pcm, rate = LIB.read_pcm("assistant_short_reply")
    assert a == encode(kind, pcm, rate)
    assert duration_ms(kind, len(a)) == pytest.approx(LIB["assistant_short_reply"].duration_ms, abs=0.2)


def test_fixture_audio_unknown_name() -> None:
    with pytest.raises(KeyError, match="known"):
        fixture_audio("no_such_fixture", "pcmu")
