"""The mock's audio formats: wire bytes of a Realtime session <-> int16 samples.

A Realtime session carries one of three input/output formats (protocols.md
2.2): ``"pcm16"`` (24 kHz 16-bit little-endian mono, 48 bytes/ms), ``"pcmu"``
(G.711 μ-law, 8 kHz) and ``"pcma"`` (G.711 A-law, 8 kHz). The mock decodes what
a bridge appends (to run its VAD and recogniser on it) and encodes fixture
audio to stream replies.

Why these implementations:

* G.711 *decoding* is a 256-entry table built once from libsndfile's decoder
  (the harness's codec, ``callsim.simulator.audio.codec``; design.md rule 1: never the
  bridge's code). Decoders agree exactly across implementations (stack.md), and
  a table lookup is cheaper per 20 ms frame than a libsndfile call.
* G.711 *encoding* goes through libsndfile (``soundfile`` RAW ULAW/ALAW), like
  the fake caller's. Its μ-law encoder differs from the g711.c reference by one
  code on 381 negative inputs (stack.md) — harmless: replies only need *some*
  valid G.711, and the codec checks compare bytes no encoder touched.
* The live input path (:class:`InputConverter`) feeds the VAD at the wire's
  own rate where webrtcvad takes it: G.711 (8 kHz) is only table-decoded, never
  resampled. Resampling it to 16 kHz would cost a soxr call per append (the
  largest single cost of an append), and soxr's 4-sample hold-back would make
  every 10 ms frame that ends on an append boundary wait for the *next* append —
  a speech_stopped up to 20 ms late in wall time.
  webrtcvad resamples 16 kHz input down to 8 kHz itself before it classifies,
  so nothing is learnt from the detour. pcm16 (24 kHz, which webrtcvad does not
  take) goes to 16 kHz through a streaming soxr ``ResampleStream`` at quality
  ``"QQ"`` (see :data:`CONVERTER_QUALITY` for why QQ). Rendering fixtures is
  one-shot soxr HQ.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import soundfile as sf
import soxr

from ..audio import codec

if TYPE_CHECKING:
    from ..audio.fixtures import FixtureLibrary

__all__ = [
    "KINDS",
    "RATES",
    "BYTES_PER_MS",
    "ANALYSIS_RATE",
    "VAD_RATES",
    "CONVERTER_QUALITY",
    "CONVERTER_DELAY_SAMPLES",
    "CONVERTER_DELAY_MS",
    "decode",
    "encode",
    "analysis_pcm",
    "duration_ms",
    "InputConverter",
    "fixture_audio",
]

KINDS: Final = ("pcm16", "pcmu", "pcma")
#: Sample rate of each wire format (GA only allows 24 kHz for audio/pcm).
RATES: Final[dict[str, int]] = {"pcm16": 24000, "pcmu": 8000, "pcma": 8000}
#: Wire bytes per millisecond of audio.
BYTES_PER_MS: Final[dict[str, int]] = {"pcm16": 48, "pcmu": 8, "pcma": 8}
_BYTES_PER_SAMPLE: Final[dict[str, int]] = {"pcm16": 2, "pcmu": 1, "pcma": 1}

#: The rate the recogniser works at (webrtcvad accepts it natively).
ANALYSIS_RATE: Final = 16000
#: The rate :class:`InputConverter` gives the VAD, per wire format: G.711 as it
#: comes (webrtcvad takes 8 kHz), pcm16's 24 kHz (which it does not take) at 16 kHz.
VAD_RATES: Final[dict[str, int]] = {"pcm16": 16000, "pcmu": 8000, "pcma": 8000}
#: soxr quality of the streaming pcm16 input path. QQ ("quick", cubic) emits output
#: at once; HQ holds back ~40 ms and LQ/MQ emit in bursts 20-60 ms late
#: (stack.md, and measured here: LQ 8k->16k emits nothing until 80 ms are in).
#: A VAD fed late decides late, which would shift every speech_stopped the mock
#: sends by that much of wall time. QQ's lower fidelity — against HQ, ≈ 22 dB
#: SNR on speech fixtures for 8k->16k (≈ 25 dB below 3.8 kHz), ≈ 37 dB for
#: 24k->16k — does not matter to an energy/webrtcvad decision (webrtcvad works
#: at 8 kHz internally) nor to the recogniser's coarse bands.
CONVERTER_QUALITY: Final = "QQ"
#: Samples (at the VAD rate) held back until :meth:`InputConverter.flush`: 1 for
#: pcm16 (QQ, 0.0625 ms at 16 kHz), none for G.711 (decoded, not resampled).
#: Sample *times* are not shifted: output sample ``i`` is input time ``i / rate`` s.
CONVERTER_DELAY_SAMPLES: Final[dict[str, int]] = {"pcm16": 1, "pcmu": 0, "pcma": 0}
CONVERTER_DELAY_MS: Final[dict[str, float]] = {
    k: v * 1000 / VAD_RATES[k] for k, v in CONVERTER_DELAY_SAMPLES.items()
}
#: Codes that decode to exactly 0: a μ-law chunk made only of them (0xFF/0x7F, the
#: idle line) is digital silence. A-law has no zero code (its idle 0xD5 decodes to
#: +8); pcm16 zeros still go through soxr, whose state they are part of.
_ZERO_CODES: Final[dict[str, bytes]] = {"pcmu": b"\xff\x7f"}


def _check_kind(kind: str) -> None:
    if kind not in RATES:
        raise ValueError(f"unknown audio format kind {kind!r}; expected one of {KINDS}")


def _g711_table(subtype: str) -> np.ndarray:
    """Decoded int16 value of each of the 256 G.711 codes, via libsndfile."""
    data, _ = sf.read(
        io.BytesIO(bytes(range(256))), dtype="int16", format="RAW", subtype=subtype,
        samplerate=8000, channels=1,
    )
    table = np.asarray(data, dtype=np.int16)
    table.setflags(write=False)
    return table


_ULAW_TABLE: Final = _g711_table("ULAW")
_ALAW_TABLE: Final = _g711_table("ALAW")
# dtype objects made once: numpy re-derives a dtype from ``np.int16`` on every call
_U8: Final = np.dtype(np.uint8)
_I16: Final = np.dtype(np.int16)
_LE_I16: Final = np.dtype("<i2")


def _chunk_resampler(stream: soxr.ResampleStream) -> Callable[[np.ndarray], np.ndarray]:
    """``stream.resample_chunk`` for 1-D int16 chunks, minus its Python checks when possible.

    ``resample_chunk`` re-checks the dtype and shape and reshapes around soxr's C
    method on every call, a good part of a 20 ms append's cost. The input path
    always passes 1-D int16, so call the C method directly (the wrapper's
    ``_process``) if a probe on a throwaway stream gives the wrapper's exact
    output; else, e.g. after a soxr upgrade renamed it, use the wrapper.
    """
    process = getattr(stream, "_process", None)
    if process is None or not _process_matches_wrapper():
        return stream.resample_chunk

    def resample(x: np.ndarray) -> np.ndarray:
        return process(x[:, None], False)[:, 0]

    return resample


@lru_cache(maxsize=1)
def _process_matches_wrapper() -> bool:
    """Does soxr's private ``_process`` give exactly what ``resample_chunk`` gives?"""
    probe = (np.arange(480, dtype=np.int16) * 97 % 2000 - 1000).astype(np.int16)
    try:
        a, b = (soxr.ResampleStream(RATES["pcm16"], VAD_RATES["pcm16"], 1, dtype="int16",
                                    quality=CONVERTER_QUALITY) for _ in range(2))
        via_wrapper = [a.resample_chunk(c) for c in (probe[:160], probe[160:])]
        direct = [b._process(c[:, None], False)[:, 0] for c in (probe[:160], probe[160:])]
    except Exception:  # another signature or build
        return False
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(via_wrapper, direct))


def decode(kind: str, data: bytes) -> np.ndarray:
    """Wire bytes of ``kind`` → int16 samples at ``RATES[kind]`` (a new, writable array).

    pcm16 with an odd byte count: the last byte is dropped (half a sample
    cannot be decoded; the streaming :class:`InputConverter` instead carries it
    over to the next chunk).
    """
    _check_kind(kind)
    if kind == "pcm16":
        n = len(data) // 2
        return np.frombuffer(data, dtype="<i2", count=n).astype(np.int16)
    codes = np.frombuffer(data, dtype=np.uint8)
    return (_ULAW_TABLE if kind == "pcmu" else _ALAW_TABLE).take(codes)


def analysis_pcm(kind: str, data: bytes) -> np.ndarray:
    """A committed turn's wire bytes → int16 at :data:`ANALYSIS_RATE`, for the recogniser.

    Once per turn, so soxr's one-shot LQ (fast, and ample for coarse band
    energies) rather than the live path's streaming converter.
    """
    pcm = decode(kind, data)
    if RATES[kind] == ANALYSIS_RATE:
        return pcm
    return np.asarray(soxr.resample(pcm, RATES[kind], ANALYSIS_RATE, quality="LQ"), dtype=np.int16)


def _as_int16(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"expected mono 1-D samples, got shape {x.shape}")
    if x.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got {x.dtype}")
    return x


def encode(kind: str, samples: np.ndarray, rate: int) -> bytes:
    """int16 mono ``samples`` at ``rate`` → the wire bytes of ``kind``.

    Resampled with soxr HQ one-shot when ``rate`` is not the format's rate.
    """
    _check_kind(kind)
    x = _as_int16(samples)
    target = RATES[kind]
    if rate != target:
        x = np.asarray(soxr.resample(x, rate, target, quality="HQ"), dtype=np.int16)
    if kind == "pcm16":
        return x.astype("<i2", copy=False).tobytes()
    if kind == "pcmu":
        return codec.pcm16_to_ulaw(x)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=8000, channels=1, format="RAW", subtype="ALAW") as f:
        f.write(np.ascontiguousarray(x))
    return buf.getvalue()


def duration_ms(kind: str, nbytes: int) -> float:
    """Milliseconds of audio in ``nbytes`` of ``kind`` (whole samples only, like :func:`decode`)."""
    _check_kind(kind)
    if nbytes < 0:
        raise ValueError("nbytes must be >= 0")
    samples = nbytes // _BYTES_PER_SAMPLE[kind]
    return samples * 1000 / RATES[kind]


class InputConverter:
    """Streaming wire bytes of ``kind`` → int16 at :attr:`rate`, for the VAD.

    G.711 is table-decoded at its own 8 kHz (``rate`` 8000): no state, no delay.
    pcm16 is resampled 24 → 16 kHz by a streaming
    soxr QQ (``rate`` 16000), whose state is kept across :meth:`feed` calls
    (filter history, and an odd trailing byte), so a session's appends give the
    same samples as converting the whole stream at once — within ±2 LSB: soxr
    dithers its int16 output, and the dither sequence depends on the call
    boundaries. Only :data:`CONVERTER_DELAY_SAMPLES` are held back until
    :meth:`flush`.

    :meth:`digital_silence` spares the VAD a chunk that decodes to exact zeros
    (the idle line most of a call carries): see :meth:`ServerVad.feed_silence`.
    """

    __slots__ = ("kind", "rate", "_table", "_zero", "_stream", "_resample", "_odd", "_in_samples", "_out_samples")

    def __init__(self, kind: str) -> None:
        _check_kind(kind)
        self.kind: str = kind
        self.rate: int = VAD_RATES[kind]
        self._table: np.ndarray | None = (
            _ULAW_TABLE if kind == "pcmu" else _ALAW_TABLE if kind == "pcma" else None
        )
        self._zero = _ZERO_CODES.get(kind, b"")
        self._stream: soxr.ResampleStream | None = None
        self._resample: Callable[[np.ndarray], np.ndarray] | None = None
        if self._table is None:
            self._stream = soxr.ResampleStream(
                RATES[kind], self.rate, 1, dtype="int16", quality=CONVERTER_QUALITY
            )
            self._resample = _chunk_resampler(self._stream)
        self._odd = b""  # pcm16: a byte left over from an odd-length chunk
        self._in_samples = 0
        self._out_samples = 0

    @property
    def input_ms(self) -> float:
        """Milliseconds of (whole-sample) input consumed so far."""
        return self._in_samples * 1000 / RATES[self.kind]

    @property
    def output_ms(self) -> float:
        """Milliseconds of output emitted so far."""
        return self._out_samples * 1000 / self.rate

    def _samples(self, data: bytes) -> np.ndarray:
        if self._table is not None:
            return self._table.take(np.frombuffer(data, _U8))
        if self._odd:
            data = self._odd + data
            self._odd = b""
        if len(data) % 2:
            self._odd = data[-1:]
            data = data[:-1]
        return np.frombuffer(data, _LE_I16).astype(_I16)

    def digital_silence(self, data: bytes) -> int:
        """If ``data`` decodes to exact zeros, consume it and return its sample count; else 0.

        Only for the stateless G.711 path: there the chunk's output is exactly that
        many zeros, which the caller hands to :meth:`ServerVad.feed_silence` instead
        of decoding it. A chunk that is not silence is left for :meth:`feed`.
        """
        zero = self._zero
        if not zero or not data or data.strip(zero):
            return 0
        n = len(data)
        self._in_samples += n
        self._out_samples += n
        return n

    def feed(self, data: bytes) -> np.ndarray:
        """Convert one chunk; returns the samples ready so far (at :attr:`rate`)."""
        x = self._samples(data)
        self._in_samples += x.shape[0]
        resample = self._resample
        y = x if resample is None else resample(x)
        self._out_samples += y.shape[0]
        return y

    def flush(self) -> np.ndarray:
        """Emit what the resampler still holds (end of stream). Feeding after it is an error."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        y = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._out_samples += len(y)
        return y


@lru_cache(maxsize=64)
def _render(root: Path, name: str, kind: str) -> bytes:
    from ..audio.fixtures import FixtureLibrary, default_library

    lib = default_library()
    if lib.root != root:
        lib = FixtureLibrary(root)
    samples, rate = lib.read_pcm(name)
    return encode(kind, samples, rate)


def fixture_audio(name: str, kind: str, library: FixtureLibrary | None = None) -> bytes:
    """Fixture ``name`` rendered to the wire bytes of ``kind``, once per process.

    Replies stream the same few fixtures over and over in hundreds of sessions;
    resampling and encoding them each time would dominate the mock's CPU. The
    cache key is (library root, name, kind), so libraries at different roots
    never share entries; at most 64 renderings are kept.
    """
    _check_kind(kind)
    if library is None:
        from ..audio.fixtures import default_library

        library = default_library()
    _ = library[name]  # unknown name: the library's KeyError lists the known ones
    return _render(library.root, name, kind)
