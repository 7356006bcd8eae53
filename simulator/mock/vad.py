"""The mock's server VAD: when did the caller start and stop talking?

The real Realtime server runs a VAD over the appended input audio and reports
``input_audio_buffer.speech_started`` (``audio_start_ms``, which includes
``prefix_padding_ms``) and ``speech_stopped`` (``audio_end_ms``, which includes
the silence it waited for), both on the **input-buffer clock**: milliseconds of
audio appended since the session started, not wall time (protocols.md 2.4).
Its model is not public, so this is a stand-in built to be *predictable*: the
harness subtracts the mock's own silence wait from turn latency (design.md
``overhead_ms``), which only works if the reported times are where the speech
really is.

Sans-IO: :meth:`ServerVad.feed` takes int16 samples at 8 or 16 kHz (G.711 as
it arrives, pcm16 resampled to 16 kHz; see ``audio.InputConverter``) in chunks
of any size and returns the events they completed. Audio is cut into fixed 10 ms
frames on the buffer clock and frame energies are exact, so how the audio is
chunked never changes the result.

Per frame, "speech" means **both**:

* webrtcvad (mode 2) says speech. It rejects much loud non-speech, but keeps
  saying "speech" ~90 ms after speech ends (its hangover) and for the first
  ~70 ms of any new noise bed while its noise model adapts; and
* the frame's energy clears a gate, ``max(floor(threshold), noise × margin(threshold))``.
  The floor rises from -70 dBFS at threshold 0 to -50 at 0.5 and -30 at 1; the
  margin from 3 dB to 9 dB to 15 dB. ``noise`` is the quietest 10 ms frame of
  the last 1-1.25 s (minimum statistics over 250 ms blocks), so a steady noise
  bed lifts the gate above itself and cuts webrtcvad's hangover off, while
  speech, which always has quieter frames within a second, does not lift it.

``threshold`` is documented by the API as "a higher threshold will require
louder audio to activate": a loudness gate is exactly that. webrtcvad's mode is
*not* varied with it, and webrtcvad sees the same frames at every threshold, so
a frame that is speech at a higher threshold is speech at any lower one, and
(server_vad) "speaking at threshold t" implies "speaking at every t' < t".

Turn logic on those flags:

* **start**: the frame is speech, at least 60 ms of the last 100 ms are (so
  clicks do not trigger), and the loudest frame of those 100 ms is ``margin``
  above the quietest *non-silent* frame (> -75 dBFS, not straddling silence) of
  the last second. That guard keeps a noise bed that begins after line silence
  (the fake caller sends 0xFF between utterances, then plays the noisy
  fixture) from passing while webrtcvad adapts: steady noise varies by a few
  dB, speech by far more. The onset is the start of the run of speech frames
  (gaps ≤ 50 ms) ending now, then moved back over up to 100 ms of frames loud
  enough by that same non-silent floor — webrtcvad misses soft onsets, and
  real ones while it adapts to a new noise bed.
* **stop**: ``silence_duration_ms`` of consecutive non-speech frames. The end
  of speech is the end of the last speech frame; ``audio_end_ms`` = that +
  ``silence_duration_ms``: the buffer time at which the decision is made (for
  durations that are whole multiples of 10 ms).
* **semantic_vad**: the same, with the silence waited chosen by
  :func:`semantic_wait_ms` — a documented stand-in, not the real model.

Measured on every caller fixture through the phone path (8 kHz μ-law, as a
Twilio bridge forwards it, heard at 8 kHz): onsets within 20 ms and ends within 20 ms of
the manifest, the 20 dB SNR telephone variant included; nothing on line
silence, white noise (-60 to -10 dBFS) or tones. See tests/mock/test_vad.py.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Final, Literal

import numpy as np
import webrtcvad

try:  # the C extension under webrtcvad's thin wrapper; see _webrtc_process
    import _webrtcvad  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    _webrtcvad = None

__all__ = ["VadParams", "VadEvent", "ServerVad", "semantic_wait_ms", "EAGERNESS"]

FRAME_MS: Final = 10
#: webrtcvad aggressiveness (0-3). 2: modes 0-1 call -40 dBFS white noise
#: speech now and then, mode 3 misses some soft word endings.
WEBRTC_MODE: Final = 2
#: Start rule: this many speech frames among the last START_WINDOW.
START_WINDOW: Final = 10
START_MIN: Final = 6
#: Onset look-back: through gaps of at most this many frames, this far back.
ONSET_MAX_GAP: Final = 5
LOOKBACK: Final = 50
#: … and then over at most this many frames louder than the gate (see _start).
EDGE_MAX: Final = 10
#: Frames quieter than this (dBFS) are line silence / dither, not a noise bed.
LINE_SILENCE_DBFS: Final = -75.0
#: Minimum-statistics noise tracker: blocks of this many frames, this many kept.
NOISE_BLOCK: Final = 25
NOISE_BLOCKS: Final = 4
#: Bound on :attr:`ServerVad.decisions`.
MAX_DECISIONS: Final = 1000

EAGERNESS: Final = ("low", "medium", "high", "auto")
#: semantic_vad stand-in: silence waited after speech, per eagerness …
_SEMANTIC_WAIT_MS: Final = {"low": 1500, "medium": 800, "auto": 800, "high": 300}
#: … doubled for utterances shorter than this (a fragment is more likely unfinished) …
_SEMANTIC_SHORT_MS: Final = 1000
#: … and never beyond the real service's documented maximum waits.
_SEMANTIC_MAX_MS: Final = {"low": 8000, "medium": 4000, "auto": 4000, "high": 2000}


def semantic_wait_ms(eagerness: str, utterance_ms: float) -> int:
    """Silence the semantic_vad stand-in waits after an utterance of ``utterance_ms``.

    The real semantic_vad decides with a model of whether the words so far
    sound finished; its behaviour is not documented beyond the maximum waits
    (low 8 s, medium/auto 4 s, high 2 s). This stand-in only knows the audio:
    a fixed wait per eagerness (high 300 ms, medium/auto 800 ms, low 1500 ms),
    doubled for utterances under 1 s, capped at the documented maximum.
    """
    base = _SEMANTIC_WAIT_MS[eagerness]
    if utterance_ms < _SEMANTIC_SHORT_MS:
        base *= 2
    return min(base, _SEMANTIC_MAX_MS[eagerness])


@dataclass(frozen=True)
class VadParams:
    """Turn-detection settings, as in the session's ``turn_detection``.

    ``threshold`` (0..1) sets loudness: the energy floor (-70 dBFS + 40 dB ×
    threshold) and the margin above the tracked noise (3 dB + 12 dB ×
    threshold). With ``semantic=True``, ``silence_duration_ms`` and ``threshold``
    are not part of the real semantic_vad config; the silence waited comes from
    :func:`semantic_wait_ms` and the loudness from ``threshold`` (default 0.5).
    """

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 200
    semantic: bool = False
    eagerness: str = "auto"

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.prefix_padding_ms < 0:
            raise ValueError("prefix_padding_ms must be >= 0")
        if self.silence_duration_ms < 0:
            raise ValueError("silence_duration_ms must be >= 0")
        if self.eagerness not in EAGERNESS:
            raise ValueError(f"eagerness must be one of {EAGERNESS}, got {self.eagerness!r}")

    @property
    def floor_dbfs(self) -> float:
        return -70.0 + 40.0 * self.threshold

    @property
    def noise_margin_db(self) -> float:
        return 3.0 + 12.0 * self.threshold


@dataclass(frozen=True)
class VadEvent:
    """A turn boundary, in ms on the VAD's buffer clock (``start_ms`` + audio fed).

    ``speech_started``: ``audio_ms`` = ``speech_onset_ms - prefix_padding_ms``,
    never before the clock's start nor before the previous ``speech_stopped``'s
    ``audio_ms`` (that audio was already committed); ``speech_end_ms`` is None.
    ``speech_stopped``: ``audio_ms`` = ``speech_end_ms`` + the silence waited.
    """

    kind: Literal["speech_started", "speech_stopped"]
    audio_ms: int
    speech_onset_ms: int
    speech_end_ms: int | None = None


def _process_works() -> bool:
    """Does webrtcvad's C entry point take (handle, rate, buf, length)? Probed on a throwaway Vad."""
    try:
        probe = webrtcvad.Vad(0)
        return _webrtcvad.process(probe._vad, 16000, bytes(320), 160) in (True, False)
    except Exception:  # another signature or build: use the public wrapper
        return False


_PROCESS_OK: Final = _webrtcvad is not None and _process_works()


def _webrtc_process(vad: webrtcvad.Vad) -> tuple[Callable[[Any, int, bytes, int], bool], Any]:
    """(function, handle) to classify a frame: webrtcvad's C entry point if it works.

    ``Vad.is_speech`` only re-checks the length, yet its Python frame costs as
    much as the C call; this VAD always
    passes whole frames. Falls back to the wrapper if the internals differ.
    """
    if _PROCESS_OK:
        return _webrtcvad.process, vad._vad

    def wrapper(_handle: Any, rate: int, buf: bytes, _length: int) -> bool:
        return bool(vad.is_speech(buf, rate))

    return wrapper, None


# dtype objects made once (numpy re-derives one from ``np.int16`` on every call). An int16
# array's dtype is this very object in practice; anything else takes feed()'s slower check.
_I16: Final = np.dtype(np.int16)
_F64: Final = np.dtype(np.float64)
_WINDOW_MASK: Final = (1 << START_WINDOW) - 1
_LOOKBACK_MASK: Final = (1 << LOOKBACK) - 1


def _onset_back(mask: int) -> int:
    """Frames back from the newest (bit 0, speech) to the start of its run.

    A run continues back through gaps of up to ``ONSET_MAX_GAP`` frames, so a
    start that the guard delayed still reports where the speech began.
    """
    back = 0
    gap = 0
    i = 1
    while mask >> i:
        if (mask >> i) & 1:
            back = i
            gap = 0
        else:
            gap += 1
            if gap > ONSET_MAX_GAP:
                break
        i += 1
    return back


def _power(dbfs: float, frame: int) -> float:
    """dBFS → sum of squares of one int16 frame (what the hot loop compares)."""
    return 10.0 ** (dbfs / 10.0) * frame * 32768.0 * 32768.0


class ServerVad:
    """Server VAD over 8 or 16 kHz int16 audio; see the module docstring for the rules.

    ``start_ms`` puts the clock's origin elsewhere than 0, for a VAD created
    mid-session (turn detection switched on or changed by ``session.update``).
    Digital silence takes a short path (:meth:`feed_silence`); on speech,
    webrtcvad's C call is skipped on frames no threshold could call speech, and
    numpy's per-call overhead is most of the cost.
    """

    def __init__(self, params: VadParams, rate: int = 16000, *, start_ms: float = 0.0) -> None:
        if rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"webrtcvad needs 8/16/32/48 kHz audio, got {rate}")
        self.rate: int = rate
        self._frame = rate * FRAME_MS // 1000
        self._start_ms = float(start_ms)
        self._vad = webrtcvad.Vad(WEBRTC_MODE)
        self._is_speech, self._vad_handle = _webrtc_process(self._vad)
        self._frame_bytes = self._frame * 2
        self._ones = np.ones(self._frame, dtype=np.float64)
        self._buf = bytearray()  # the partial frame not analysed yet
        self._fed = 0  # samples fed, including the partial frame in _buf
        self._k = 0  # frames processed
        # noise tracker (sums of squares per frame)
        self._blk_min = math.inf
        self._blk_min_ns = math.inf
        self._p1 = self._p2 = 0.0  # powers of the previous two frames
        self._blk_n = 0
        self._hist: deque[tuple[float, float]] = deque(maxlen=NOISE_BLOCKS)
        self._hist_min = math.inf
        self._hist_min_ns = math.inf
        # turn state
        self._mask = 0  # speech flags of the last LOOKBACK frames, bit 0 = newest
        self._recent: deque[float] = deque(maxlen=LOOKBACK)  # powers of the last frames
        self._flag = False
        self._speaking = False
        self._onset_k = 0
        self._last_speech_end_k = 0  # frame index just past the last speech frame
        self._silent_run = 0
        self._wait = 0  # ms of silence the current pause must reach
        self._wait_frames = 0
        self._floor_ms = self._start_ms  # speech_started.audio_ms never goes before it
        self._min_onset_k = 0
        self._decisions: deque[dict[str, Any]] = deque(maxlen=MAX_DECISIONS)
        self.params = params

    # ---------------------------------------------------------------- config

    @property
    def params(self) -> VadParams:
        return self._params

    @params.setter
    def params(self, params: VadParams) -> None:
        """Change settings in place, keeping the clock and the audio history."""
        self._params = params
        n = self._frame
        self._gate_abs = _power(params.floor_dbfs, n)
        self._gate_mul = 10.0 ** (params.noise_margin_db / 10.0)
        # threshold 0's gate: below it no threshold calls a frame speech, so
        # webrtcvad is skipped there — the same frames for every threshold,
        # which keeps webrtcvad's state, and so monotonicity, threshold-free.
        self._gate0_abs = _power(VadParams(threshold=0.0).floor_dbfs, n)
        self._gate0_mul = 10.0 ** (VadParams(threshold=0.0).noise_margin_db / 10.0)
        self._line_silence = _power(LINE_SILENCE_DBFS, n)

    # ----------------------------------------------------------- inspection

    @property
    def buffer_ms(self) -> float:
        """Buffer clock now: ``start_ms`` + ms of audio fed so far."""
        return self._start_ms + self._fed * 1000 / self.rate

    @property
    def speaking(self) -> bool:
        """True between a speech_started and its speech_stopped."""
        return self._speaking

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """The last 1000 frame-level speech/non-speech transitions and events.

        Each is ``{"ms", "speech", "energy_dbfs", "gate_dbfs"}`` for a
        transition (``ms`` = start of the frame that changed), or
        ``{"ms", "event", "audio_ms", "speech_onset_ms", "speech_end_ms"}``.
        """
        return list(self._decisions)

    def _ms(self, k: int) -> int:
        return round(self._start_ms + k * FRAME_MS)

    def _dbfs(self, power: float) -> float:
        return round(10.0 * math.log10(power / (self._frame * 1073741824.0) + 1e-12), 1)

    # ------------------------------------------------------------- feeding

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        """Feed int16 samples at ``rate``; return the events they completed."""
        x = samples
        if type(x) is not np.ndarray or x.dtype is not _I16 or x.ndim != 1:
            x = np.asarray(samples)
            if x.dtype != _I16 or x.ndim != 1:
                raise TypeError(f"expected 1-D int16 samples, got {x.dtype} {x.shape}")
        m = x.shape[0]
        self._fed += m
        buf = self._buf
        if not buf and not m % self._frame:  # whole frames and nothing pending: the usual append
            n = m // self._frame
            if not n:
                return []
            raw = x.tobytes()
            xf = x.astype(_F64)
        else:
            buf += x.tobytes()
            nb = self._frame_bytes
            n = len(buf) // nb
            if not n:
                return []
            used = n * nb
            raw = bytes(buf[:used])
            del buf[:used]
            xf = np.frombuffer(raw, _I16).astype(_F64)
        # float64 sums of int16 squares are exact (< 2**53) in any order, so a
        # frame's energy never depends on how the audio was chunked.
        xf *= xf
        powers = xf.reshape(n, self._frame).dot(self._ones).tolist()
        return self._run(powers, raw)

    def feed_silence(self, n: int) -> list[VadEvent]:
        """Feed ``n`` samples of digital silence (exact zeros); same result as ``feed(zeros)``.

        Most of what a call appends is the idle line. Whole frames of zeros have
        power 0.0 — exactly what :meth:`feed` computes for them — and 0 is below
        every gate, so webrtcvad never sees them (in :meth:`feed` either) and
        their bytes are never read: only the per-frame turn logic runs. When a
        partial frame is pending, or ``n`` is not whole frames, this is
        :meth:`feed` on real zeros.
        """
        frame = self._frame
        if self._buf or n % frame:
            return self.feed(np.zeros(n, dtype=_I16))
        self._fed += n
        return self._run([0.0] * (n // frame), b"")

    def _run(self, powers: list[float], raw: bytes) -> list[VadEvent]:
        """The per-frame loop; hot, so state lives in locals while it runs."""
        events: list[VadEvent] = []
        nb = self._frame_bytes
        is_speech = self._is_speech
        rate = self.rate
        samples_per_frame = self._frame
        line_silence = self._line_silence
        gate0_abs, gate0_mul = self._gate0_abs, self._gate0_mul
        gate_abs, gate_mul = self._gate_abs, self._gate_mul
        recent = self._recent
        blk_min, blk_min_ns, blk_n = self._blk_min, self._blk_min_ns, self._blk_n
        hist_min = self._hist_min
        p1, p2 = self._p1, self._p2
        mask, flag, k = self._mask, self._flag, self._k
        off = 0
        for p in powers:
            # --- noise floor: minimum statistics over blocks
            if p < blk_min:
                blk_min = p
            # the non-silent floor takes the *previous* frame, and only when
            # it and both neighbours are above line silence: a frame straddling
            # silence and noise is partly empty and would fake a low floor.
            if p1 < blk_min_ns and p2 > line_silence and p1 > line_silence and p > line_silence:
                blk_min_ns = p1
            p2 = p1
            p1 = p
            blk_n += 1
            if blk_n == NOISE_BLOCK:
                hist = self._hist
                hist.append((blk_min, blk_min_ns))
                hist_min = self._hist_min = min(h[0] for h in hist)
                self._hist_min_ns = min(h[1] for h in hist)
                blk_min = blk_min_ns = math.inf
                blk_n = 0
            noise = hist_min if hist_min < blk_min else blk_min
            # --- per-frame decision
            if p < gate0_abs or p < noise * gate0_mul:
                speech = False
            else:
                # webrtcvad runs on every frame above threshold 0's gate,
                # whatever the threshold, so its state never depends on it
                speech = (
                    is_speech(self._vad_handle, rate, raw[off : off + nb], samples_per_frame)
                    and p >= gate_abs
                    and p >= noise * gate_mul
                )
            off += nb
            mask = ((mask << 1) | speech) & _LOOKBACK_MASK
            recent.append(p)
            if speech is not flag:
                flag = speech
                self._decisions.append({
                    "ms": self._ms(k), "speech": speech, "energy_dbfs": self._dbfs(p),
                    "gate_dbfs": self._dbfs(max(gate_abs, noise * gate_mul)),
                })
            # --- turn logic
            if not self._speaking:
                if speech and (mask & _WINDOW_MASK).bit_count() >= START_MIN:
                    self._blk_min_ns, self._mask = blk_min_ns, mask
                    if self._start_guard():
                        events.append(self._start(k))
            elif speech:
                self._last_speech_end_k = k + 1
                self._silent_run = 0
            else:
                self._silent_run += 1
                if self._silent_run == 1:  # silence begins: how long to wait?
                    utterance = (self._last_speech_end_k - self._onset_k) * FRAME_MS
                    self._wait = self._wait_ms(utterance)
                    self._wait_frames = max(1, -(-self._wait // FRAME_MS))
                if self._silent_run >= self._wait_frames:
                    events.append(self._stop(k))
            k += 1
        self._blk_min, self._blk_min_ns, self._blk_n = blk_min, blk_min_ns, blk_n
        self._p1, self._p2 = p1, p2
        self._mask, self._flag, self._k = mask, flag, k
        return events

    def _start_guard(self) -> bool:
        noise_ns = min(self._hist_min_ns, self._blk_min_ns)
        if noise_ns == math.inf:
            return True
        loudest = max(islice(reversed(self._recent), START_WINDOW))
        return loudest >= noise_ns * self._gate_mul

    def _start(self, k: int) -> VadEvent:
        back = _onset_back(self._mask)
        # webrtcvad misses soft onsets (and, while adapting to a new noise bed,
        # real ones): extend over loud-enough frames just before, judged
        # against the noise of non-silent frames so a noise bed that began
        # after line silence is not taken for speech.
        noise_ns = min(self._hist_min_ns, self._blk_min_ns)
        gate = max(self._gate_abs, noise_ns * self._gate_mul)
        recent = self._recent
        limit = min(back + EDGE_MAX, len(recent) - 1)
        while back < limit and recent[-2 - back] >= gate:
            back += 1
        onset_k = max(k - back, self._min_onset_k)
        self._speaking = True
        self._onset_k = onset_k
        self._last_speech_end_k = k + 1
        self._silent_run = 0
        onset = self._ms(onset_k)
        audio_ms = max(onset - self.params.prefix_padding_ms, math.ceil(self._floor_ms))
        ev = VadEvent("speech_started", audio_ms, onset, None)
        self._record(k, ev)
        return ev

    def _wait_ms(self, utterance_ms: int) -> int:
        p = self.params
        if p.semantic:
            return semantic_wait_ms(p.eagerness, utterance_ms)
        return p.silence_duration_ms

    def _stop(self, k: int) -> VadEvent:
        end = self._ms(self._last_speech_end_k)
        ev = VadEvent("speech_stopped", end + self._wait, self._ms(self._onset_k), end)
        self._speaking = False
        self._silent_run = 0
        self._floor_ms = ev.audio_ms
        self._min_onset_k = k + 1  # a new turn's speech begins after this decision
        self._record(k, ev)
        return ev

    def _record(self, k: int, ev: VadEvent) -> None:
        self._decisions.append({
            "ms": self._ms(k + 1), "event": ev.kind, "audio_ms": ev.audio_ms,
            "speech_onset_ms": ev.speech_onset_ms, "speech_end_ms": ev.speech_end_ms,
        })
