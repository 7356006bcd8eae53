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
from callsim.bridge.polyphase import DELAY, PolyphaseResampler

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
