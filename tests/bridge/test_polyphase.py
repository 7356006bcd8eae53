"""Tests of bridge/polyphase.py: the low-delay FIR resampler behind RESAMPLE_QUALITY=FIR.

Each test checks one promise against an independent reference: a direct full-rate
``np.convolve`` of the same taps (for the streaming arithmetic), soxr HQ (for alias
rejection and round-trip quality), an impulse and a step through the streaming path (for
the delay).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from callsim.bridge.codec import StreamResampler, Transcoder, ulaw_decode, ulaw_encode
from callsim.bridge.polyphase import (
    DELAY,
    HIGH_RATE,
    LATENCY_MS,
    LOW_RATE,
    PolyphaseResampler,
    down_filter,
    up_filter,
)

AUDIO = Path(__file__).resolve().parents[2] / "fixtures" / "audio"


def to_int16(y: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def ref_up(x: np.ndarray) -> np.ndarray:
    """Zero-stuff by 3, filter at 24 kHz, drop the delay: what the branches must compute."""
    xs = np.zeros(3 * len(x))
    xs[::3] = 3.0 * x.astype(np.float64)
    return to_int16(np.convolve(xs, up_filter())[DELAY:DELAY + len(xs)])


def ref_down(x: np.ndarray) -> np.ndarray:
    n = -(-len(x) // 3)
    return to_int16(np.convolve(x.astype(np.float64), down_filter())[DELAY:DELAY + len(x)][::3][:n])


def stream(r: PolyphaseResampler, x: np.ndarray, size: int) -> list[np.ndarray]:
    return [r.process(x[i:i + size]) for i in range(0, len(x), size)]


def noise(n: int, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 4000).astype(np.int16)


def reply_24k() -> np.ndarray:
    y, sr = sf.read(AUDIO / "assistant_long_reply.wav", dtype="int16")
    assert sr == HIGH_RATE
    return y


def caller_8k() -> np.ndarray:
    x, sr = sf.read(AUDIO / "caller_weather_question.wav", dtype="int16")
    return soxr.resample(x, sr, LOW_RATE, quality="HQ")


# ----------------------------------------------------------------------------- lengths


def test_up_output_is_exactly_three_times_each_20ms_frame_after_the_delay():
    r = PolyphaseResampler(LOW_RATE, HIGH_RATE)
    lens = [len(y) for y in stream(r, noise(8000), 160)]
    assert lens[0] == 480 - DELAY  # the delay, withheld once per burst
    assert set(lens[1:]) == {480}  # then no bursts: 3× every frame
    assert len(r.flush()) == DELAY


def test_down_output_is_exactly_a_third_of_each_chunk_after_the_delay():
    r = PolyphaseResampler(HIGH_RATE, LOW_RATE)
    lens = [len(y) for y in stream(r, noise(24000), 480)]
    assert lens[0] == 160 - DELAY // 3
    assert set(lens[1:]) == {160}
    assert len(r.flush()) == DELAY // 3


def test_withheld_audio_is_the_delay_and_nothing_else():
    for rin, rout, size in ((LOW_RATE, HIGH_RATE, 160), (HIGH_RATE, LOW_RATE, 480)):
        r = PolyphaseResampler(rin, rout)
        fed = produced = 0
        for y in stream(r, noise(rin), size):
            fed += size
            produced += len(y)
            assert (fed * rout / rin - produced) * 1000 / rout == pytest.approx(LATENCY_MS)
    assert LATENCY_MS == 5.0 and r.latency_ms == r.mean_latency_ms == 5.0


# ----------------------------------------------------------------------------- delay


@pytest.mark.parametrize("rin,rout,size", [(LOW_RATE, HIGH_RATE, 160), (HIGH_RATE, LOW_RATE, 480)])
def test_delay_is_the_group_delay_measured_by_an_impulse_and_a_step(rin, rout, size):
    """Through the streaming path with the trimming undone: the filter's delay is DELAY.

    ``_filter`` is the stream before the withheld part is dropped; an impulse at input
    sample 0 must peak at output DELAY (24 kHz samples), a step must cross half its final
    value there, and the group delay of the taps over the telephone band must stay within
    3 samples (0.125 ms) of DELAY (a least-squares low-delay filter ripples around it).
    """
    r = PolyphaseResampler(rin, rout)
    impulse = np.zeros(rin // 10)
    impulse[0] = 10000.0
    y = np.concatenate([r._filter(impulse[i:i + size]) for i in range(0, len(impulse), size)])
    delay_out = DELAY * rout // HIGH_RATE
    assert int(np.argmax(np.abs(y))) == delay_out
    r.reset()
    step = np.full(rin // 10, 10000.0)
    s = np.concatenate([r._filter(step[i:i + size]) for i in range(0, len(step), size)])
    cross = int(np.argmax(s >= 5000.0))
    assert abs(cross - delay_out) <= 1, cross
    # group delay of the taps over the telephone band (0.1–3.4 kHz): DELAY samples
    h = up_filter() if rin == LOW_RATE else down_filter()
    f = np.linspace(100, 3400, 200)
    e = np.exp(-2j * np.pi * np.outer(f / HIGH_RATE, np.arange(len(h))))
    group = np.real((e @ (np.arange(len(h)) * h)) / (e @ h))  # τ(ω) = Re(Σ n h e^{-jωn} / H(ω))
    assert np.max(np.abs(group - DELAY)) <= 3.0, np.max(np.abs(group - DELAY))  # ≤ 0.125 ms of ripple


def test_output_is_time_aligned_so_a_round_trip_comes_back_at_lag_0():
    x = caller_8k()
    up, down = PolyphaseResampler(LOW_RATE, HIGH_RATE), PolyphaseResampler(HIGH_RATE, LOW_RATE)
    y = np.concatenate(stream(up, x, 160) + [up.flush()])
    z = np.concatenate(stream(down, y, 480) + [down.flush()])
    assert len(y) == 3 * len(x) and len(z) == len(x)
    core = slice(400, len(x) - 400)
    err = {lag: np.sum((z[core].astype(float) - np.roll(x, lag)[core]) ** 2) for lag in range(-3, 4)}
    assert min(err, key=err.get) == 0


# ----------------------------------------------------------------------------- stream = one-shot


@pytest.mark.parametrize("size", [1, 7, 160, 333, 4000])
def test_up_stream_equals_one_shot(size):
    x = noise(4000)
    r = PolyphaseResampler(LOW_RATE, HIGH_RATE)
    got = np.concatenate(stream(r, x, size) + [r.flush()])
    np.testing.assert_array_equal(got, ref_up(x))
    one = PolyphaseResampler(LOW_RATE, HIGH_RATE)
    np.testing.assert_array_equal(got, np.concatenate([one.process(x), one.flush()]))


@pytest.mark.parametrize("size", [1, 2, 5, 480, 481, 4801])
@pytest.mark.parametrize("n", [12000, 12001, 12002])
def test_down_stream_equals_one_shot_for_any_chunk_size_and_phase(size, n):
    x = noise(n, seed=2)
    r = PolyphaseResampler(HIGH_RATE, LOW_RATE)
    got = np.concatenate(stream(r, x, size) + [r.flush()])
    assert len(got) == -(-n // 3)
    np.testing.assert_array_equal(got, ref_down(x))


def test_chunked_speech_has_no_clicks_at_frame_edges():
    """The same reply whole and in 20 ms chunks: identical samples, so no edge discontinuity."""
    y = reply_24k()
    whole = PolyphaseResampler(HIGH_RATE, LOW_RATE)
    a = np.concatenate([whole.process(y), whole.flush()])
    chunked = PolyphaseResampler(HIGH_RATE, LOW_RATE)
    b = np.concatenate(stream(chunked, y, 480) + [chunked.flush()])
    np.testing.assert_array_equal(a, b)


def test_flush_and_reset_start_the_next_burst_clean():
    x, junk = noise(2000, seed=3), noise(777, seed=4)
    for rin, rout in ((LOW_RATE, HIGH_RATE), (HIGH_RATE, LOW_RATE)):
        fresh = PolyphaseResampler(rin, rout)
        expect = np.concatenate([fresh.process(x), fresh.flush()])
        r = PolyphaseResampler(rin, rout)
        r.process(junk)
        r.flush()
        np.testing.assert_array_equal(np.concatenate([r.process(x), r.flush()]), expect)
        r.process(junk)
        r.reset()
        np.testing.assert_array_equal(np.concatenate([r.process(x), r.flush()]), expect)
        assert len(r.flush()) == 0 or not np.any(r.flush())


def test_output_saturates_instead_of_wrapping():
    x = np.tile(np.r_[np.full(20, 32767), np.full(20, -32768)].astype(np.int16), 40)
    r = PolyphaseResampler(LOW_RATE, HIGH_RATE)
    y = np.concatenate([r.process(x), r.flush()])
    xs = np.zeros(3 * len(x))
    xs[::3] = 3.0 * x
    assert np.convolve(xs, up_filter()).max() > 32767  # the input really overshoots
    np.testing.assert_array_equal(y, ref_up(x))


def test_only_8k_24k_pairs():
    with pytest.raises(ValueError):
        PolyphaseResampler(16000, 24000)


# ----------------------------------------------------------------------------- quality


def test_round_trip_snr_on_real_speech_is_at_least_35_db_and_beats_hq():
    """caller fixture → μ-law → Transcoder in 20 ms frames → 24 kHz → 100 ms deltas → μ-law."""
    ulaw_in = ulaw_encode(caller_8k())
    a = ulaw_decode(ulaw_in).astype(np.float64)
    snr = {}
    for quality in ("FIR", "HQ"):
        t = Transcoder(quality)
        up = b"".join(t.inbound(ulaw_in[i:i + 160]) for i in range(0, len(ulaw_in), 160))
        out = b"".join(t.outbound(up[i:i + 4800]) for i in range(0, len(up), 4800)) + t.outbound_flush()
        b = ulaw_decode(out).astype(np.float64)
        n = len(b)
        snr[quality] = 10 * np.log10(np.sum(a[100:n - 100] ** 2) / np.sum((a[100:n - 100] - b[100:n - 100]) ** 2))
    assert snr["FIR"] >= 35.0, snr
    assert snr["FIR"] >= snr["HQ"], snr


@pytest.mark.parametrize("freq", [4050, 4200, 5000, 9000, 11900])
def test_tones_above_4k_are_attenuated_at_least_as_much_as_soxr_hq(freq):
    """24 → 8 kHz of a loud tone that would alias into the call: what comes out, as int16."""
    x = (12000 * np.sin(2 * np.pi * freq * np.arange(HIGH_RATE // 2) / HIGH_RATE)).astype(np.int16)
    fir = PolyphaseResampler(HIGH_RATE, LOW_RATE)
    ours = np.concatenate([fir.process(x), fir.flush()])[200:-200].astype(np.float64)
    hq = StreamResampler(HIGH_RATE, LOW_RATE, "HQ")
    theirs = np.concatenate([hq.process(x), hq.flush()])[200:-200].astype(np.float64)
    assert np.sqrt(np.mean(ours ** 2)) <= np.sqrt(np.mean(theirs ** 2)), freq
    # and in the filter itself, before rounding: ≥ 100 dB down
    h = down_filter()
    gain = abs(np.exp(-2j * np.pi * freq / HIGH_RATE * np.arange(len(h))) @ h)
    assert 20 * np.log10(gain) <= -100.0


def test_alias_rejection_on_the_wideband_reply_is_at_least_hq_at_the_bridge_output():
    """The reply's energy from 4 kHz up, through each resampler as the bridge runs it (int16).

    alias = what the reply's ≥ 4 kHz part adds to the 8 kHz output, measured as the
    difference between the outputs of the whole reply and of its < 4 kHz part (both
    through the same path, edges left out); rejection = output energy / alias energy.
    """
    y = reply_24k().astype(np.float64)
    spec = np.fft.rfft(y)
    spec[np.fft.rfftfreq(len(y), 1 / HIGH_RATE) >= 4000] = 0
    low = np.fft.irfft(spec, len(y))
    assert np.sum((y - low) ** 2) > 1e-3 * np.sum(y ** 2)  # the fixture really is wideband

    def through(make, sig):
        r = make()
        s = to_int16(sig)
        return np.concatenate([r.process(s[i:i + 480]) for i in range(0, len(s), 480)] + [r.flush()])

    rejection = {}
    for name, make in (("FIR", lambda: PolyphaseResampler(HIGH_RATE, LOW_RATE)),
                       ("HQ", lambda: StreamResampler(HIGH_RATE, LOW_RATE, "HQ"))):
        whole, lo = through(make, y)[800:-800], through(make, low)[800:-800]
        alias = np.sum((whole.astype(np.float64) - lo) ** 2)
        rejection[name] = 10 * np.log10(np.sum(whole.astype(np.float64) ** 2) / max(alias, 1e-9))
    assert rejection["FIR"] >= rejection["HQ"] - 0.5, rejection
