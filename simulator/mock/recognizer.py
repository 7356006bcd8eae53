"""Which fixture utterance did the caller say?

The mock has no speech recogniser, and needs none: every caller in the harness
plays one of a few known fixtures. Recognising *which* one lets the mock emit
that fixture's text as the input transcription and follow scripted rules
("when the caller says X, reply Y").

How: a compact fingerprint per fixture — the log energy of 9 bands between
150 Hz and 3.8 kHz every 10 ms (a coarse spectrogram) — computed from the
fixture as it arrives through a phone line (resampled to 8 kHz, μ-law encoded
and decoded, back to 16 kHz), so what the mock hears matches it. A user turn is
fingerprinted the same way, trimmed to where it has sound, and slid along every
fixture's fingerprint (padded with silence on both sides); the score is the
best Pearson correlation over all lags, computed for all lags at once with an
FFT. Lags cover everything the mock can receive: leading silence, a start cut
off, an end cut off by barge-in (the turn then matches part of the fixture).

The score of a different sentence, an assistant reply (another voice), noise or
silence stays well below :data:`THRESHOLD`; see the tests for the margins. Two
fixtures with the same text (a clean and a noisy recording) may be confused
with each other; callers of :meth:`Recognizer.identify` only need the text.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import numpy as np
import soxr

from ..audio import codec
from .audio import ANALYSIS_RATE, analysis_pcm, decode

if TYPE_CHECKING:
    from ..audio.fixtures import FixtureLibrary

__all__ = ["Recognizer", "THRESHOLD", "fingerprint"]

#: Scores below this identify nothing. Measured through the phone path: the
#: right fixture scores ≥ 0.97 (whole, first 300 ms cut, first 60 % only; A-law
#: and pcm16 sessions too), ≥ 0.93 with 15-20 dB SNR noise added. A *different*
#: whole sentence scores ≤ 0.77 (one-word "Stop." against a part of a longer
#: one), assistant replies ≤ 0.47, silence and noise ≤ 0.07. Fragments of
#: 200 ms can resemble another fixture's first word (≤ 0.93) but the fixture
#: they come from still scores higher.
THRESHOLD: Final = 0.8
HOP: Final = 160  # 10 ms at 16 kHz
WINDOW: Final = 320  # 20 ms
BAND_EDGES_HZ: Final = (150, 300, 500, 750, 1050, 1400, 1850, 2450, 3200, 3800)
#: Dynamic range kept below a signal's loudest band value (dB): quieter cells,
#: silence included, are clamped so line noise and dither do not count.
RANGE_DB: Final = 45.0
#: Cells this far above the clamp make a frame "sound" (for trimming the turn).
SOUND_DB: Final = 6.0
#: Frames of context kept around the sound when trimming (100 ms).
TRIM_MARGIN: Final = 10
#: A turn shorter than this (frames of sound) is not identified.
MIN_FRAMES: Final = 15
#: Committed turns remembered by :meth:`Recognizer.identify_turn` (content → result).
TURN_CACHE: Final = 256
#: Longer turns are cut to their first 20 s (the fixtures are all shorter).
MAX_FRAMES: Final = 2000


_FREQS: Final = np.fft.rfftfreq(WINDOW, 1 / ANALYSIS_RATE)
_LO: Final = int(np.searchsorted(_FREQS, BAND_EDGES_HZ[0]))
_HI: Final = int(np.searchsorted(_FREQS, BAND_EDGES_HZ[-1]))
#: FFT bins (those between the outer edges) → bands.
_BANDS: Final = np.stack(
    [
        ((_FREQS[_LO:_HI] >= lo) & (_FREQS[_LO:_HI] < hi)).astype(np.float32)
        for lo, hi in zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:])
    ],
    axis=1,
)
_HANN: Final = np.hanning(WINDOW).astype(np.float32)
#: Frames per FFT batch: 64 × 320 float32 stays in cache; a whole 8 s turn
#: at once (≈ 2 MB in float64) ran 8× slower here.
_BLOCK: Final = 64


def fingerprint(samples: np.ndarray) -> np.ndarray:
    """int16 mono samples at 16 kHz → (frames, bands) log band energies in dB, clamped.

    Every cell is at least ``max - RANGE_DB``, so silence is a flat floor.
    """
    x = np.asarray(samples, dtype=np.float32)
    bands = _BANDS.shape[1]
    if len(x) < WINDOW:
        return np.zeros((0, bands), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, WINDOW)[::HOP]
    power = np.empty((len(frames), bands), dtype=np.float32)
    for i in range(0, len(frames), _BLOCK):
        spec = np.fft.rfft(frames[i : i + _BLOCK] * _HANN, axis=1)[:, _LO:_HI]
        power[i : i + _BLOCK] = (spec.real * spec.real + spec.imag * spec.imag) @ _BANDS
    db = 10.0 * np.log10(power + 1.0)
    return np.maximum(db, db.max() - RANGE_DB)


def _trim(fp: np.ndarray) -> np.ndarray:
    """Keep the frames with sound, plus a little context."""
    if not len(fp):
        return fp
    floor = fp.min()
    sound = np.nonzero(fp.max(axis=1) > floor + SOUND_DB)[0]
    if not len(sound):
        return fp[:0]
    a = max(0, sound[0] - TRIM_MARGIN)
    b = min(len(fp), sound[-1] + 1 + TRIM_MARGIN)
    return fp[a:b]


def _phone_path(samples: np.ndarray, rate: int) -> np.ndarray:
    """A fixture as the mock hears it from a phone caller: 8 kHz μ-law, then 16 kHz."""
    pcm8 = decode("pcmu", codec.to_ulaw_8k(samples, rate))
    return np.asarray(soxr.resample(pcm8, 8000, ANALYSIS_RATE, quality="HQ"), dtype=np.int16)


class Recognizer:
    """Identifies which fixture of ``roles`` a user turn is (see module docstring).

    Building it fingerprints each fixture once (≈ 30-50 ms for the 7 caller
    fixtures here); share one per process. :meth:`identify` takes ≈ 2 ms for a
    3 s turn, ≈ 4 ms for 8 s, on this 2-core VM.
    """

    def __init__(
        self,
        library: FixtureLibrary | None = None,
        roles: Iterable[str] = ("caller",),
        rate: int = 16000,
    ) -> None:
        if library is None:
            from ..audio.fixtures import default_library

            library = default_library()
        self.library: FixtureLibrary = library
        self.rate: int = rate
        self.roles: tuple[str, ...] = tuple(roles)
        names: list[str] = []
        fps: list[np.ndarray] = []
        for fx in library:
            if fx.role not in self.roles:
                continue
            pcm, fx_rate = library.read_pcm(fx.name)
            fp = fingerprint(_phone_path(pcm, fx_rate))
            if fx.speech_segments_ms:  # the manifest knows where the speech is
                a = max(0, int(fx.speech_segments_ms[0][0] // 10) - TRIM_MARGIN)
                b = min(len(fp), int(fx.speech_segments_ms[-1][1] // 10) + TRIM_MARGIN)
                fp = fp[a:b]
            else:
                fp = _trim(fp)
            if len(fp) >= MIN_FRAMES:
                names.append(fx.name)
                # Pearson ignores offsets: store (fp - its floor), which is 0
                # where the fixture is silent, so padding with zeros is padding
                # with the fixture's own silence.
                fps.append((fp - fp.min()).astype(np.float64))
        self._names: tuple[str, ...] = tuple(names)
        self._fps: tuple[np.ndarray, ...] = tuple(fps)
        self._lens = np.array([len(f) for f in fps], dtype=np.int64)
        longest = int(self._lens.max()) if fps else 0
        bands = _BANDS.shape[1]
        # Zero-padded stack of all templates, plus prefix sums of each frame's
        # sum and sum of squares (window sums for the Pearson denominator).
        self._stack = np.zeros((len(fps), longest, bands))
        self._c1 = np.zeros((len(fps), longest + 1))
        self._c2 = np.zeros((len(fps), longest + 1))
        for i, f in enumerate(fps):
            self._stack[i, : len(f)] = f
            self._c1[i, 1 : len(f) + 1] = np.cumsum(f.sum(axis=1))
            self._c1[i, len(f) + 1 :] = self._c1[i, len(f)]
            self._c2[i, 1 : len(f) + 1] = np.cumsum((f * f).sum(axis=1))
            self._c2[i, len(f) + 1 :] = self._c2[i, len(f)]
        self._spectra: dict[int, np.ndarray] = {}  # FFT size -> templates' spectra
        self._turns: OrderedDict[tuple[str, bytes], tuple[str | None, float]] = OrderedDict()
        self.turn_hits = 0

    @property
    def names(self) -> list[str]:
        """The fixtures this recogniser can identify."""
        return list(self._names)

    def _template_spectra(self, size: int) -> np.ndarray:
        spec = self._spectra.get(size)
        if spec is None:
            spec = self._spectra[size] = np.fft.rfft(self._stack, size, axis=1)
        return spec

    def scores(self, samples: np.ndarray) -> dict[str, float]:
        """Best correlation (clamped to [0, 1]) of the turn with each fixture."""
        x = np.asarray(samples)
        if x.ndim != 1:
            raise ValueError(f"expected mono 1-D samples, got shape {x.shape}")
        if self.rate != ANALYSIS_RATE:
            x = soxr.resample(x, self.rate, ANALYSIS_RATE, quality="LQ")
        zero = dict.fromkeys(self._names, 0.0)
        q = _trim(fingerprint(x))[:MAX_FRAMES]
        if len(q) < MIN_FRAMES or not self._names:
            return zero
        q = q.astype(np.float64)
        qc = q - q.mean()
        q_ss = float((qc * qc).sum())
        if q_ss <= 1e-9:  # flat: silence or a steady tone
            return zero
        best = self._correlate(qc, q_ss)
        return {name: float(v) for name, v in zip(self._names, best)}

    def _correlate(self, qc: np.ndarray, q_ss: float) -> np.ndarray:
        """Per template: max over lags of Pearson(query, template window).

        The template is padded with its silence (zeros, see __init__) so the
        query can hang over either end, as long as half of the shorter of the
        two overlaps. With the query centred, Pearson's numerator is Σ qc·y over
        the window, one FFT cross-correlation for every lag and every template
        at once; window sums of y and y² come from the prefix sums.
        """
        n, bands = qc.shape
        longest = self._stack.shape[1]
        size = 1 << int(np.ceil(np.log2(n + longest)))
        fq = np.conj(np.fft.rfft(qc, size, axis=0))  # (freq, bands)
        cross_all = np.fft.irfft(np.einsum("tfb,fb->tf", self._template_spectra(size), fq), size, axis=1)
        # lag l: query frame 0 sits on template frame l, l in (-n, longest)
        lags = np.arange(-(n - 1), longest)
        cross = np.concatenate((cross_all[:, size - (n - 1) :], cross_all[:, :longest]), axis=1)
        lo = np.clip(lags, 0, longest)
        hi = np.clip(lags + n, 0, longest)
        rows = np.arange(len(self._names))[:, None]
        s1 = self._c1[rows, hi] - self._c1[rows, lo]
        s2 = self._c2[rows, hi] - self._c2[rows, lo]
        y_ss = s2 - s1 * s1 / (n * bands)
        overlap = np.minimum(hi, self._lens[:, None]) - np.maximum(lo, 0)
        need = np.maximum(MIN_FRAMES, np.minimum(n, self._lens) // 2)[:, None]
        valid = (overlap >= need) & (y_ss > 1e-9)
        r = np.where(valid, cross / np.sqrt(q_ss * np.where(valid, y_ss, 1.0)), 0.0)
        return np.clip(r.max(axis=1), 0.0, 1.0)

    def identify(self, samples: np.ndarray) -> tuple[str | None, float]:
        """(fixture name, score) of the best match, or (None, score) when score < THRESHOLD.

        ``samples``: int16 at ``rate`` of one user turn; leading/trailing
        silence, a cut start or end, and telephone noise are all fine.
        """
        scores = self.scores(samples)
        if not scores:
            return None, 0.0
        name = max(scores, key=scores.__getitem__)
        score = scores[name]
        return (name if score >= THRESHOLD else None), score

    def identify_turn(self, kind: str, audio: bytes) -> tuple[str | None, float]:
        """:meth:`identify` for a committed turn's wire bytes (``kind``: the session's input format).

        Why a cache: under load hundreds of sessions commit the same few fixture
        utterances, and a caller that streams a fixture from a frame boundary after
        line silence gives the VAD the same audio, so the same bytes get committed
        again and again. Identifying a turn costs milliseconds of CPU in one
        uninterrupted stretch, during which no other session is served; a BLAKE2b
        digest of it costs a hundredth of that. The result is a pure function of the bytes, so a
        hit is exactly what recomputing would give. The last :data:`TURN_CACHE`
        distinct turns are kept.
        """
        key = (kind, hashlib.blake2b(audio, digest_size=16).digest())
        turns = self._turns
        hit = turns.get(key)
        if hit is not None:
            turns.move_to_end(key)
            self.turn_hits += 1
            return hit
        result = self.identify(analysis_pcm(kind, audio))
        turns[key] = result
        if len(turns) > TURN_CACHE:
            turns.popitem(last=False)
        return result
