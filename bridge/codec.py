"""Audio codec for the bridge's "transcode" mode: G.711 μ-law and streaming resampling.

Twilio Media Streams carry μ-law at 8 kHz; OpenAI Realtime can take and give pcm16
little-endian at 24 kHz.  This module converts between the two, one 20 ms frame (or one
response delta) at a time, for many concurrent calls, so everything here is written for the
per-call hot path: no Python loops over samples, no per-call allocation of tables.

G.711 μ-law
    "Bit-exact G.711" has to name its reference, because common encoders disagree: the
    classic Sun/CCITT ``g711.c`` (what Python's ``audioop.lin2ulaw`` implements, and what we
    follow) truncates the 16-bit sample to 14 bits with an arithmetic shift *before* taking
    the magnitude, so a negative sample's 14-bit magnitude is ⌈|x|/4⌉, not ⌊|x|/4⌋; libsndfile's encoder and
    the popular "BIAS 0x84, CLIP 32635" snippet differ from it on 381 negative inputs by one
    code at segment boundaries.  We port ``g711.c`` once, vectorised, to build a
    65,536-entry ``uint8`` table at import; encoding a frame is then a single table lookup
    (``take``) with ``samples.view(np.uint16)`` (the int16 bit pattern *is* the index), which costs
    the same for any input and cannot drift from the reference.  The decoder is a
    256-entry ``int16`` table (all G.711 decoders agree).

Resampling
    Two resamplers, chosen by ``quality`` (the bridge's ``RESAMPLE_QUALITY``):

    ``"FIR"`` (the default): :class:`~.polyphase.PolyphaseResampler`, least-squares low-delay
    polyphase FIR filters in numpy.  It withholds exactly its 5 ms delay per direction,
    returns exactly 3× / ⅓ of each chunk once that delay is covered (no bursts), stops the
    model's 4–12 kHz energy from 4.0 kHz on, and passes telephone audio to 3.8–3.9 kHz, so
    its round trip on real speech stays above 35 dB.  Why that design and not a
    linear-phase one: ``bridge/polyphase.py``.

    ``"QQ"``, ``"LQ"``, ``"MQ"``, ``"HQ"``, ``"VHQ"``: :class:`StreamResampler`, soxr's
    ``ResampleStream`` at that quality.  It keeps its filter state between calls, so
    feeding 20 ms frames gives exactly the samples a one-shot resample of the whole signal
    gives (no clicks at frame boundaries).  We run soxr in ``float32`` on int16-scaled
    values and round/clip back to int16 ourselves, because soxr's int16 mode adds TPDF
    dither: its output then depends on how the stream was chunked (seen: ±2 LSB), which
    would make the bridge non-deterministic and its tests flaky.  soxr's output is
    time-aligned with its input (it compensates the filter's group delay), but it
    *withholds* output in blocks, tens of milliseconds at MQ/HQ/VHQ
    (``StreamResampler.latency_ms``): added to every turn, in each direction.  QQ (cubic)
    withholds almost nothing but has no anti-alias filter (the model's 4–12 kHz speech
    folds into the call) and LQ's roll-off cuts the 3–4 kHz band.

    Both are time-aligned, so the bridge's μ-law byte counts (marks, truncation) equal
    item time with either.  ``loadtests/transcode_bench.py`` measures them side by side
    (withheld ms mean and worst over 20 ms chunks, round-trip SNR on real speech, alias
    rejection on the wideband reply fixture, µs per chunk); its figures are recorded in
    ``loadtests/README.md``.
"""

from __future__ import annotations

import functools

import numpy as np
import soxr

from .polyphase import PolyphaseResampler

__all__ = [
    "ulaw_encode",
    "ulaw_decode",
    "StreamResampler",
    "PolyphaseResampler",
    "Resampler",
    "make_resampler",
    "Transcoder",
    "TWILIO_RATE",
    "OPENAI_RATE",
    "DEFAULT_QUALITY",
    "FIR_QUALITY",
    "QUALITIES",
    "SOXR_QUALITIES",
    "ULAW_ENCODE_TABLE",
    "ULAW_DECODE_TABLE",
]

TWILIO_RATE = 8000
OPENAI_RATE = 24000
#: The low-latency polyphase FIR (``bridge/polyphase.py``); the others are soxr's qualities.
FIR_QUALITY = "FIR"
DEFAULT_QUALITY = FIR_QUALITY
SOXR_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
#: What ``StreamResampler`` uses when not told: the soxr quality the bridge defaulted to.
SOXR_DEFAULT_QUALITY = "HQ"
QUALITIES = (FIR_QUALITY, *SOXR_QUALITIES)

# --------------------------------------------------------------------------- G.711 μ-law

_BIAS = 0x84
_CLIP14 = 8159  # g711.c clips the 14-bit magnitude here
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_encode_table() -> np.ndarray:
    """Vectorised port of g711.c ``st_14linear2ulaw(sample >> 2)`` for every int16.

    Indexed by the int16 bit pattern (``np.uint16`` view), so entry ``i`` is the code of
    ``np.int16(i)`` viewed from uint16: positives at 0..32767, negatives at 32768..65535.
    """
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    pcm = bits.view(np.int16).astype(np.int32) >> 2  # arithmetic shift, as in C on int
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF).astype(np.int32)
    mag = np.where(negative, -pcm, pcm)
    mag = np.minimum(mag, _CLIP14) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left").astype(np.int32)  # first seg_uend >= mag
    in_range = seg < 8
    segc = np.minimum(seg, 7)
    uval = (segc << 4) | ((mag >> (segc + 1)) & 0xF)
    code = np.where(in_range, uval ^ mask, 0x7F ^ mask)
    table = code.astype(np.uint8)
    table.flags.writeable = False
    return table


def _build_decode_table() -> np.ndarray:
    """g711.c ``st_ulaw2linear16`` for all 256 codes."""
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    table = np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)
    table.flags.writeable = False
    return table


#: 65,536-entry table: ``ULAW_ENCODE_TABLE[x.view(np.uint16)]`` is the μ-law code of int16 x.
ULAW_ENCODE_TABLE: np.ndarray = _build_encode_table()
#: 256-entry table: ``ULAW_DECODE_TABLE[code]`` is the int16 value of a μ-law code.
ULAW_DECODE_TABLE: np.ndarray = _build_decode_table()


# The same decode table in float32, for the resampler's input: saves a conversion per frame.
_ULAW_DECODE_F32: np.ndarray = ULAW_DECODE_TABLE.astype(np.float32)
_ULAW_DECODE_F32.flags.writeable = False


def ulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples -> μ-law bytes, bit-exact to g711.c / ``audioop.lin2ulaw``.

    Only int16 is accepted: a float array in [-1, 1] would otherwise encode silently as
    near-silence, and wider ints would need a clipping policy the caller should choose.
    ``ndarray.take`` rather than ``table[idx]``: same result, less work per 20 ms frame.
    """
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        raise TypeError(f"ulaw_encode expects int16 samples, got {samples.dtype}")
    return ULAW_ENCODE_TABLE.take(samples.reshape(-1).view(np.uint16)).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """μ-law bytes (bytes, bytearray, memoryview) -> new int16 array, as ``audioop.ulaw2lin``."""
    return ULAW_DECODE_TABLE.take(np.frombuffer(data, dtype=np.uint8))


# --------------------------------------------------------------------------- resampling

_I16_MIN = np.float32(-32768.0)
_I16_MAX = np.float32(32767.0)
_EMPTY_F32 = np.zeros(0, dtype=np.float32)
_LATENCY_FRAME_MS = 20  # the bridge's frame size; soxr's withheld amount depends on chunking


def _to_int16(y: np.ndarray) -> np.ndarray:
    """Round a float32 array (int16 scale) to int16, saturating; modifies ``y``.

    ufuncs with ``out=`` rather than ``np.clip``: on 20 ms frames numpy's per-call overhead
    dominates, and ``np.clip``'s Python wrapper costs several times a bare ufunc.
    """
    np.maximum(y, _I16_MIN, out=y)
    np.minimum(y, _I16_MAX, out=y)
    np.rint(y, out=y)
    return y.astype(np.int16)


@functools.lru_cache(maxsize=None)
def _measure_latency(in_rate: int, out_rate: int, quality: str) -> tuple[float, float]:
    """(worst, mean) ms of audio soxr withholds when fed 20 ms frames; measured, not guessed.

    Output *lengths* of soxr do not depend on the signal, so we stream 2 s of zeros in
    20 ms frames through a fresh ``ResampleStream`` and, after each frame, compare what
    came out with what went in (× ratio).  soxr's output is time-aligned with its input, so
    that shortfall is exactly the delay a real-time caller experiences.  Runs once per
    (rates, quality) per process.
    """
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
    n = in_rate * _LATENCY_FRAME_MS // 1000
    frame = np.zeros(n, dtype=np.float32)
    fed = produced = 0
    held = []
    for _ in range(2000 // _LATENCY_FRAME_MS):
        produced += len(stream.resample_chunk(frame))
        fed += n
        held.append((fed * out_rate / in_rate - produced) * 1000.0 / out_rate)
    return max(held), sum(held) / len(held)


class StreamResampler:
    """Stateful int16 resampler (soxr) for a continuous stream cut into frames.

    ``process`` may return fewer samples than ``len(in) × ratio`` — soxr withholds up to
    ``latency_ms`` of audio and releases it in bursts — but the concatenation of all
    outputs plus ``flush()`` equals a one-shot resample of the whole burst, sample for
    sample.  Output is time-aligned with input: sample ``k`` of the output is the signal at
    time ``k / out_rate`` from the start of the burst, there is no leading delay to trim.
    """

    __slots__ = ("in_rate", "out_rate", "quality", "_stream")

    def __init__(self, in_rate: int, out_rate: int, quality: str = SOXR_DEFAULT_QUALITY) -> None:
        if quality not in SOXR_QUALITIES:
            raise ValueError(f"soxr quality must be one of {SOXR_QUALITIES}, got {quality!r}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self.quality = quality
        self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=quality)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk of int16 samples; returns int16 (possibly shorter/empty)."""
        return _to_int16(self._stream.resample_chunk(np.asarray(samples, dtype=np.float32).reshape(-1)))

    def _process_f32(self, x: np.ndarray) -> np.ndarray:
        """``process`` for a 1-D float32 array already on the int16 scale (hot path)."""
        return _to_int16(self._stream.resample_chunk(x))

    def flush(self) -> np.ndarray:
        """Return everything soxr still holds (the burst ended) and reset for the next burst.

        The tail is what soxr computes as if the signal stopped here, so the burst's total
        output length is ``round(len(input) × ratio)``.
        """
        tail = _to_int16(self._stream.resample_chunk(_EMPTY_F32, last=True))
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """Drop all state (e.g. after a Twilio ``clear``): the next chunk starts a new burst."""
        self._stream.clear()

    @property
    def latency_ms(self) -> float:
        """Worst-case audio (ms) withheld between 20 ms frames at this quality and ratio.

        Measured once per process by :func:`_measure_latency` (streaming 20 ms frames of
        silence and comparing output to input length); this is what a real-time budget must
        cover (``loadtests/transcode_bench.py`` prints it next to the FIR's).
        """
        return _measure_latency(self.in_rate, self.out_rate, self.quality)[0]

    @property
    def mean_latency_ms(self) -> float:
        """Average audio (ms) withheld after a 20 ms frame."""
        return _measure_latency(self.in_rate, self.out_rate, self.quality)[1]


Resampler = StreamResampler | PolyphaseResampler


def make_resampler(in_rate: int, out_rate: int, quality: str = DEFAULT_QUALITY) -> Resampler:
    """The resampler for ``quality``: ``"FIR"`` (8 ↔ 24 kHz only) or a soxr quality."""
    if quality == FIR_QUALITY:
        return PolyphaseResampler(in_rate, out_rate)
    if quality not in SOXR_QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    return StreamResampler(in_rate, out_rate, quality)


class Transcoder:
    """Both directions of one call in transcode mode.

    inbound:  Twilio μ-law 8 kHz  -> OpenAI pcm16 24 kHz little-endian (continuous stream)
    outbound: OpenAI pcm16 24 kHz -> Twilio μ-law 8 kHz, in bursts (one per response),
              ended by ``outbound_flush`` or cut by ``outbound_reset`` (barge-in).

    Not thread-safe; one instance per call (it is cheap: two resampler states; the FIR's
    filters are designed once per process).
    """

    __slots__ = ("quality", "_in", "_out", "_carry")

    def __init__(self, quality: str = DEFAULT_QUALITY) -> None:
        self.quality = quality
        self._in = make_resampler(TWILIO_RATE, OPENAI_RATE, quality)
        self._out = make_resampler(OPENAI_RATE, TWILIO_RATE, quality)
        self._carry = b""  # odd trailing byte of the last outbound delta (half a sample)

    def inbound(self, ulaw: bytes) -> bytes:
        """Twilio media payload (decoded from base64) -> pcm16 24 kHz LE bytes to append."""
        y = self._in._process_f32(_ULAW_DECODE_F32.take(np.frombuffer(ulaw, dtype=np.uint8)))
        return y.astype("<i2", copy=False).tobytes()

    def outbound(self, pcm16: bytes) -> bytes:
        """OpenAI audio delta (pcm16 24 kHz LE, decoded from base64) -> μ-law 8 kHz bytes.

        A delta may end in the middle of a sample; the odd byte is carried to the next call
        so any chunking of the same stream yields the same μ-law bytes.
        """
        if self._carry:
            pcm16 = self._carry + pcm16
        if len(pcm16) & 1:
            self._carry = pcm16[-1:]
            pcm16 = memoryview(pcm16)[:-1]
        else:
            self._carry = b""
        y = self._out._process_f32(np.frombuffer(pcm16, dtype="<i2").astype(np.float32))
        return ULAW_ENCODE_TABLE.take(y.view(np.uint16)).tobytes()

    def outbound_flush(self) -> bytes:
        """End of a response: the μ-law the resampler still holds; ready for the next one.

        A dangling odd byte at the end of a response is half a sample and is dropped.
        """
        self._carry = b""
        return ULAW_ENCODE_TABLE.take(self._out.flush().view(np.uint16)).tobytes()

    def outbound_reset(self) -> None:
        """Barge-in (Twilio ``clear``): forget withheld audio so none leaks into the next reply."""
        self._carry = b""
        self._out.reset()

    def inbound_reset(self) -> None:
        """Restart the caller direction (e.g. a new OpenAI session on the same call)."""
        self._in.reset()

    @property
    def latency_ms(self) -> float:
        """Worst-case added delay of one direction (both directions are symmetric)."""
        return self._in.latency_ms
