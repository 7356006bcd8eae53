"""Low-delay streaming resampler for 8 kHz ↔ 24 kHz: polyphase FIR filters, numpy only.

Why not soxr here
    soxr's ``ResampleStream`` is time-aligned but releases output in blocks, so at HQ it
    withholds tens of milliseconds of audio after each 20 ms frame; on a phone call that
    is added to every turn, in both directions.  A plain FIR filter run as a stream
    withholds exactly its delay, no more, and gives exactly 3× (up) or ⅓ (down) of its
    input after every chunk once that delay is covered.

Why a least-squares low-delay FIR, not a linear-phase (Kaiser) one
    A linear-phase FIR delays by half its length, so a 5 ms budget allows 241 taps at
    24 kHz.  That buys either a sharp band edge or a deep stopband, not both: the
    transition of a Kaiser design of that length is ≈ 500 Hz wide at 80 dB.  Telephone
    audio resampled by soxr HQ keeps its energy up to ≈ 3.85 kHz, and the model's 24 kHz
    speech has energy right above 4 kHz, which folds into the call on the way down unless
    it is stopped from 4 kHz on.  So a filter with its passband up to 3.8 kHz and its
    stopband from 4.0 kHz is needed, ≈ 20 ms long.  A filter longer than twice its delay
    does that: its taps are chosen by least squares so that it equals a pure delay of
    ``DELAY`` samples (5 ms) over the passband — in gain *and* phase, which is what a
    round-trip SNR sees — and zero over the stopband (weighted heavily); the band edge is
    left free.  Over the telephone band its group delay ripples within a few samples
    (a fraction of a millisecond) around ``DELAY``; only in the 3.8–4 kHz edge, which the
    stopband weight squeezes, does it depart from it.  The
    design is closed form (the normal equations of the weighted integral error are
    cosine integrals), solved once per process.

Two filters, because the two directions need different things
    Down (24 → 8 kHz, the model's reply): anything from 4 kHz up aliases into the call,
    so the stopband starts at 4.0 kHz and is weighted hardest (``DOWN_DESIGN``).
    Up (8 → 24 kHz, the caller): the images of caller audio at f sit at 8 kHz − f, so a
    stopband from 4.1 kHz removes the images of everything up to 3.9 kHz, and the
    passband can reach 3.9 kHz (``UP_DESIGN``).  Figures of both (delay, round-trip SNR,
    alias rejection, µs per chunk, against soxr) are printed by
    ``loadtests/transcode_bench.py``.

Time alignment
    Like soxr's stream, the output is time-aligned with the input: sample ``k`` of the
    output is the signal at ``k / out_rate`` from the start of the burst.  The filter's
    delay is paid by withholding the first ``DELAY`` output samples (at 24 kHz) of a burst,
    and ``flush`` returns them at its end, so a burst of ``n`` input samples gives
    ``n × 3`` (up) or ``ceil(n / 3)`` (down) output samples in all.  That keeps the
    bridge's byte counts (marks, truncation) equal to item time, as with soxr.

Arithmetic
    float64, by ``np.convolve`` on each of the three polyphase branches: every output
    sample is one dot product of the same taps with the same input values whatever the
    chunking, so streamed output equals one-shot output sample for sample (float32 would
    put a rounding flip of the final int16 within reach of the chunk boundaries).
"""

from __future__ import annotations

import functools
from typing import Final

import numpy as np

__all__ = [
    "FACTOR",
    "HIGH_RATE",
    "LOW_RATE",
    "DELAY",
    "TAPS",
    "LATENCY_MS",
    "FilterDesign",
    "UP_DESIGN",
    "DOWN_DESIGN",
    "low_delay_lowpass",
    "up_filter",
    "down_filter",
    "PolyphaseResampler",
]

LOW_RATE: Final = 8000
HIGH_RATE: Final = 24000
FACTOR: Final = 3
#: Delay of both filters, in samples at 24 kHz (a multiple of 3, so also whole 8 kHz samples).
DELAY: Final = 120
#: Taps of both filters at 24 kHz (3 × 160 + 1: 161 per polyphase branch).
TAPS: Final = 481
#: Audio withheld per direction: the delay, and nothing else.
LATENCY_MS: Final = DELAY * 1000 / HIGH_RATE


class FilterDesign(tuple):
    """(pass_hz, stop_hz, stop_weight): the least-squares targets of one filter."""

    __slots__ = ()

    def __new__(cls, pass_hz: float, stop_hz: float, stop_weight: float) -> FilterDesign:
        return super().__new__(cls, (float(pass_hz), float(stop_hz), float(stop_weight)))


#: 24 → 8 kHz: flat (as a delay) to 3.8 kHz, stopped from 4.0 kHz, where aliasing starts.
DOWN_DESIGN: Final = FilterDesign(3800, 4000, 1e9)
#: 8 → 24 kHz: flat to 3.9 kHz, stopped from 4.1 kHz (the image of 3.9 kHz).
UP_DESIGN: Final = FilterDesign(3900, 4100, 1e7)

_RIDGE: Final = 1e-9  # keeps the normal equations solvable where the band edge is left free


def _cos_integral(lo: float, hi: float, k: np.ndarray) -> np.ndarray:
    """∫_lo^hi cos(ω k) dω for integer ``k`` (elementwise)."""
    k = k.astype(np.float64)
    out = np.full_like(k, hi - lo)
    nz = k != 0
    out[nz] = (np.sin(hi * k[nz]) - np.sin(lo * k[nz])) / k[nz]
    return out


def low_delay_lowpass(taps: int, delay: int, pass_hz: float, stop_hz: float, stop_weight: float,
                      rate: int = HIGH_RATE) -> np.ndarray:
    """FIR taps minimising ∫_pass |H(ω) − e^{−jωD}|² dω + w ∫_stop |H(ω)|² dω.

    With ``taps > 2·delay + 1`` the result is not linear-phase: it is the filter of that
    length closest (in this weighted sense) to a ``delay``-sample pure delay below
    ``pass_hz`` and to zero above ``stop_hz``.  The normal equations are a Toeplitz matrix
    of cosine integrals and a vector of the same, so no frequency grid is sampled.
    """
    wp = 2 * np.pi * pass_hz / rate
    ws = 2 * np.pi * stop_hz / rate
    n = np.arange(taps)
    lags = np.arange(-(taps - 1), taps)
    r = _cos_integral(0.0, wp, lags) + stop_weight * _cos_integral(ws, np.pi, lags)
    gram = r[n[:, None] - n[None, :] + taps - 1]
    gram[np.diag_indices(taps)] += _RIDGE * wp
    rhs = _cos_integral(0.0, wp, n - delay)
    return np.linalg.solve(gram, rhs)


def _branches(h: np.ndarray, gain: float) -> np.ndarray:
    """(3, K) polyphase branches ``gain · h[3i + p]`` (h padded with zeros to a multiple of 3)."""
    k = -(-len(h) // FACTOR)
    padded = np.zeros(k * FACTOR)
    padded[:len(h)] = h
    branches = np.ascontiguousarray(padded.reshape(k, FACTOR).T * gain)
    branches.flags.writeable = False
    return branches


@functools.lru_cache(maxsize=None)
def up_filter() -> np.ndarray:
    """The 8 → 24 kHz filter at 24 kHz (``TAPS`` taps, DC gain 1), designed once per process."""
    h = low_delay_lowpass(TAPS, DELAY, *UP_DESIGN)
    h.flags.writeable = False
    return h


@functools.lru_cache(maxsize=None)
def down_filter() -> np.ndarray:
    """The 24 → 8 kHz filter at 24 kHz (``TAPS`` taps, DC gain 1), designed once per process."""
    h = low_delay_lowpass(TAPS, DELAY, *DOWN_DESIGN)
    h.flags.writeable = False
    return h


@functools.lru_cache(maxsize=None)
def _up_branches() -> np.ndarray:
    return _branches(up_filter(), float(FACTOR))  # zero-stuffing by 3 divides the level by 3


@functools.lru_cache(maxsize=None)
def _down_branches() -> np.ndarray:
    return _branches(down_filter(), 1.0)


_I16_MIN = -32768.0
_I16_MAX = 32767.0
_EMPTY = np.zeros(0, dtype=np.float64)


def _to_int16(y: np.ndarray) -> np.ndarray:
    """Round to int16, saturating (in place on ``y``; bare ufuncs, cheaper than ``np.clip``)."""
    np.maximum(y, _I16_MIN, out=y)
    np.minimum(y, _I16_MAX, out=y)
    np.rint(y, out=y)
    return y.astype(np.int16)


class PolyphaseResampler:
    """Stateful int16 resampler by 3 (8 → 24 kHz) or by ⅓ (24 → 8 kHz) with a fixed 5 ms delay.

    The same interface as ``codec.StreamResampler`` (``process``, ``flush``, ``reset``,
    ``latency_ms``).  ``process`` withholds the first ``DELAY`` samples (at 24 kHz) of a
    burst and from then on returns exactly 3× (up) or ⅓ (down, for chunks whose lengths
    are multiples of 3) of what it is given; ``flush`` returns the withheld tail.
    """

    __slots__ = ("in_rate", "out_rate", "quality", "_up", "_branches", "_hist", "_skip", "_offset")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        pair = (int(in_rate), int(out_rate))
        if pair not in ((LOW_RATE, HIGH_RATE), (HIGH_RATE, LOW_RATE)):
            raise ValueError(f"PolyphaseResampler converts {LOW_RATE} <-> {HIGH_RATE} Hz only, got {pair}")
        self.in_rate, self.out_rate = pair
        self.quality = "FIR"
        self._up = self.in_rate == LOW_RATE
        self._branches = _up_branches() if self._up else _down_branches()
        self._hist = _EMPTY
        self._skip = 0
        self._offset = 0
        self.reset()

    # -- streaming -------------------------------------------------------------------

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk of int16 samples; returns int16."""
        return self._process_f32(np.asarray(samples).reshape(-1))

    def _process_f32(self, x: np.ndarray) -> np.ndarray:
        """``process`` for a 1-D float (or int) array on the int16 scale (the hot path)."""
        y = self._filter(x)
        if self._skip:
            cut = min(self._skip, len(y))
            self._skip -= cut
            y = y[cut:]
        return _to_int16(y)

    def _filter(self, x: np.ndarray) -> np.ndarray:
        """Filter output for chunk ``x``, delayed by ``DELAY`` (nothing trimmed yet)."""
        buf = np.concatenate((self._hist, x.astype(np.float64, copy=False)))
        b = self._branches
        k = b.shape[1]
        if self._up:
            # y[3q + p] = Σ_i b[p, i] · x[q − i]: each branch is one 8 kHz convolution
            n = len(x)
            y = np.empty((n, FACTOR))
            if n:
                for p in range(FACTOR):
                    y[:, p] = np.convolve(buf, b[p], "valid")
            self._hist = buf[len(buf) - (k - 1):]
            return y.reshape(-1)
        # y[n] = Σ_p Σ_i b[p, i] · x[3n − 3i − p]: window ends e_n = offset + H + 3n in buf,
        # with H = len(hist) = 3k − 1 so that the oldest sample any branch needs is buf[offset]
        hist_len = len(self._hist)
        last = len(buf) - 1 - self._offset - hist_len
        count = last // FACTOR + 1 if last >= 0 else 0
        y = np.zeros(count)
        if count:
            for p in range(FACTOR):
                start = self._offset + hist_len - p - FACTOR * (k - 1)
                seq = buf[start:start + FACTOR * (count + k - 1):FACTOR]
                y += np.convolve(seq, b[p], "valid")
        self._offset += FACTOR * count - len(x)
        self._hist = buf[len(buf) - hist_len:]
        return y

    def flush(self) -> np.ndarray:
        """End of a burst: the withheld tail (as if the signal stopped here); then reset."""
        pad = DELAY // FACTOR if self._up else DELAY
        tail = self._process_f32(np.zeros(pad))
        self.reset()
        return tail

    def reset(self) -> None:
        """Drop all state: the next chunk starts a new burst (silence before it)."""
        k = self._branches.shape[1]
        self._hist = np.zeros(k - 1 if self._up else FACTOR * k - 1)
        self._skip = DELAY if self._up else DELAY // FACTOR
        self._offset = 0

    @property
    def latency_ms(self) -> float:
        """Audio withheld after any chunk once a burst has started: the filter's delay."""
        return LATENCY_MS

    @property
    def mean_latency_ms(self) -> float:
        """The same as ``latency_ms``: a FIR stream withholds a constant amount."""
        return LATENCY_MS
