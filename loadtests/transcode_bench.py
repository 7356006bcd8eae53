"""The transcoding resamplers side by side: latency, round-trip SNR, alias rejection, CPU.

    python loadtests/transcode_bench.py [--frames N]

One run measures every ``RESAMPLE_QUALITY`` of the bridge (``FIR``, the low-delay
polyphase filter, and soxr's QQ/LQ/MQ/HQ/VHQ) on this project's fixtures, the way the
bridge runs them (``bridge.codec.Transcoder``: μ-law in 20 ms frames, 100 ms deltas out):

* **withheld ms** per direction, mean and worst over the 20 ms chunks of 2 s of speech:
  what the resampler has been given but not yet returned (both are time-aligned, so this
  is the latency it adds to every turn in that direction);
* **round trip**: caller speech (caller_weather_question, 8 kHz μ-law) up to 24 kHz and
  back to μ-law, SNR of the decoded output against the decoded input at lag 0;
* **alias**: the wideband reply (assistant_long_reply, 24 kHz) down to 8 kHz; what its
  ≥ 4 kHz part adds to the output (output of the whole reply minus output of its < 4 kHz
  part), as output energy over that, in dB: at the bridge's int16 output, and before
  rounding (the filter alone: soxr one-shot in float64, the FIR's taps in float64);
* **µs per frame**: median CPU time of ``Transcoder.inbound`` on a 20 ms μ-law frame and
  of ``Transcoder.outbound`` on 20 ms of pcm16, μ-law coding included (what runs 50 times
  a second per direction per call).

A second table answers "why not less lookahead on the caller's side?": the caller's filter
(8 → 24 kHz) designed as the shipped one but for a lookahead of 0 to 5 ms, and the shipped
filter turned minimum-phase (same gain, no lookahead: the cepstral method), each followed by
the shipped 24 → 8 kHz filter, round-trip SNR as above (at the best whole-sample lag for the
minimum-phase one, whose delay is no whole number of samples). Any lookahead at all sends the
last words of an utterance ending within it of a Twilio frame edge one 20 ms frame later
(``transcode_phase.py`` measures that); only none avoids it, and none costs the SNR.

No server, no network: a few seconds on one core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from callsim.bridge.codec import (
    OPENAI_RATE,
    QUALITIES,
    TWILIO_RATE,
    Transcoder,
    make_resampler,
    ulaw_decode,
    ulaw_encode,
)
from callsim.bridge.polyphase import DELAY, TAPS, UP_DESIGN, PolyphaseResampler, down_filter, low_delay_lowpass, up_filter

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
FRAME_IN = TWILIO_RATE // 50  # 160 samples: one Twilio media frame
FRAME_OUT = OPENAI_RATE // 50  # 480 samples: 20 ms of model audio


def caller_8k() -> np.ndarray:
    x, sr = sf.read(AUDIO / "caller_weather_question.wav", dtype="int16")
    return soxr.resample(x, sr, TWILIO_RATE, quality="HQ")


def reply_24k() -> np.ndarray:
    y, sr = sf.read(AUDIO / "assistant_long_reply.wav", dtype="int16")
    assert sr == OPENAI_RATE
    return y


def withheld_ms(quality: str, rin: int, rout: int, x: np.ndarray) -> tuple[float, float]:
    """(mean, worst) ms given but not yet returned after each 20 ms chunk of ``x`` (2 s)."""
    r = make_resampler(rin, rout, quality)
    size = rin // 50
    fed = produced = 0
    held = []
    for i in range(0, min(len(x), 2 * rin) - size + 1, size):
        produced += len(r.process(x[i:i + size]))
        fed += size
        held.append((fed * rout / rin - produced) * 1000 / rout)
    return float(np.mean(held)), float(np.max(held))


def round_trip_snr(quality: str, ulaw_in: bytes) -> float:
    """SNR in dB at lag 0; ``inf`` when the μ-law comes back identical (QQ's artefact)."""
    t = Transcoder(quality)
    up = b"".join(t.inbound(ulaw_in[i:i + FRAME_IN]) for i in range(0, len(ulaw_in), FRAME_IN))
    out = b"".join(t.outbound(up[i:i + 4800]) for i in range(0, len(up), 4800)) + t.outbound_flush()
    a = ulaw_decode(ulaw_in).astype(np.float64)
    b = ulaw_decode(out).astype(np.float64)
    n = len(b)
    a, b = a[100:n - 100], b[100:n - 100]
    err = np.sum((a - b) ** 2)
    return float(10 * np.log10(np.sum(a ** 2) / err)) if err else float("inf")


def _rejection(whole: np.ndarray, low: np.ndarray) -> float:
    whole, low = whole[800:-800].astype(np.float64), low[800:-800].astype(np.float64)
    return float(10 * np.log10(np.sum(whole ** 2) / max(np.sum((whole - low) ** 2), 1e-30)))


def alias_db(quality: str, reply: np.ndarray, low: np.ndarray) -> tuple[float, float]:
    """(at the int16 output, before rounding) alias rejection of the reply, in dB."""
    def bridge_path(sig: np.ndarray) -> np.ndarray:
        r = make_resampler(OPENAI_RATE, TWILIO_RATE, quality)
        s = np.clip(np.rint(sig), -32768, 32767).astype(np.int16)
        return np.concatenate([r.process(s[i:i + FRAME_OUT]) for i in range(0, len(s), FRAME_OUT)] + [r.flush()])

    def float_path(sig: np.ndarray) -> np.ndarray:
        if quality == "FIR":
            r = PolyphaseResampler(OPENAI_RATE, TWILIO_RATE)
            return np.concatenate([r._filter(sig), r._filter(np.zeros(DELAY))])[DELAY // 3:]
        return soxr.resample(sig.astype(np.float64), OPENAI_RATE, TWILIO_RATE, quality=quality)

    return (_rejection(bridge_path(reply), bridge_path(low)),
            _rejection(float_path(reply.astype(np.float64)), float_path(low)))


def us_per_frame(quality: str, ulaw_in: bytes, pcm_out: bytes, frames: int) -> tuple[float, float]:
    """Median µs of one inbound 20 ms frame and one outbound 20 ms delta (μ-law coding included)."""
    t = Transcoder(quality)
    ins = [ulaw_in[i:i + FRAME_IN] for i in range(0, len(ulaw_in) - FRAME_IN + 1, FRAME_IN)]
    outs = [pcm_out[i:i + 2 * FRAME_OUT] for i in range(0, len(pcm_out) - 2 * FRAME_OUT + 1, 2 * FRAME_OUT)]
    clock = time.perf_counter_ns
    tin, tout = [], []
    for k in range(frames):
        a = ins[k % len(ins)]
        t0 = clock()
        t.inbound(a)
        t1 = clock()
        t.outbound(outs[k % len(outs)])
        t2 = clock()
        tin.append(t1 - t0)
        tout.append(t2 - t1)
    return float(np.median(tin)) / 1000, float(np.median(tout)) / 1000


def minimum_phase(h: np.ndarray, nfft: int = 1 << 16) -> np.ndarray:
    """The minimum-phase filter with the gain of ``h`` (homomorphic: fold the real cepstrum of |H|)."""
    log_mag = np.log(np.maximum(np.abs(np.fft.fft(h, nfft)), 1e-12))
    cep = np.fft.ifft(log_mag).real
    fold = np.zeros(nfft)
    fold[0], fold[nfft // 2] = 1.0, 1.0
    fold[1:nfft // 2] = 2.0
    return np.fft.ifft(np.exp(np.fft.fft(cep * fold))).real[:len(h)]


def filter_round_trip_snr(up: np.ndarray, ulaw_in: bytes, lags: range) -> float:
    """Round-trip SNR (dB) of μ-law through ``up`` (8 → 24 kHz) and the shipped down filter, one
    shot in float64, the output μ-law coded, at the best 8 kHz lag in ``lags``."""
    a = ulaw_decode(ulaw_in).astype(np.float64)
    z = np.zeros(len(a) * 3)
    z[::3] = a * 3
    hi = np.clip(np.rint(np.convolve(z, up)[:len(z)]), -32768, 32767)
    low = np.convolve(hi, down_filter())[:len(hi)]
    best = -np.inf
    for lag in lags:
        b = low[3 * lag::3]
        b = ulaw_decode(ulaw_encode(np.clip(np.rint(b), -32768, 32767).astype(np.int16))).astype(np.float64)
        n = min(len(a), len(b))
        aa, bb = a[100:n - 100], b[100:n - 100]
        best = max(best, float(10 * np.log10(np.sum(aa ** 2) / np.sum((aa - bb) ** 2))))
    return best


def lookahead_rows(ulaw_in: bytes) -> list[tuple[str, float]]:
    """(caller-side filter, round-trip SNR dB): least-squares designs by lookahead, then minimum-phase."""
    rows = []
    for ms in (0, 0.5, 1, 2, 3, 4, 5):
        d = int(ms * 24)  # samples at 24 kHz, a multiple of 3: a whole 8 kHz lag
        h = up_filter() if d == DELAY else low_delay_lowpass(TAPS, d, *UP_DESIGN)
        rows.append((f"lookahead {ms:g} ms" + (" (shipped)" if d == DELAY else ""),
                     filter_round_trip_snr(h, ulaw_in, range((d + DELAY) // 3, (d + DELAY) // 3 + 1))))
    rows.append(("minimum-phase, no lookahead", filter_round_trip_snr(minimum_phase(up_filter()), ulaw_in,
                                                                        range(DELAY // 3, DELAY // 3 + 80))))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=5000, help="frames timed per direction and quality (default 5000)")
    args = ap.parse_args(argv)

    caller = caller_8k()
    ulaw_in = ulaw_encode(caller)
    reply = reply_24k()
    spec = np.fft.rfft(reply.astype(np.float64))
    spec[np.fft.rfftfreq(len(reply), 1 / OPENAI_RATE) >= 4000] = 0
    low = np.fft.irfft(spec, len(reply))
    pcm_out = reply.astype("<i2").tobytes()
    caller_pcm = np.frombuffer(ulaw_decode(ulaw_in).astype("<i2").tobytes(), "<i2")

    header = ("quality", "in: withheld ms", "out: withheld ms", "round trip", "alias int16", "alias float",
              "µs/frame in", "µs/frame out")
    print(f"transcoding resamplers, 20 ms frames; withheld ms as mean / worst; "
          f"{args.frames} frames timed per direction")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    order = ("FIR", *(q for q in QUALITIES if q != "FIR"))
    for q in order:
        up = withheld_ms(q, TWILIO_RATE, OPENAI_RATE, caller_pcm)
        down = withheld_ms(q, OPENAI_RATE, TWILIO_RATE, reply)
        snr = round_trip_snr(q, ulaw_in)
        a16, af = alias_db(q, reply, low)
        uin, uout = us_per_frame(q, ulaw_in, pcm_out, args.frames)
        snr_cell = "identical" if snr == float("inf") else f"{snr:.1f} dB"
        print(f"| {q} | {up[0]:.1f} / {up[1]:.1f} | {down[0]:.1f} / {down[1]:.1f} | {snr_cell} "
              f"| {a16:.1f} dB | {af:.1f} dB | {uin:.1f} | {uout:.1f} |")
    print()
    print("the caller's filter by lookahead (then the shipped 24 → 8 kHz filter): round-trip SNR")
    print("| caller-side filter | round trip |")
    print("|---|---|")
    for name, snr in lookahead_rows(ulaw_in):
        print(f"| {name} | {snr:.1f} dB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
