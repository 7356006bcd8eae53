"""``<Play>`` audio: a fetched file made into 8 kHz μ-law, the line it plays on.

Twilio plays WAV and MP3 (and a few others) at any rate; offline, anything libsndfile reads
(WAV in any subtype and rate, FLAC, OGG, MP3 with libsndfile ≥ 1.1) is resampled to 8 kHz with
soxr, and a body declared as raw μ-law (``audio/basic``, ``audio/x-mulaw``, ``audio/ulaw``) is
played as it is.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from ..audio.codec import to_ulaw_8k

RAW_ULAW_TYPES = frozenset({"audio/basic", "audio/x-mulaw", "audio/ulaw", "audio/mulaw"})


def to_line_audio(body: bytes, content_type: str | None) -> bytes:
    """The μ-law bytes to play; ``ValueError`` saying why when the body is not audio we can read."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in RAW_ULAW_TYPES:
        return body
    try:
        samples, rate = sf.read(io.BytesIO(body), dtype="int16", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(f"not audio the emulator can read ({kind or 'no Content-Type'}): {exc}") from None
    if len(samples) == 0:
        return b""
    return to_ulaw_8k(np.asarray(samples), int(rate))
