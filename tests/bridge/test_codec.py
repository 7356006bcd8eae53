"""Tests of bridge/codec.py: G.711 μ-law against the g711.c reference, soxr streaming, Transcoder.

The polyphase FIR on its own: tests/bridge/test_polyphase.py; here the Transcoder runs both.

``audioop`` (Python 3.11, deprecated) is used only here, as the reference implementation of
the classic Sun/CCITT g711.c; the bridge itself never imports it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from callsim.bridge.codec import (
    DEFAULT_QUALITY,
    FIR_QUALITY,
    OPENAI_RATE,
    SOXR_DEFAULT_QUALITY,
    TWILIO_RATE,
    ULAW_DECODE_TABLE,
    ULAW_ENCODE_TABLE,
    StreamResampler,
    Transcoder,
    ulaw_decode,
    ulaw_encode,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio"
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def ref_encode(x: np.ndarray) -> bytes:
    return audioop.lin2ulaw(np.ascontiguousarray(x, dtype="<i2").tobytes(), 2)


def ref_decode(b: bytes) -> np.ndarray:
    return np.frombuffer(audioop.ulaw2lin(b, 2), dtype="<i2").astype(np.int16)


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    err = ref - out.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum(err**2), 1e-12)))


def oneshot_int16(x: np.ndarray, rin: int, rout: int, quality: str) -> np.ndarray:
    """What the streaming path must reproduce: one float32 soxr call, rounded and saturated."""
    y = soxr.resample(np.asarray(x, dtype=np.float32), rin, rout, quality=quality)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def speech_8k(name: str = "caller_weather_question.wav") -> np.ndarray:
    x, sr = sf.read(AUDIO / name, dtype="int16")
    return soxr.resample(x, sr, TWILIO_RATE, quality="HQ")


def run_outbound(t: Transcoder, pieces) -> bytes:
    return b"".join(t.outbound(p) for p in pieces) + t.outbound_flush()


# ----------------------------------------------------------------------------- G.711


def test_encoder_matches_audioop_for_all_65536_inputs():
    ours = ulaw_encode(ALL_INT16)
    ref = ref_encode(ALL_INT16)
    assert len(ours) == 65536
    diff = np.flatnonzero(np.frombuffer(ours, np.uint8) != np.frombuffer(ref, np.uint8))
    assert diff.size == 0, f"{diff.size} inputs differ, e.g. {ALL_INT16[diff[:5]]}"


def test_encode_table_is_indexed_by_the_uint16_bit_pattern():
    assert ULAW_ENCODE_TABLE.dtype == np.uint8 and ULAW_ENCODE_TABLE.shape == (65536,)
    assert ULAW_ENCODE_TABLE.tobytes() == ref_encode(np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16))
    assert not ULAW_ENCODE_TABLE.flags.writeable and not ULAW_DECODE_TABLE.flags.writeable


def test_decoder_matches_audioop_for_all_256_codes():
    ours = ulaw_decode(ALL_CODES)
    assert ours.dtype == np.int16
    np.testing.assert_array_equal(ours, ref_decode(ALL_CODES))
    np.testing.assert_array_equal(ULAW_DECODE_TABLE, ours)
    # well-known anchor values of G.711 μ-law
    assert ours[0xFF] == 0 and ours[0x7F] == 0
    assert ours[0x80] == 32124 and ours[0x00] == -32124
    assert ours[0xFE] == 8 and ours[0x7E] == -8


def test_decoder_accepts_bytes_like_and_empty():
    b = bytes([0x00, 0x7F, 0x80, 0xFF])
    for obj in (b, bytearray(b), memoryview(b)):
        np.testing.assert_array_equal(ulaw_decode(obj), [-32124, 0, 32124, 0])
    assert ulaw_decode(b"").shape == (0,)
    assert ulaw_encode(np.zeros(0, np.int16)) == b""


def g711_quantise(x: np.ndarray) -> np.ndarray:
    """The g711.c quantiser in closed form, written independently of the lookup tables.

    14-bit value p = x >> 2 (arithmetic, so negatives get magnitude ⌈|x|/4⌉); biased magnitude
    B = min(|p|, 8159) + 33 lies in segment s = bit_length(B) - 6 (0..7), whose 16 steps are
    2^(s+1) wide; the reconstruction is the midpoint of B's step minus the bias, times 4.
    B = 8192 (|p| ≥ 8159) is out of range and maps to the largest level, 32124.
    """
    p = x.astype(np.int64) >> 2
    mag = np.minimum(np.abs(p), 8159)
    b = mag + 33
    s = np.floor(np.log2(b)).astype(np.int64) - 5
    step = np.left_shift(1, s + 1)
    lo = (b // step) * step
    level = np.where(b >= 8192, 32124, 4 * (lo + step // 2 - 33))
    return np.where(p < 0, -level, level)


def test_round_trip_is_the_g711_quantisation():
    q = ulaw_decode(ulaw_encode(ALL_INT16)).astype(np.int64)
    np.testing.assert_array_equal(q, g711_quantise(ALL_INT16))
    np.testing.assert_array_equal(q, ref_decode(ref_encode(ALL_INT16)))
    assert np.all(np.diff(q) >= 0), "the quantiser must be monotone"
    assert set(np.unique(q)) <= set(ULAW_DECODE_TABLE.astype(np.int64))
    # error within the segment's step, and within half a step except where g711.c's
    # 14-bit truncation pushes negative inputs one step out (the 381 inputs where
    # libsndfile's encoder disagrees: /work/shared/stack.md)
    x = ALL_INT16.astype(np.int64)
    seg = ((~np.frombuffer(ulaw_encode(ALL_INT16), np.uint8).astype(np.int64)) & 0x70) >> 4
    step = 8 << seg
    inside = np.abs(x) <= 32124
    err = np.abs(x - q)
    assert np.all(err[inside] < step[inside])
    over_half = inside & (2 * err > step)
    assert over_half.sum() == 381 and np.all(x[over_half] < 0)


def test_encode_of_decode_is_identity_except_negative_zero():
    back = np.frombuffer(ulaw_encode(ulaw_decode(ALL_CODES)), np.uint8)
    ref_back = np.frombuffer(audioop.lin2ulaw(audioop.ulaw2lin(ALL_CODES, 2), 2), np.uint8)
    np.testing.assert_array_equal(back, ref_back)  # the reference does exactly the same
    changed = {c: int(back[c]) for c in range(256) if back[c] != c}
    assert changed == {0x7F: 0xFF}  # "-0" decodes to 0, which encodes as "+0"
    # 0x7F is the one code the encoder never produces
    assert set(range(256)) - set(ulaw_encode(ALL_INT16)) == {0x7F}


def test_encode_rejects_non_int16():
    with pytest.raises(TypeError):
        ulaw_encode(np.zeros(10, np.float32))
    with pytest.raises(TypeError):
        ulaw_encode(np.zeros(10, np.int32))


def test_encode_accepts_non_contiguous_and_2d_int16():
    x = np.arange(-3000, 3000, 7, dtype=np.int16)
    assert ulaw_encode(x[::3]) == ref_encode(x[::3])
    assert ulaw_encode(x[:800].reshape(40, 20)) == ref_encode(x[:800])


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int16, st.integers(0, 2000)))
def test_hypothesis_encoder_matches_audioop(x):
    assert ulaw_encode(x) == ref_encode(x)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=1000))
def test_hypothesis_decoder_matches_audioop(b):
    np.testing.assert_array_equal(ulaw_decode(b), ref_decode(b))


# ----------------------------------------------------------------------------- resampler


def sine(freq: float, rate: int, seconds: float, amp: float = 12000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@pytest.mark.parametrize("quality", ["QQ", "LQ", "MQ", "HQ"])
@pytest.mark.parametrize("rin,rout", [(TWILIO_RATE, OPENAI_RATE), (OPENAI_RATE, TWILIO_RATE)])
def test_streamed_20ms_frames_equal_one_shot(quality, rin, rout):
    x = sine(1000, rin, 1.0)
    r = StreamResampler(rin, rout, quality)
    ref = oneshot_int16(x, rin, rout, quality)
    frame = rin // 50
    parts, produced = [], 0
    for i in range(0, len(x), frame):
        y = r.process(x[i:i + frame])
        assert y.dtype == np.int16
        # what has come out so far is a prefix of the one-shot output: time-aligned, no
        # leading delay, so "aligning by the latency" means comparing the first n samples
        np.testing.assert_allclose(y, ref[produced:produced + len(y)], atol=1, rtol=0)
        parts.append(y)
        produced += len(y)
    parts.append(r.flush())
    out = np.concatenate(parts)
    assert len(out) == len(ref) == round(len(x) * rout / rin)
    assert np.max(np.abs(out.astype(np.int32) - ref)) <= 1  # no discontinuity at frame edges


def test_stream_output_is_time_aligned_with_input():
    """Round trip 8k→24k→8k of a 1 kHz sine comes back at lag 0 (no delay to compensate)."""
    x = sine(1000, TWILIO_RATE, 1.0)
    up, down = StreamResampler(TWILIO_RATE, OPENAI_RATE), StreamResampler(OPENAI_RATE, TWILIO_RATE)
    y = np.concatenate([up.process(x[i:i + 160]) for i in range(0, len(x), 160)] + [up.flush()])
    z = np.concatenate([down.process(y[i:i + 480]) for i in range(0, len(y), 480)] + [down.flush()])
    assert len(z) == len(x)
    core = slice(400, len(x) - 400)
    assert np.max(np.abs(z[core].astype(np.int32) - x[core])) <= 2


@pytest.mark.parametrize("quality", ["QQ", "LQ", "MQ", "HQ"])
def test_withheld_audio_never_exceeds_latency_ms(quality):
    x = speech_8k()
    r = StreamResampler(TWILIO_RATE, OPENAI_RATE, quality)
    lat = r.latency_ms
    assert 0 <= r.mean_latency_ms <= lat
    fed = produced = 0
    worst = 0.0
    for i in range(0, len(x) - 160, 160):
        produced += len(r.process(x[i:i + 160]))
        fed += 160
        worst = max(worst, (fed * 3 - produced) / OPENAI_RATE * 1000)
    assert worst <= lat + 1e-6
    assert worst >= lat - 20  # measured, not a loose upper bound
    if quality == "QQ":
        assert lat < 1.0
    else:
        assert 20 <= lat <= 100


def test_flush_returns_the_tail_and_readies_the_next_burst():
    x = sine(440, OPENAI_RATE, 0.5)
    r = StreamResampler(OPENAI_RATE, TWILIO_RATE)
    body = [r.process(x[i:i + 2400]) for i in range(0, len(x), 2400)]
    tail = r.flush()
    assert len(tail) > 0
    first = np.concatenate(body + [tail])
    assert len(first) == len(x) // 3
    # second burst on the same object == the same burst on a fresh object
    x2 = sine(700, OPENAI_RATE, 0.3)
    again = np.concatenate([r.process(x2[i:i + 2400]) for i in range(0, len(x2), 2400)] + [r.flush()])
    fresh = StreamResampler(OPENAI_RATE, TWILIO_RATE)
    expect = np.concatenate([fresh.process(x2[i:i + 2400]) for i in range(0, len(x2), 2400)] + [fresh.flush()])
    np.testing.assert_array_equal(again, expect)
    assert len(r.flush()) == 0  # flushing an empty burst yields nothing


def test_reset_starts_clean():
    junk = sine(3000, TWILIO_RATE, 0.37, amp=30000)
    x = sine(1000, TWILIO_RATE, 0.5)
    r = StreamResampler(TWILIO_RATE, OPENAI_RATE)
    r.process(junk)
    r.reset()
    got = np.concatenate([r.process(x[i:i + 160]) for i in range(0, len(x), 160)] + [r.flush()])
    np.testing.assert_array_equal(got, oneshot_int16(x, TWILIO_RATE, OPENAI_RATE, SOXR_DEFAULT_QUALITY))


def test_output_saturates_instead_of_wrapping():
    # a full-scale square wave overshoots when resampled; int16 must clip, not wrap around
    x = np.tile(np.r_[np.full(20, 32767), np.full(20, -32768)].astype(np.int16), 40)
    r = StreamResampler(TWILIO_RATE, OPENAI_RATE)
    y = np.concatenate([r.process(x), r.flush()])
    ref = soxr.resample(x.astype(np.float32), TWILIO_RATE, OPENAI_RATE, quality=SOXR_DEFAULT_QUALITY)
    assert ref.max() > 32767  # the test input really does overshoot
    np.testing.assert_array_equal(y, np.clip(np.rint(ref), -32768, 32767).astype(np.int16))


def test_bad_quality_rejected():
    with pytest.raises(ValueError):
        StreamResampler(8000, 24000, "best")
    with pytest.raises(ValueError):
        StreamResampler(8000, 24000, FIR_QUALITY)  # not a soxr quality
    with pytest.raises(ValueError):
        Transcoder("best")


def test_default_quality_is_the_low_delay_fir():
    assert DEFAULT_QUALITY == FIR_QUALITY
    assert Transcoder().latency_ms <= 5.0
    assert Transcoder("HQ").latency_ms > 20.0


# ----------------------------------------------------------------------------- Transcoder


def transcode_round_trip(quality: str, name: str = "caller_weather_question.wav"):
    ulaw_in = ulaw_encode(speech_8k(name))
    t = Transcoder(quality)
    up = b"".join(t.inbound(ulaw_in[i:i + 160]) for i in range(0, len(ulaw_in), 160))
    delta = 4800  # 100 ms of pcm16 at 24 kHz, a typical response.output_audio.delta
    ulaw_out = run_outbound(t, (up[i:i + delta] for i in range(0, len(up), delta)))
    return t, ulaw_decode(ulaw_in), ulaw_decode(ulaw_out)


@pytest.mark.parametrize("quality", [FIR_QUALITY, "HQ"])
def test_transcoder_round_trip_on_real_speech_meets_35_db(quality):
    t, a, b = transcode_round_trip(quality)
    # inbound is never flushed (the caller's stream goes on), so the output is short by at
    # most what inbound withholds; it is time-aligned, so "aligned by the latency" = lag 0
    shortfall_ms = (len(a) - len(b)) / TWILIO_RATE * 1000
    assert 0 <= shortfall_ms <= t.latency_ms
    n = len(b)
    snrs = {lag: snr_db(a[100:n - 100], b[100 + lag:n - 100 + lag]) for lag in range(-3, 4)}
    assert max(snrs, key=snrs.get) == 0
    assert snrs[0] >= 35.0, snrs[0]


@pytest.mark.parametrize("quality", [FIR_QUALITY, "HQ"])
def test_quality_rejects_out_of_band_model_audio(quality):
    """Why not QQ: the round trip cannot see aliasing, but 24 kHz model speech has 4–12 kHz."""
    for freq in (5000, 9000):  # would alias to 3 kHz and 1 kHz
        x = sine(freq, OPENAI_RATE, 0.5)
        out = ulaw_decode(run_outbound(Transcoder(quality), [x.tobytes()]))
        assert np.sqrt(np.mean(out[400:-400].astype(np.float64) ** 2)) < 12000 * 1e-3  # < -60 dB
        qq = ulaw_decode(run_outbound(Transcoder("QQ"), [x.tobytes()]))
        assert np.sqrt(np.mean(qq[400:-400].astype(np.float64) ** 2)) > 12000 * 0.1  # QQ aliases


def test_inbound_is_pcm16_le_at_24k_and_matches_one_shot():
    x = speech_8k()[:8000]
    ulaw_in = ulaw_encode(x)
    t = Transcoder("HQ")
    out = b"".join(t.inbound(ulaw_in[i:i + 160]) for i in range(0, len(ulaw_in), 160))
    assert len(out) % 2 == 0
    got = np.frombuffer(out, dtype="<i2")
    ref = oneshot_int16(ulaw_decode(ulaw_in), TWILIO_RATE, OPENAI_RATE, "HQ")
    assert len(ref) - len(got) <= t.latency_ms * OPENAI_RATE / 1000
    np.testing.assert_array_equal(got, ref[:len(got)])


def test_outbound_matches_one_shot_resample_then_g711():
    y, sr = sf.read(AUDIO / "assistant_short_reply.wav", dtype="int16")
    assert sr == OPENAI_RATE
    pcm = y.astype("<i2").tobytes()
    got = run_outbound(Transcoder("HQ"), [pcm[i:i + 4800] for i in range(0, len(pcm), 4800)])
    assert got == ulaw_encode(oneshot_int16(y, OPENAI_RATE, TWILIO_RATE, "HQ"))


def long_pcm() -> bytes:
    """0.5 s of model speech, loud from its first sample (a silent start would hide byte slips)."""
    y, _ = sf.read(AUDIO / "assistant_short_reply.wav", dtype="int16")
    y = y[6000:18000]
    assert all(np.abs(y[i:i + 240].astype(np.int32)).max() > 300 for i in range(0, 2400, 240))
    return y.astype("<i2").tobytes()


@pytest.mark.parametrize("quality", [FIR_QUALITY, "HQ"])
def test_odd_byte_carry(quality):
    pcm = long_pcm()
    whole = run_outbound(Transcoder(quality), [pcm])
    for cuts in ([1], [4799], [1, 2, 3, 4, 5], [101, 1001, 1003, 9999]):
        edges = [0, *cuts, len(pcm)]
        pieces = [pcm[a:b] for a, b in zip(edges, edges[1:])]
        assert run_outbound(Transcoder(quality), pieces) == whole, cuts
    # one byte at a time
    t = Transcoder(quality)
    assert b"".join(t.outbound(pcm[i:i + 1]) for i in range(0, 3001)) + t.outbound_flush() \
        == run_outbound(Transcoder(quality), [pcm[:3000]])


@pytest.mark.parametrize("quality", [FIR_QUALITY, "HQ"])
def test_outbound_flush_drops_dangling_half_sample_and_resets(quality):
    pcm = long_pcm()[:4801]  # 2400 samples and half of one
    t = Transcoder(quality)
    first = run_outbound(t, [pcm])
    assert first == run_outbound(Transcoder(quality), [pcm[:4800]])
    assert run_outbound(t, [pcm[:4800]]) == first  # next response starts clean


@pytest.mark.parametrize("quality", [FIR_QUALITY, "HQ"])
def test_outbound_reset_forgets_withheld_audio_and_carry(quality):
    pcm = long_pcm()
    t = Transcoder(quality)
    t.outbound(pcm[:4801])  # mid-response, with a carried byte and withheld audio
    t.outbound_reset()  # barge-in
    assert run_outbound(t, [pcm[:6000]]) == run_outbound(Transcoder(quality), [pcm[:6000]])


@pytest.mark.parametrize("quality", [FIR_QUALITY, "HQ"])
def test_inbound_reset_starts_clean(quality):
    u = ulaw_encode(speech_8k()[:4000])
    t = Transcoder(quality)
    t.inbound(u[:1000])
    t.inbound_reset()
    assert t.inbound(u) == Transcoder(quality).inbound(u)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 24001), max_size=25), st.integers(0, 24001))
@pytest.mark.parametrize("quality", [FIR_QUALITY, "HQ"])
def test_hypothesis_any_chunking_gives_identical_outbound(quality, cuts, length):
    pcm = long_pcm()[:length]
    edges = [0, *sorted(c for c in cuts if c <= len(pcm)), len(pcm)]
    pieces = [pcm[a:b] for a, b in zip(edges, edges[1:])]
    assert run_outbound(Transcoder(quality), pieces) == run_outbound(Transcoder(quality), [pcm])

