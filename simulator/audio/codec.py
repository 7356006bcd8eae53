"""The harness's own audio conversions: fixture PCM → 8 kHz μ-law, and back.

Per design.md rule 1 the simulator never shares codec code with the bridge: a
bug in one must not hide in both. So this module goes through libsndfile
(``soundfile``) for G.711 and ``soxr`` for resampling — independent
implementations of what the bridge does with its own lookup tables.

Note the pitfall recorded in stack.md: libsndfile's μ-law *encoder* differs from
the CCITT g711.c reference on 381 negative inputs. That is harmless here (the
caller just needs *some* valid μ-law of its fixtures); bit-exact checks compare
μ-law bytes that went through no encoder at all.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 160 bytes of μ-law per 20 ms frame
BYTES_PER_MS = SAMPLE_RATE // 1000  # μ-law: one byte per sample
SILENCE_BYTE = 0xFF  # μ-law code of +0, what an idle telephone line carries
SILENCE_FRAME = bytes([SILENCE_BYTE]) * FRAME_BYTES


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """One-shot soxr resampling (HQ) of int16 or float audio to ``rate_out``."""
    if rate_in == rate_out:
        return samples
    return soxr.resample(samples, rate_in, rate_out, quality="HQ")


def pcm16_to_ulaw(samples: np.ndarray) -> bytes:
    """Encode int16 samples to raw μ-law bytes with libsndfile."""
    pcm = np.ascontiguousarray(samples, dtype=np.int16)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=SAMPLE_RATE, channels=1, format="RAW", subtype="ULAW") as f:
        f.write(pcm)
    return buf.getvalue()


def ulaw_to_pcm16(data: bytes) -> np.ndarray:
    """Decode raw μ-law bytes to int16 samples with libsndfile (decoders agree exactly)."""
    if not data:
        return np.zeros(0, dtype=np.int16)
    samples, _ = sf.read(
        io.BytesIO(bytes(data)), dtype="int16", format="RAW", subtype="ULAW",
        samplerate=SAMPLE_RATE, channels=1,
    )
    return samples


def downmix(x: np.ndarray) -> np.ndarray:
    """Average the channels of ``x`` (frames × channels) keeping its scale: integer samples stay
    integers (rounded mean, in a wider type so the sum cannot overflow), float samples stay float.
    ``mean`` alone would turn int16 into float64 that the float branch then scales by 32767."""
    if np.issubdtype(x.dtype, np.integer):
        mixed = np.rint(x.astype(np.int64).sum(axis=1) / x.shape[1])
        info = np.iinfo(x.dtype)
        return np.clip(mixed, info.min, info.max).astype(x.dtype)
    return x.mean(axis=1)


def to_ulaw_8k(samples: np.ndarray, rate: int) -> bytes:
    """Fixture audio (any rate, int16 or float) → 8 kHz μ-law, as a phone line carries it."""
    x = np.asarray(samples)
    if x.ndim > 1:
        x = downmix(x)
    if x.dtype != np.int16:
        if np.issubdtype(x.dtype, np.floating):
            x = np.clip(np.round(x * 32767.0), -32768, 32767)
        x = x.astype(np.int16)
    y = resample(x, rate, SAMPLE_RATE)
    return pcm16_to_ulaw(np.asarray(y, dtype=np.int16))


# Magnitude of each μ-law code after decoding, for a cheap per-frame "is this
# silence?" test on the playback path without decoding whole frames.
ULAW_MAGNITUDE = np.abs(ulaw_to_pcm16(bytes(range(256))).astype(np.int32)).astype(np.int32)

# -40 dBFS: below it a frame counts as silence (comfort noise, dither, 0x7F/0xFF).
SILENCE_PEAK = 328


def frame_peak(frame: bytes) -> int:
    """Peak absolute sample value of a μ-law chunk."""
    if not frame:
        return 0
    return int(ULAW_MAGNITUDE[np.frombuffer(frame, dtype=np.uint8)].max())


def is_silent(frame: bytes, threshold: int = SILENCE_PEAK) -> bool:
    """True if every sample of the μ-law chunk is below ``threshold`` (default -40 dBFS)."""
    return frame_peak(frame) < threshold
