"""Seeded send-side impairments: the Impairer alone, and through CallerCore.

Through the core, the Twilio counters must stay honest: a lost frame was never
numbered, so ``sequenceNumber`` and ``chunk`` stay contiguous over what is sent
while ``timestamp`` (the media clock) skips; a gap shifts ``timestamp`` only;
bunching and jitter delay frames but never reorder them.
"""

from __future__ import annotations

import json
import random

import pytest
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.core import FRAME_NS, CallerConfig, CallerCore
from callsim.simulator.caller.impairments import FrameFate, Impairer, Impairments
from callsim.simulator.caller.script import Pause, Say
from callsim.simulator.caller.sids import make_sid
from callsim.simulator.measure.timeline import CallerSpeech, SpeechEnd, SpeechStart, UtteranceEnd, UtteranceStart

T0 = 7_000_000_000
FRAME_MS = 20


def fates(imp: Impairments, n: int) -> list[FrameFate]:
    imp_r = Impairer(imp)
    return [imp_r.fate(T0 + k * FRAME_NS) for k in range(n)]


# ---------------------------------------------------------------- parsing


def test_parse_full_spec():
    imp = Impairments.parse("jitter=5,loss=0.01,bunch=0.02x5,gap=0.01x40,seed=7")
    assert imp == Impairments(jitter_ms=5.0, bunch_prob=0.02, bunch_frames=5, loss_prob=0.01,
                              gap_prob=0.01, gap_ms=40, seed=7)
    assert imp.active


def test_parse_defaults_and_partial_specs():
    assert Impairments.parse("") == Impairments()
    assert not Impairments.parse("").active
    assert not Impairments.parse("seed=3").active
    assert Impairments.parse("seed=3").seed == 3
    # counts are optional and keep their defaults
    assert Impairments.parse("bunch=0.1") == Impairments(bunch_prob=0.1, bunch_frames=5)
    assert Impairments.parse("gap=0.2") == Impairments(gap_prob=0.2, gap_ms=40)
    # whitespace and empty parts are tolerated
    assert Impairments.parse(" jitter=2.5 , ,bunch=0.5x3 ") == Impairments(jitter_ms=2.5, bunch_prob=0.5, bunch_frames=3)


@pytest.mark.parametrize("spec", [
    "wobble=1", "jitter=abc", "jitter", "loss=", "bunch=0.1xq", "bunch=x5", "gap=0.1x4.5", "seed=1.5",
    "Jitter=5",
])
def test_parse_rejects_bad_specs_with_an_example(spec):
    with pytest.raises(ValueError) as info:
        Impairments.parse(spec)
    msg = str(info.value)
    assert "bad impairment" in msg
    assert "jitter=5,loss=0.01,bunch=0.02x5,gap=0.01x40,seed=7" in msg


@pytest.mark.parametrize("spec", ["bunch=0.5x0", "bunch=0.5x-2"])
def test_parse_rejects_bunch_of_no_frames(spec):
    with pytest.raises(ValueError):
        Impairments.parse(spec)


# --------------------------------------------------------------- Impairer


def test_inactive_impairer_is_transparent():
    assert fates(Impairments(seed=9), 50) == [FrameFate(True, 0, 0)] * 50


def test_same_seed_same_fates_and_other_seed_differs():
    imp = Impairments(jitter_ms=15, loss_prob=0.1, bunch_prob=0.05, bunch_frames=4, gap_prob=0.05, gap_ms=60, seed=42)
    a = fates(imp, 2000)
    assert a == fates(imp, 2000)
    assert a != fates(Impairments(**{**imp.__dict__, "seed": 43}), 2000)


def test_loss_drops_frames_at_about_the_rate_and_counts_them():
    imp_r = Impairer(Impairments(loss_prob=0.25, seed=1))
    out = [imp_r.fate(T0 + k * FRAME_NS) for k in range(4000)]
    lost = sum(not f.send for f in out)
    assert imp_r.lost == lost
    assert 850 <= lost <= 1150  # 1000 expected; a seeded draw, so this is deterministic
    assert all(f.delay_ns == 0 and f.ts_shift_ms == 0 for f in out)


def test_jitter_delays_within_bounds_and_never_reorders():
    imp = Impairments(jitter_ms=50, seed=3)  # larger than a frame period: would reorder if unchecked
    out = fates(imp, 3000)
    assert all(f.send for f in out)
    dues = [T0 + k * FRAME_NS + f.delay_ns for k, f in enumerate(out)]
    assert dues == sorted(dues)
    assert all(0 <= f.delay_ns for f in out)
    # every frame is late by at most jitter + what the frame before it forced
    raw_max = 50 * 1_000_000
    assert max(f.delay_ns for f in out) < raw_max
    assert len({f.delay_ns for f in out}) > 100  # really jittered


def test_small_jitter_delays_uniformly_below_jitter():
    out = fates(Impairments(jitter_ms=5, seed=11), 2000)
    assert all(0 <= f.delay_ns < 5_000_000 for f in out)
    mean = sum(f.delay_ns for f in out) / len(out)
    assert 2_000_000 < mean < 3_000_000


def test_bunching_holds_frames_then_releases_them_together():
    out = fates(Impairments(bunch_prob=1.0, bunch_frames=5, seed=0), 10)
    dues = [(T0 + k * FRAME_NS + f.delay_ns - T0) // 1_000_000 for k, f in enumerate(out)]
    assert dues == [80, 80, 80, 80, 80, 180, 180, 180, 180, 180]
    assert [f.delay_ns // 1_000_000 for f in out] == [80, 60, 40, 20, 0] * 2


def test_bunch_counter():
    imp_r = Impairer(Impairments(bunch_prob=1.0, bunch_frames=3))
    for k in range(6):
        imp_r.fate(T0 + k * FRAME_NS)
    assert imp_r.bunched == 6


def test_gap_shifts_timestamps_cumulatively():
    out = fates(Impairments(gap_prob=1.0, gap_ms=40), 5)
    assert [f.ts_shift_ms for f in out] == [40, 80, 120, 160, 200]
    assert all(f.send and f.delay_ns == 0 for f in out)


def test_random_gaps_are_counted_and_monotonic():
    imp_r = Impairer(Impairments(gap_prob=0.1, gap_ms=30, seed=5))
    shifts = [imp_r.fate(T0 + k * FRAME_NS).ts_shift_ms for k in range(1000)]
    assert shifts == sorted(shifts)
    assert shifts[-1] == 30 * imp_r.gaps
    assert 50 <= imp_r.gaps <= 150


def test_no_frame_is_due_before_its_grid_time_with_loss_and_bunching():
    out = fates(Impairments(loss_prob=0.3, bunch_prob=0.2, bunch_frames=5, seed=2), 3000)
    assert min(f.delay_ns for f in out if f.send) >= 0


# ------------------------------------------------------- through the core

_rng = random.Random(99)
IDENT = tw.StreamIdentity(make_sid("AC", _rng), make_sid("CA", _rng), make_sid("MZ", _rng))


def run_core(imp: Impairments, script, ticks_limit: int = 10_000):
    """Drive a core at exactly its deadlines; return (core, [(t_ns, msg dict)])."""
    core = CallerCore(CallerConfig(IDENT, impairments=imp), script)
    sent = [(T0, json.loads(m)) for m in core.begin(T0)]
    for _ in range(ticks_limit):
        d = core.next_deadline_ns()
        if d is None:
            break
        sent += [(d, json.loads(m)) for m in core.advance(d)]
    assert core.finished
    return core, sent


def media_of(sent):
    return [(t, m) for t, m in sent if m["event"] == "media"]


def assert_sequence_contiguous(sent):
    seqs = [int(m["sequenceNumber"]) for _, m in sent[1:]]
    assert [m["sequenceNumber"] for _, m in sent[1:]] == [str(s) for s in seqs]
    assert seqs == list(range(1, len(seqs) + 1))


def test_loss_through_core_keeps_counters_contiguous_and_timestamps_skip():
    imp = Impairments(loss_prob=0.2, seed=4)
    n_ticks = 100
    core, sent = run_core(imp, [Pause(n_ticks * FRAME_MS)])
    # independent oracle: the same seed decides the same fates, frame k at grid k
    oracle = fates(imp, n_ticks)
    kept = [k for k, f in enumerate(oracle) if f.send]
    assert 0 < len(kept) < n_ticks
    media = media_of(sent)
    assert [m["media"]["timestamp"] for _, m in media] == [str(k * FRAME_MS) for k in kept]
    assert [m["media"]["chunk"] for _, m in media] == [str(i) for i in range(1, len(kept) + 1)]
    assert_sequence_contiguous(sent)
    assert sent[-1][1]["event"] == "stop"
    assert core.impairer.lost == n_ticks - len(kept)
    assert core.summary()["frames_lost"] == n_ticks - len(kept)
    assert core.summary()["frames_sent"] == len(kept)
    assert list(core.media_sent_grid) == kept
    # Twilio still plays the app's audio on every tick, lost frames or not
    assert len(core.heard) == (n_ticks + 1) * 160


def test_gaps_through_core_shift_timestamps_only():
    imp = Impairments(gap_prob=0.1, gap_ms=40, seed=8)
    core, sent = run_core(imp, [Pause(60 * FRAME_MS)])
    oracle = fates(imp, 60)
    media = media_of(sent)
    assert len(media) == 60
    assert [m["media"]["timestamp"] for _, m in media] == [str(k * 20 + f.ts_shift_ms) for k, f in enumerate(oracle)]
    assert oracle[-1].ts_shift_ms > 0
    assert [m["media"]["chunk"] for _, m in media] == [str(i) for i in range(1, 61)]
    assert [t for t, _ in media] == [T0 + k * FRAME_NS for k in range(60)]  # sent on time
    assert_sequence_contiguous(sent)


def test_bunching_through_core_releases_several_frames_at_one_time():
    core = CallerCore(CallerConfig(IDENT, impairments=Impairments(bunch_prob=1.0, bunch_frames=5)), [Pause(10_000)])
    core.begin(T0)
    for k in range(4):
        assert core.advance(T0 + k * FRAME_NS) == []  # held
        assert core.next_deadline_ns() == T0 + (k + 1) * FRAME_NS
    burst = [json.loads(m) for m in core.advance(T0 + 4 * FRAME_NS)]
    assert [m["media"]["timestamp"] for m in burst] == ["0", "20", "40", "60", "80"]
    assert [m["media"]["chunk"] for m in burst] == ["1", "2", "3", "4", "5"]
    assert [m["sequenceNumber"] for m in burst] == ["2", "3", "4", "5", "6"]
    assert list(core.media_sent_ns) == [T0 + 4 * FRAME_NS] * 5


def test_jitter_through_core_delays_without_reordering():
    imp = Impairments(jitter_ms=35, seed=12)
    core, sent = run_core(imp, [Pause(200 * FRAME_MS)])
    media = media_of(sent)
    assert [m["media"]["timestamp"] for _, m in media] == [str(k * 20) for k in range(200)]
    times = [t for t, _ in media]
    assert times == sorted(times)
    oracle = fates(imp, 200)
    assert times == [T0 + k * FRAME_NS + f.delay_ns for k, f in enumerate(oracle)]
    assert any(f.delay_ns > FRAME_NS for f in oracle)  # some frames later than the next grid point
    assert_sequence_contiguous(sent)
    assert sent[-1][1]["event"] == "stop"


def test_hang_up_flushes_held_frames_before_stop():
    core = CallerCore(CallerConfig(IDENT, impairments=Impairments(bunch_prob=1.0, bunch_frames=10)), [Pause(10_000)])
    core.begin(T0)
    for k in range(3):
        assert core.advance(T0 + k * FRAME_NS) == []
    out = [json.loads(m) for m in core.hang_up(T0 + 2 * FRAME_NS + 1)]
    assert [m["event"] for m in out] == ["media", "media", "media", "stop"]
    assert [m["media"]["timestamp"] for m in out[:3]] == ["0", "20", "40"]
    assert [m["sequenceNumber"] for m in out] == ["2", "3", "4", "5"]
    assert core.finished and core.end_reason == "aborted"
    assert core.next_deadline_ns() is None


def test_lost_speech_frames_keep_their_timeline_marks():
    core, sent = run_core(Impairments(loss_prob=1.0), [Say("caller_stop")])
    assert media_of(sent) == []
    lost = [e for e in core.timeline.of(CallerSpeech) if e.lost]
    assert [type(e) for e in lost] == [UtteranceStart, SpeechStart, SpeechEnd, UtteranceEnd]
    assert all(e.fixture == "caller_stop" for e in lost)
