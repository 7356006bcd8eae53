"""Measure one call: turn latency, barge-in, truncate error, codec, underruns (design.md).

Everything is measured at the fake caller, on the shared monotonic clock, from
what :class:`~..caller.core.CallerCore` recorded — the timeline (:mod:`.timeline`),
one played frame per 20 ms tick (``played_bytes``, ``heard``), when each tick ran
(``tick_ns``) —
plus, when the mock OpenAI server is in the loop, its session snapshot (VAD
wait, think time, truncates, close). :func:`measure_call` fills a
:class:`~.measurements.CallMetrics`; :func:`summarize` pools many.

How caller time is read (the choices every metric below shares):

* **Caller events** (:class:`.UtteranceStart`, :class:`.SpeechStart`,
  :class:`.SpeechEnd`) are stamped when their frame was *sent*. The frame's own
  tick is the last tick whose grid time ``t0 + k·20 ms`` is not after that send
  time.
* **Played audio** is placed at its tick's *grid* time, as ``heard.wav`` places
  it, not at the time the tick happened to be processed: under load a tick runs
  a few ms late, and that harness delay must not count against the bridge. A
  frame is never placed before its audio arrived, though: a late tick can play
  audio that arrived after its grid time, and then the frame counts from the
  arrival (when :class:`.MediaIn` events are recorded; see :class:`Playout`).
* **Before or after an app message** (``clear``): a tick is before it if it was
  processed before it — exactly what the emulated Twilio buffer did.

Utterances said while assistant audio is playing are **barge-ins**; the others
are **turns** (design.md's "caller utterance").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from ..audio.codec import FRAME_BYTES, SILENCE_PEAK, ULAW_MAGNITUDE, ulaw_to_pcm16
from ..audio.utterances import UtteranceBank, default_bank
from ..caller.call_result import CallResult
from ..caller.core import FRAME_NS, CallerCore
from .renewals import measure_renewals
from .bridge_share import attach_mock, line_tag_rx, uplink_ms
from .measurements import BargeInMetrics, CallMetrics, CodecMetrics, TurnMetrics
from .recording import pacing_stats
from .timeline import (
    CallerSpeech,
    ClearIn,
    ClosedByApp,
    DtmfSent,
    MediaIn,
    Overflow,
    SpeechEnd,
    SpeechStart,
    Stop,
    UtteranceEnd,
    UtteranceStart,
)

MS = 1_000_000  # ns
BYTES_PER_MS = 8  # μ-law at 8 kHz
#: speech starting while a frame played within this many ticks is a barge-in
PLAYING_LOOKBACK_TICKS = 2
#: this much silence ends the assistant audio that talks over a barge-in
PLAYBACK_STOP_TICKS = 15  # 300 ms, the caller's own onset hangover
TALK_OVER_CAP_TICKS = 500  # 10 s
#: SNR reported when the echo is sample-for-sample identical (JSON has no infinity)
SNR_IDENTICAL_DB = 100.0
#: bit-exact check: the whole speech, or failing that a stretch this long of it
BIT_EXACT_STRETCH_MS = 1000


# ============================================================== percentiles


def percentiles(values: Iterable[float | None]) -> dict[str, float | None]:
    """``{"p50", "p95", "p99", "max"}`` of the finite values (numpy, linear); all ``None`` if there are none."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(v, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(a.max())}


# ============================================================ played audio


class Playout:
    """What the caller played, tick by tick, as arrays.

    ``played[k]`` app bytes in tick *k*'s frame, ``loud[k]`` whether that frame
    is non-silent assistant audio (``played > 0`` and peak ≥ −40 dBFS),
    ``tick_ns[k]`` when the tick ran, ``grid_ns[k]`` its grid time and
    ``arrival_ns[k]`` when the first byte of its audio reached the caller
    (``-1`` if unknown). The arrival is rebuilt from the ``media_in`` events:
    the emulated buffer is FIFO, ``clear`` drops its tail and an overflow the
    tail of one payload, so the *n*-th byte played is the *n*-th byte kept.
    """

    def __init__(self, core: CallerCore) -> None:
        assert core.t0_ns is not None
        self.t0_ns = core.t0_ns
        self.played = np.frombuffer(core.played_bytes, dtype=np.uint16).astype(np.int64) \
            if len(core.played_bytes) else np.zeros(0, np.int64)
        self.n = len(self.played)
        self.tick_ns = np.frombuffer(core.tick_ns, dtype=np.int64).copy() if self.n else np.zeros(0, np.int64)
        self.grid_ns = self.t0_ns + np.arange(self.n, dtype=np.int64) * FRAME_NS
        heard = np.frombuffer(bytes(core.heard[: self.n * FRAME_BYTES]), dtype=np.uint8)
        if self.n:
            peaks = ULAW_MAGNITUDE[heard].reshape(self.n, FRAME_BYTES).max(axis=1)
            self.loud = (self.played > 0) & (peaks >= SILENCE_PEAK)
        else:
            self.loud = np.zeros(0, bool)
        self.arrival_ns = _arrivals(core, self.played)

    def tick_of(self, t_ns: int) -> int:
        """The tick whose frame a caller message sent at ``t_ns`` belongs to (last grid time ≤ t)."""
        return int(min(max((t_ns - self.t0_ns) // FRAME_NS, 0), max(self.n - 1, 0)))

    def done_by(self, t_ns: int) -> int:
        """How many ticks had been processed at ``t_ns`` (ticks ``[0, result)`` came first)."""
        return int(np.searchsorted(self.tick_ns, t_ns, side="right"))

    def played_ns(self, k: int) -> int:
        """When tick ``k``'s frame played: its grid time, but never before its audio arrived."""
        return int(max(self.grid_ns[k], self.arrival_ns[k]))

    def ms(self, a: int, b: int) -> float:
        """Assistant audio played in ticks ``[a, b)``, in ms."""
        a, b = max(a, 0), min(b, self.n)
        return float(self.played[a:b].sum()) / BYTES_PER_MS if b > a else 0.0

    def first(self, mask: np.ndarray, a: int, b: int) -> int | None:
        """First tick in ``[a, b)`` where ``mask`` is true."""
        a, b = max(a, 0), min(b, self.n)
        if b <= a:
            return None
        hit = np.flatnonzero(mask[a:b])
        return int(a + hit[0]) if len(hit) else None


def _arrivals(core: CallerCore, played: np.ndarray) -> np.ndarray:
    unknown = np.full(len(played), -1, dtype=np.int64)
    seg_t: list[int] = []
    seg_n: list[int] = []
    seen = 0
    for e in core.timeline.iter_of(MediaIn, Overflow, ClearIn):
        if isinstance(e, MediaIn):
            seen += 1
            seg_t.append(e.t_ns)
            seg_n.append(e.bytes)
        elif isinstance(e, Overflow):
            if seg_n:
                seg_n[-1] = max(0, seg_n[-1] - e.dropped_bytes)
        else:
            d = e.dropped_bytes
            while d > 0 and seg_n:
                take = min(d, seg_n[-1])
                seg_n[-1] -= take
                d -= take
                if seg_n[-1] == 0:
                    seg_n.pop()
                    seg_t.pop()
    if seen != core.counts["media_in"] or not seg_n or not len(played):
        return unknown  # media_in not recorded (record_media_in=False): grid times only
    ends = np.cumsum(np.asarray(seg_n, dtype=np.int64))
    if int(played.sum()) > int(ends[-1]):
        return unknown  # inconsistent: never guess
    first_byte = np.cumsum(played) - played
    idx = np.searchsorted(ends, first_byte, side="right")
    out = np.asarray(seg_t, dtype=np.int64)[np.minimum(idx, len(seg_t) - 1)]
    out[played == 0] = -1
    return out


def heard_ms_between(core: CallerCore, start_tick: int, until_ns: int) -> float:
    """Assistant audio the caller played from tick ``start_tick`` up to the app message at ``until_ns``."""
    po = Playout(core)
    return po.ms(start_tick, po.done_by(until_ns))


# ============================================================== alignment


def best_alignment(ref: np.ndarray, heard: np.ndarray) -> tuple[int, float]:
    """Where ``ref`` best matches inside ``heard``: (sample offset, normalised cross-correlation).

    Searches every lag over the whole of ``heard`` (padded at the end so an echo
    cut short still aligns) with one FFT correlation; each lag is normalised by
    the energy of the heard window so loud unrelated audio cannot win.
    """
    r = np.asarray(ref, dtype=np.float64)
    L = len(r)
    h = np.concatenate([np.asarray(heard, dtype=np.float64), np.zeros(max(L - 1, 0))])
    er = float(np.dot(r, r))
    if L == 0 or er == 0.0 or len(h) < L:
        return 0, 0.0
    n = len(h) + L - 1
    nfft = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(h, nfft) * np.conj(np.fft.rfft(r, nfft)), nfft)[: len(h) - L + 1]
    cs = np.concatenate([[0.0], np.cumsum(h * h)])
    win = cs[L:] - cs[:-L]
    ncc = np.zeros_like(corr)
    ok = win > er * 1e-9
    ncc[ok] = corr[ok] / np.sqrt(win[ok] * er)
    lag = int(np.argmax(ncc))
    return lag, float(ncc[lag])


def snr_db(ref: np.ndarray, heard: np.ndarray) -> float | None:
    """SNR (dB) of ``heard`` against ``ref`` (int16 PCM) at their best alignment; ``None`` if nothing to compare.

    Identical audio gives :data:`SNR_IDENTICAL_DB`. No gain is fitted: a level
    change is an error of the path like any other.
    """
    r = np.asarray(ref, dtype=np.float64)
    if not len(r) or not len(heard) or not np.any(r):
        return None
    lag, _ = best_alignment(r, heard)
    h = np.asarray(heard, dtype=np.float64)[lag: lag + len(r)]
    if len(h) < len(r):
        h = np.concatenate([h, np.zeros(len(r) - len(h))])
    noise = float(np.sum((h - r) ** 2))
    if noise == 0.0:
        return SNR_IDENTICAL_DB
    return min(SNR_IDENTICAL_DB, 10 * math.log10(float(np.dot(r, r)) / noise))


# ============================================================ utterances


@dataclass
class _Utt:
    fixture: str
    start_ns: int
    speech_start_ns: int | None = None
    speech_end_ns: int | None = None
    end_ns: int | None = None
    barge_in: bool = False


_UTT_ATTR = {SpeechStart: "speech_start_ns", SpeechEnd: "speech_end_ns", UtteranceEnd: "end_ns"}


def _utterances(core: CallerCore) -> list[_Utt]:
    utts: list[_Utt] = []
    for e in core.timeline.iter_of(CallerSpeech):
        if isinstance(e, UtteranceStart):
            utts.append(_Utt(e.fixture, e.t_ns))
        elif utts and utts[-1].fixture == e.fixture:
            attr = _UTT_ATTR[type(e)]
            if getattr(utts[-1], attr) is None:
                setattr(utts[-1], attr, e.t_ns)
    return utts


def _playing_at(po: Playout, t_ns: int) -> bool:
    """Assistant audio playing when the caller sent a frame at ``t_ns``: a frame played within
    the last :data:`PLAYING_LOOKBACK_TICKS` ticks, or audio already queued for the next."""
    k = po.tick_of(t_ns)
    if po.n and po.played[max(0, k - PLAYING_LOOKBACK_TICKS + 1): k + 1].any():
        return True
    nxt = k + 1
    return nxt < po.n and po.played[nxt] > 0 and 0 <= po.arrival_ns[nxt] <= t_ns


def _is_barge_in(po: Playout, u: _Utt, clears: list[int]) -> bool:
    if u.speech_start_ns is None:
        return False
    if _playing_at(po, u.speech_start_ns):
        return True
    # The bridge may clear on the line noise before the speech itself (the mock's VAD
    # starts from the audio, not the manifest): still a barge-in if audio was playing.
    return _playing_at(po, u.start_ns) and any(u.start_ns <= c <= u.speech_start_ns for c in clears)


# ================================================================== main


def measure_call(result: CallResult, *, scenario: str, call_index: int = 0, mock: dict[str, Any] | None = None,
                 bank: UtteranceBank | None = None, behaviour_echo: bool = False,
                 created_delay_ms: float = 0.0, sessions: list[dict[str, Any]] | None = None) -> CallMetrics:
    """Measure one call (see the module docstring and design.md "Metric definitions").

    ``mock`` is the mock session's :meth:`~.mock.session.MockSession.snapshot`
    for this call (``None`` when the mock is not in the loop); ``behaviour_echo``
    says the mock echoed the caller (codec check); ``created_delay_ms`` is the
    mock's trigger → ``response.created`` delay, used only where the snapshot
    lacks the timestamps to measure it. ``sessions``: each mock session of the call, by open time,
    when a bridge renewed its OpenAI session (``mock`` is then their merged view); the renewal
    figures are measured from them (:mod:`.renewals`).
    """
    core = result.core
    bank = bank or default_bank()
    m = CallMetrics(scenario=scenario, call_index=call_index,
                    call_sid=core.ident.call_sid if core is not None else None)
    if core is None or core.t0_ns is None:
        m.status = "error"
        m.error = result.error or "the call never started"
        return m
    if result.error:
        m.status = "error"  # broke mid-call: keep what was recorded, but it is not a result
        m.error = result.error
    s = core.summary()
    m.end_reason = core.end_reason
    m.duration_ms = float(s["duration_ms"])
    m.warnings = {str(k): v for k, v in sorted(core.warning_counts.items())}
    m.warning_reasons = list(dict.fromkeys(w["reason"] for w in core.warnings))[:5]
    m.marks_echoed = dict(core.marks_echoed)
    m.clears = core.counts["clear_in"]
    m.pacing = pacing_stats(result) or {}

    po = Playout(core)
    m.heard_ms = float(po.played.sum()) / BYTES_PER_MS
    m.unheard_at_end_ms = core.unplayed_at_end_bytes / BYTES_PER_MS
    clears = core.timeline.times(ClearIn)
    utts = _utterances(core)
    for u in utts:
        u.barge_in = _is_barge_in(po, u, clears)

    mock_turns = _records(mock, "turns")
    responses = sorted(_records(mock, "responses"), key=lambda r: (r.get("t_trigger_ns") or 0, r.get("index") or 0))
    free_truncates = sorted(_records(mock, "truncates"), key=lambda t: t.get("t_ns") or 0)
    rx = line_tag_rx(core, mock)

    for i, u in enumerate(utts):
        nxt = utts[i + 1].start_ns if i + 1 < len(utts) else None
        prev = utts[i - 1] if i else None
        if u.barge_in:
            m.barge_ins.append(_barge_in(po, u, prev, nxt, clears, free_truncates if mock is not None else None,
                                         responses))
        elif u.speech_end_ns is not None:
            t = _turn(po, u, len(m.turns), nxt)
            if mock is not None:
                attach_mock(t, u.start_ns, nxt, mock_turns, responses, created_delay_ms,
                            uplink_ms(core, rx, u.speech_end_ns))
            m.turns.append(t)

    # a keypress and each reply the mock started begin a new response too (a re-prompt follows no
    # caller utterance): the silence between two replies is no underrun
    starts = core.timeline.times(DtmfSent) + [r["t_first_audio_ns"] for r in responses if r.get("t_first_audio_ns")]
    m.underrun_ms = _underrun_ms(po, utts, clears, starts)
    m.dead_air_ms = _dead_air_ms(po, utts)
    m.replies_after_last_utterance = _replies_after_last(po, utts)
    if behaviour_echo:
        m.codec = _codec(core, [u for u in utts if not u.barge_in and u.speech_end_ns is not None], bank)
    else:
        m.codec = CodecMetrics(note="not checked: the mock is not in echo mode")
    if mock is not None:
        m.mock = _mock_summary(mock, core.t0_ns)
        _keys_after_keypress(m.mock, mock, core.timeline.times(DtmfSent))
        m.transcript = [_text(bank, t["heard"]) for t in mock_turns if t.get("heard")]
        tools = [(j, r["reply"][5:]) for j, r in enumerate(responses) if str(r.get("reply", "")).startswith("tool:")]
        m.tools_called = [name for _, name in tools]
        m.tools_completed = [name for j, name in tools
                             if any(r.get("trigger") == "client" for r in responses[j + 1:])]
        m.tool_stand_ins = {r["reply"][5:]: r["tool_for"] for r in responses
                            if str(r.get("reply", "")).startswith("tool:") and isinstance(r.get("tool_for"), str)}
        m.openai_closed_after_hangup_ms = _closed_after_hangup(core, mock)
        m.renewal = measure_renewals(core, sessions if sessions is not None else [mock])
    return m


def _records(mock: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """A list of records from a full snapshot (a short snapshot has only counts there)."""
    v = (mock or {}).get(key)
    return [r for r in v if isinstance(r, dict)] if isinstance(v, list) else []


def _text(bank: UtteranceBank, name: str) -> str:
    return bank.library[name].text if name in bank.library else name


# ----------------------------------------------------------------- turns


def _turn(po: Playout, u: _Utt, index: int, next_start_ns: int | None) -> TurnMetrics:
    """Latency: the last speech frame's send → the first non-silent assistant frame played after it,
    before the caller's next utterance starts (else no reply: ``None``)."""
    assert u.speech_end_ns is not None
    t = TurnMetrics(index=index, fixture=u.fixture, speech_end_ns=u.speech_end_ns)
    a = po.tick_of(u.speech_end_ns) + 1
    b = po.tick_of(next_start_ns) if next_start_ns is not None else po.n
    k = po.first(po.loud, a, b)
    if k is None:
        return t
    t.first_audio_ns = po.played_ns(k)
    t.latency_ms = (t.first_audio_ns - u.speech_end_ns) / MS
    # The reply's own leading silence (fixtures start with ~200 ms of it) is played
    # before the first loud frame; it is content, not the bridge's delay.
    run = k
    while run > a and po.played[run - 1] > 0:
        run -= 1
    t.reply_start_ns = po.played_ns(run)
    t.reply_lead_ms = (t.first_audio_ns - t.reply_start_ns) / MS
    if po.arrival_ns[run] >= 0:
        t.first_byte_ns = int(po.arrival_ns[run])
    return t


# -------------------------------------------------------------- barge-ins


def _next_reply_tick(po: Playout, responses: list[dict[str, Any]], onset_ns: int) -> int | None:
    """The first tick whose audio arrived after the mock began the reply *after* the one playing at
    ``onset_ns``: audio from there on belongs to that next reply, not to the interrupted one (a bridge
    that never clears lets the two play back to back)."""
    later = [r["t_first_audio_ns"] for r in responses
             if r.get("t_first_audio_ns") is not None and r["t_first_audio_ns"] > onset_ns]
    if not later or not (po.arrival_ns >= 0).any():
        return None
    hit = np.flatnonzero(po.arrival_ns >= min(later))
    return int(hit[0]) if len(hit) else None


def _barge_in(po: Playout, u: _Utt, prev: _Utt | None, next_start_ns: int | None, clears: list[int],
              truncates: list[dict[str, Any]] | None,
              responses: list[dict[str, Any]] | None = None) -> BargeInMetrics:
    assert u.speech_start_ns is not None
    onset = u.speech_start_ns
    b = BargeInMetrics(onset_ns=onset, fixture=u.fixture)
    hi = next_start_ns if next_start_ns is not None else math.inf
    end_tick = po.tick_of(next_start_ns) if next_start_ns is not None else po.n
    clear = next((c for c in clears if u.start_ns <= c < hi), None)
    m_on = po.tick_of(onset)
    if clear is not None:
        b.clear_ns = clear
        b.clear_ms = (clear - onset) / MS  # negative: cleared on line noise before the speech itself
        stop = po.done_by(clear)
    else:
        stop = _playback_stop(po, m_on, end_tick)
        nxt_reply = _next_reply_tick(po, responses or [], onset)
        if nxt_reply is not None and nxt_reply > m_on:
            stop = min(stop, nxt_reply)
    # talk-over: assistant audio played from the onset's frame on, until the clear (or the audio stops)
    over_end = min(stop, m_on + TALK_OVER_CAP_TICKS)
    b.talk_over_ms = po.ms(m_on, over_end)
    if b.talk_over_ms > 0:
        last = m_on + int(np.flatnonzero(po.played[max(m_on, 0):over_end])[-1])
        b.playback_stop_ns = po.played_ns(last) + FRAME_NS
    # heard: the interrupted reply from its first frame to the clear
    start_after = po.tick_of(prev.speech_end_ns or prev.start_ns) + 1 if prev is not None else 0
    earlier = [c for c in clears if c < u.start_ns]
    if earlier:
        start_after = max(start_after, po.done_by(earlier[-1]))
    reply_start = po.first(po.played > 0, start_after, max(stop, m_on + 1))
    if reply_start is not None:
        b.reply_start_ns = po.played_ns(reply_start)
        b.heard_ms = po.ms(reply_start, stop)
    if truncates is not None:
        anchor = clear if clear is not None else onset
        cands = [tr for tr in truncates if u.start_ns <= (tr.get("t_ns") or 0) < hi]
        if cands:
            tr = min(cands, key=lambda x: abs(x["t_ns"] - anchor))
            truncates.remove(tr)
            b.truncate_ns = tr["t_ns"]
            b.truncate_audio_end_ms = tr.get("audio_end_ms")
            b.truncate_accepted = tr.get("accepted")
            b.truncate_rejection = tr.get("error")
            if b.truncate_audio_end_ms is not None:
                b.truncate_error_ms = abs(float(b.truncate_audio_end_ms) - b.heard_ms)
    return b


def _playback_stop(po: Playout, a: int, b: int) -> int:
    """End (exclusive) of the assistant audio playing at tick ``a``: its last frame before
    :data:`PLAYBACK_STOP_TICKS` of silence, or ``b``."""
    b = min(b, po.n)
    last = None
    quiet = 0
    for k in range(max(a, 0), b):
        if po.played[k] > 0:
            last, quiet = k, 0
        else:
            quiet += 1
            if quiet >= PLAYBACK_STOP_TICKS:
                break
    return (last + 1) if last is not None else a


# ---------------------------------------------------------------- dead air


def _dead_air_ms(po: Playout, utts: list[_Utt]) -> float:
    """The longest stretch the caller heard nothing after its last utterance ended, up to the end of
    the call: a reply that never came, or a bridge that lost OpenAI and neither apologised nor hung up."""
    last = max((u.end_ns or u.speech_end_ns or u.start_ns for u in utts), default=None)
    a = po.tick_of(last) + 1 if last is not None else 0
    if a >= po.n:
        return 0.0
    loud = po.loud[a:]
    edges = np.flatnonzero(np.diff(np.concatenate([[1], loud.astype(np.int8), [1]])))
    runs = edges[1::2] - edges[::2] if len(edges) >= 2 else np.zeros(0)
    return float(runs.max()) * 20.0 if len(runs) else 0.0


#: silence that separates two replies: longer than a reply's pauses between words and sentences
#: (the fixtures' longest is ~0.4 s), shorter than any re-prompt delay worth setting
REPLY_GAP_MS = 1000


def _replies_after_last(po: Playout, utts: list[_Utt]) -> int:
    """How many replies the caller heard after its last utterance ended: runs of played assistant
    audio, two runs apart by less than :data:`REPLY_GAP_MS` counting as one reply."""
    last = max((u.end_ns or u.speech_end_ns or u.start_ns for u in utts), default=None)
    a = po.tick_of(last) + 1 if last is not None else 0
    ticks = np.flatnonzero(po.loud[a:])
    if not len(ticks):
        return 0
    return 1 + int(np.count_nonzero(np.diff(ticks) > REPLY_GAP_MS // 20))


# --------------------------------------------------------------- underruns


def _underrun_ms(po: Playout, utts: list[_Utt], clears: list[int], starts: list[int] = ()) -> float:
    """Silence inside assistant responses. The call is cut at every utterance start, speech end,
    clear and each of ``starts`` (keypresses, and with the mock the moment each reply's first audio
    left it); within each piece the response runs from its first to its last played frame, and
    every empty tick inside (20 ms) and every short frame but the last ((160 − bytes)/8 ms) counts."""
    cuts = {0, po.n}
    cuts.update(po.done_by(t) for t in starts)
    for u in utts:
        cuts.add(po.tick_of(u.start_ns))
        if u.speech_end_ns is not None:
            cuts.add(po.tick_of(u.speech_end_ns) + 1)
    cuts.update(po.done_by(c) for c in clears)
    edges = sorted(c for c in cuts if 0 <= c <= po.n)
    total = 0.0
    for a, b in zip(edges, edges[1:]):
        idx = np.flatnonzero(po.played[a:b])
        if len(idx) < 2:
            continue
        seg = po.played[a + idx[0]: a + idx[-1] + 1]
        gaps = int(np.count_nonzero(seg == 0))
        body = seg[:-1]
        short = body[(body > 0) & (body < FRAME_BYTES)]
        total += gaps * 20.0 + float((FRAME_BYTES - short).sum()) / BYTES_PER_MS
    return total


# ------------------------------------------------------------------ codec


def _codec(core: CallerCore, turns: list[_Utt], bank: UtteranceBank) -> CodecMetrics:
    """Echo mode: each turn's speech must come back. Bit-exact if the sent μ-law bytes of the whole
    speech (or at least a :data:`BIT_EXACT_STRETCH_MS` stretch of it) occur unchanged in what was
    heard; SNR after aligning the decoded speech on the decoded heard audio."""
    c = CodecMetrics(checked=True)
    heard = bytes(core.heard)
    per: list[dict[str, Any]] = []
    if turns:
        heard_pcm = ulaw_to_pcm16(heard)
    for u in turns:
        utt = bank.get(u.fixture)
        if not utt.speech_segments_ms:
            continue
        a = int(utt.speech_segments_ms[0][0] * BYTES_PER_MS)
        b = int(utt.speech_segments_ms[-1][1] * BYTES_PER_MS)
        speech = utt.ulaw[a:b]
        whole = speech in heard
        exact = whole
        if not whole:
            n = BIT_EXACT_STRETCH_MS * BYTES_PER_MS
            if len(speech) > n:
                mid = (len(speech) - n) // 2
                exact = speech[mid: mid + n] in heard
        snr = snr_db(ulaw_to_pcm16(speech), heard_pcm) if heard else None
        per.append({"fixture": u.fixture, "bit_exact": exact, "whole_speech": whole,
                    "snr_db": None if snr is None else round(snr, 2), "speech_ms": len(speech) / BYTES_PER_MS})
    c.turns = per
    if not per:
        c.checked = False
        c.note = "nothing to compare: the caller finished no turn with speech"
        return c
    c.bit_exact = all(p["bit_exact"] for p in per)
    snrs = [p["snr_db"] for p in per if p["snr_db"] is not None]
    c.snr_db = min(snrs) if snrs else None
    c.note = f"{len(per)} turn(s) compared" + ("" if all(p["whole_speech"] for p in per) or not c.bit_exact
                                              else "; only part of the speech came back, unchanged")
    return c


# ------------------------------------------------------------------- mock


def _closed_after_hangup(core: CallerCore, mock: dict[str, Any]) -> float | None:
    """OpenAI session close − end of the Twilio stream (the caller's ``stop``, else the app closing it);
    negative when OpenAI's side closed first (never clamped: that is a different finding)."""
    close = mock.get("close")
    if not isinstance(close, dict) or close.get("t_ns") is None:
        return None
    end = core.timeline.first(Stop) or core.timeline.first(ClosedByApp)
    if end is None:
        return None
    return (close["t_ns"] - end.t_ns) / MS


def _mock_summary(snap: dict[str, Any], t0_ns: int) -> dict[str, Any]:
    """The part of the mock's snapshot a report needs (never the audio or the whole event log)."""
    def rel(t: Any) -> float | None:
        return None if t is None else round((t - t0_ns) / MS, 3)

    turns = snap.get("turns") if isinstance(snap.get("turns"), list) else []
    responses = snap.get("responses") if isinstance(snap.get("responses"), list) else []
    truncates = snap.get("truncates") if isinstance(snap.get("truncates"), list) else []
    errors = snap.get("errors") if isinstance(snap.get("errors"), list) else []
    return {
        "id": snap.get("id"), "dialect": snap.get("dialect"), "open": snap.get("open"),
        "close": snap.get("close"), "faults": snap.get("faults", []),
        "turns": [{"item_id": t.get("item_id"), "heard": t.get("heard"), "score": t.get("score"),
                   "audio_ms": t.get("audio_ms"), "vad_wait_wall_ms": t.get("vad_wait_wall_ms"),
                   "t_speech_started_ms": rel(t.get("t_speech_started_ns")),
                   "t_speech_stopped_ms": rel(t.get("t_speech_stopped_ns"))} for t in turns],
        "responses": [{"id": r.get("id"), "index": r.get("index"), "trigger": r.get("trigger"),
                       "reply": r.get("reply"), "status": r.get("status"), "reason": r.get("reason"),
                       "think_ms": r.get("think_ms"), "audio_ms_sent": r.get("audio_ms_sent"),
                       "audio_ms_total": r.get("audio_ms_total"),
                       "t_trigger_ms": rel(r.get("t_trigger_ns")),
                       "t_first_audio_ms": rel(r.get("t_first_audio_ns"))} for r in responses],
        "truncates": [{"t_ns": t.get("t_ns"), "t_ms": rel(t.get("t_ns")), "item_id": t.get("item_id"),
                       "audio_end_ms": t.get("audio_end_ms"), "accepted": t.get("accepted"),
                       "error": t.get("error"), "audio_sent_ms": t.get("audio_sent_ms")} for t in truncates],
        "errors": [{"code": e.get("code"), "message": e.get("message")} for e in errors[:20]],
        "errors_count": len(errors),
        "invalid_sent": list(snap.get("invalid_sent") or [])[:20],
        "dtmf": [k for k in snap.get("dtmf") or [] if isinstance(k, str)][:100],
    }


def _keys_after_keypress(summary: dict[str, Any], snap: dict[str, Any], sent_ns: list[int]) -> None:
    """Keep in ``summary["dtmf"]`` only the keys the bridge told the model *after* the caller's first
    keypress; the others (a greeting prompt that happens to read "DTMF 1 is the weather") go to
    ``dtmf_before_keypress``. The mock recognises a keypress item by its wording, which no two bridges
    share, so the wording is read generously and the timing decides: nothing told before the caller
    pressed a key can be that key."""
    keys, times = snap.get("dtmf") or [], snap.get("dtmf_ns")
    if not isinstance(times, list) or len(times) != len(keys):
        return  # a mock without times: the keys as recorded
    first = min(sent_ns) if sent_ns else None
    told = [(k, t) for k, t in zip(keys, times) if isinstance(k, str) and isinstance(t, int)]
    summary["dtmf"] = [k for k, t in told if first is not None and t >= first][:100]
    summary["dtmf_before_keypress"] = [k for k, t in told if first is None or t < first][:100]


# ================================================================ summary


def summarize(calls: list[CallMetrics]) -> dict[str, Any]:
    """The report.json ``summary`` (design.md keys, plus pacing, errors and counts)."""
    turns = [t for c in calls for t in c.turns]
    bis = [b for c in calls for b in c.barge_ins]
    trunc = [b.truncate_error_ms for b in bis if b.truncate_error_ms is not None]
    snrs = [c.codec.snr_db for c in calls if c.codec.checked and c.codec.snr_db is not None]
    p99 = [c.pacing["lateness_ms_p99"] for c in calls if c.pacing.get("lateness_ms_p99") is not None]
    pmax = [c.pacing["lateness_ms_max"] for c in calls if c.pacing.get("lateness_ms_max") is not None]
    return {
        "calls": len(calls),
        "passed": sum(c.status == "passed" for c in calls),
        "failed": sum(c.status == "failed" for c in calls),
        "skipped": sum(c.status == "skipped" for c in calls),
        "errors": sum(c.status == "error" for c in calls),
        "turns": len(turns),
        "turns_without_reply": sum(t.latency_ms is None for t in turns),
        "barge_ins": len(bis),
        "turn_latency_ms": percentiles(t.latency_ms for t in turns),
        "overhead_ms": percentiles(t.overhead_ms for t in turns),
        # the bridge's two hops, from the same audio timestamped on both sides (beside turn latency)
        "uplink_hop_ms": percentiles(t.uplink_hop_ms for t in turns),
        "downlink_hop_ms": percentiles(t.downlink_hop_ms for t in turns),
        "barge_in_clear_ms": percentiles(b.clear_ms for b in bis),
        "talk_over_ms": percentiles(b.talk_over_ms for b in bis),
        "truncate_error_ms": {"max": max(trunc) if trunc else None},
        "codec": {"bit_exact_calls": sum(bool(c.codec.checked and c.codec.bit_exact) for c in calls),
                  "checked_calls": sum(bool(c.codec.checked) for c in calls),
                  "min_snr_db": min(snrs) if snrs else None},
        "underrun_ms_total": float(sum(c.underrun_ms for c in calls)),
        # caller send lateness vs the 20 ms grid: the worst call's p99 and max
        "pacing_jitter_ms": {"p99": max(p99) if p99 else None, "max": max(pmax) if pmax else None},
    }
