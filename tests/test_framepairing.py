"""callsim.simulator.measure.framepairing on synthetic calls: frames pair by content, so a dropped frame
is one lost frame — never +20 ms of latency on every later frame."""

from __future__ import annotations

import time
import zlib

import numpy as np
import pytest
from callsim.simulator.measure.framepairing import pair_frames

MS = 1_000_000
SILENCE = zlib.crc32(b"\xff" * 160)
LAT = 300_000  # 0.3 ms: the true latency through the fake bridge


def speech(n: int, seed: int = 1) -> np.ndarray:
    """CRCs of ``n`` distinct (speech-like) frames."""
    rng = np.random.default_rng(seed)
    return np.array([zlib.crc32(rng.bytes(160)) for _ in range(n)], dtype=np.int64)


def call(crcs: np.ndarray, t0: int = 10**12) -> tuple[np.ndarray, np.ndarray]:
    """Frames sent every 20 ms from t0, with 0-0.4 ms of pacing jitter."""
    rng = np.random.default_rng(7)
    sent = t0 + np.arange(len(crcs), dtype=np.int64) * 20 * MS + rng.integers(0, 400_000, len(crcs))
    return sent, crcs


def typical(n_sil: int = 40) -> np.ndarray:
    """Line silence, an utterance, silence, the utterance again, silence."""
    u = speech(60)
    sil = np.full(n_sil, SILENCE, dtype=np.int64)
    return np.concatenate([sil, u, sil, u, sil])


def forward(sent: np.ndarray, crc: np.ndarray, keep: np.ndarray, lat: int = LAT,
            jitter: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """What the mock receives when the bridge forwards the frames ``keep`` (indices, in order)."""
    rng = np.random.default_rng(3)
    t = sent[keep] + lat + (rng.integers(0, jitter, len(keep)) if jitter else 0)
    return np.maximum.accumulate(t), crc[keep]


def test_first_frame_dropped_is_one_lost_frame_not_20ms_on_every_frame():
    sent, crc = call(typical())
    n = len(sent)
    r_ns, r_crc = forward(sent, crc, np.arange(1, n))
    p = pair_frames(sent, crc, r_ns, r_crc)
    assert p.paired == n - 1 and list(p.sent) == list(range(1, n)) and list(p.recv) == list(range(n - 1))
    assert np.all(p.latency_ns == LAT)
    assert (p.lost_start, p.lost_start_ms, p.lost_later, p.duplicated, p.unpaired) == (1, 20, 0, 0, 0)
    # the old index pairing would have said ~20 ms on every frame
    assert np.median(r_ns - sent[:-1]) > 19 * MS


def test_frames_dropped_until_the_socket_opened_with_bigger_latency_and_jitter():
    sent, crc = call(typical())
    n = len(sent)
    r_ns, r_crc = forward(sent, crc, np.arange(7, n), lat=35 * MS, jitter=6 * MS)
    p = pair_frames(sent, crc, r_ns, r_crc)
    assert p.lost_start == 7 and p.lost_later == 0 and p.paired == n - 7
    assert list(p.sent) == list(range(7, n))
    assert 35 * MS <= p.latency_ns.min() and p.latency_ns.max() < 41 * MS


@pytest.mark.parametrize("where", ["silence", "speech"])
def test_a_frame_dropped_in_the_middle(where):
    sent, crc = call(typical())
    n = len(sent)
    lost = 120 if where == "silence" else 150  # inside the middle silence run / the second utterance
    assert (crc[lost] == SILENCE) == (where == "silence")
    keep = np.delete(np.arange(n), lost)
    r_ns, r_crc = forward(sent, crc, keep)
    p = pair_frames(sent, crc, r_ns, r_crc)
    assert list(p.sent) == list(keep) and np.all(p.latency_ns == LAT)
    assert (p.lost_start, p.lost_later, p.lost_end, p.duplicated, p.unpaired) == (0, 1, 0, 0, 0)
    assert np.flatnonzero(p.lost_mask()).tolist() == [lost]


def test_the_hangup_tail_is_lost_at_end():
    sent, crc = call(typical())
    n = len(sent)
    r_ns, r_crc = forward(sent, crc, np.arange(n - 3))
    p = pair_frames(sent, crc, r_ns, r_crc)
    assert (p.lost_start, p.lost_later, p.lost_end) == (0, 3, 3) and np.all(p.latency_ns == LAT)


@pytest.mark.parametrize("dup", [30, 70])  # a silence frame, a speech frame
def test_a_duplicated_frame(dup):
    sent, crc = call(typical())
    n = len(sent)
    keep = np.insert(np.arange(n), dup + 1, dup)  # frame `dup` forwarded twice, back to back
    r_ns, r_crc = forward(sent, crc, keep)
    r_ns[dup + 1] += 100_000  # the copy comes right after the original
    r_ns = np.maximum.accumulate(r_ns)
    p = pair_frames(sent, crc, r_ns, r_crc)
    assert list(p.sent) == list(range(n)) and p.paired == n
    assert (p.lost_start, p.lost_later, p.duplicated, p.unpaired) == (0, 0, 1, 0)
    assert p.latency_ns.max() <= LAT + 100_000


@pytest.mark.parametrize("per_append", [2, 3, 5])
def test_rechunked_appends_pair_every_frame(per_append):
    """A bridge batching frames: every block of an append arrives with it (after its last frame)."""
    sent, crc = call(typical())
    n = len(sent) - len(sent) % per_append
    sent, crc = sent[:n], crc[:n]
    last_of_batch = sent[per_append - 1::per_append]
    r_ns = np.repeat(last_of_batch + LAT, per_append)
    p = pair_frames(sent, crc, r_ns, crc)
    assert p.paired == n and list(p.sent) == list(range(n)) and (p.lost_start, p.lost_later) == (0, 0)
    # the batching itself is real added latency: up to (per_append - 1) frames of waiting
    assert p.latency_ns.min() >= LAT and p.latency_ns.max() <= LAT + (per_append - 1) * 20.5 * MS


def test_all_silence_first_frame_dropped():
    sent, crc = call(np.full(500, SILENCE, dtype=np.int64))
    r_ns, r_crc = forward(sent, crc, np.arange(1, 500))
    p = pair_frames(sent, crc, r_ns, r_crc)
    assert p.anchors == 0 and p.paired == 499 and list(p.sent) == list(range(1, 500))
    assert p.lost_start == 1 and p.lost_later == 0 and np.all(p.latency_ns == LAT)


def test_all_silence_nothing_lost_pairs_in_order_even_with_jitter_over_a_frame():
    sent, crc = call(np.full(300, SILENCE, dtype=np.int64))
    r_ns, r_crc = forward(sent, crc, np.arange(300), lat=5 * MS, jitter=30 * MS)
    p = pair_frames(sent, crc, r_ns, r_crc)
    assert list(p.sent) == list(range(300)) and (p.lost_start, p.lost_later, p.duplicated) == (0, 0, 0)


def test_an_unrelated_stream_pairs_nothing():
    sent, crc = call(speech(400, seed=1))
    other_ns, other_crc = call(speech(400, seed=2), t0=10**12 + 5 * MS)
    p = pair_frames(sent, crc, other_ns, other_crc)
    assert p.paired == 0 and p.lost_start == 400 and p.lost_later == 0 and p.unpaired == 400
    assert p.duplicated == 0 and len(p.latency_ns) == 0


def test_empty_inputs():
    p = pair_frames([], [], [], [])
    assert p.paired == 0 and p.lost_start == 0 and p.unpaired == 0
    sent, crc = call(speech(10))
    assert pair_frames(sent, crc, [], []).lost_start == 10


def test_nothing_pairs_backwards_in_time():
    """A block cannot carry a frame sent after it arrived (one clock for all processes)."""
    sent, crc = call(speech(50))
    p = pair_frames(sent, crc, sent - 1 * MS, crc)
    assert p.paired == 0


def test_tens_of_thousands_of_frames_pair_in_well_under_a_second():
    """A long call of silence with the tail of every utterance lost: few anchors, most pairs by time."""
    u = speech(100)
    block = np.concatenate([np.full(150, SILENCE, dtype=np.int64), u])
    crcs = np.tile(block, 120)  # 30 000 frames, the same utterance 120 times
    sent, crc = call(crcs)
    n = len(sent)
    rng = np.random.default_rng(5)
    lost = np.sort(rng.choice(np.arange(1, n), 300, replace=False))
    keep = np.setdiff1d(np.arange(1, n), lost)
    r_ns, r_crc = forward(sent, crc, keep, lat=2 * MS, jitter=3 * MS)
    t = time.perf_counter()
    p = pair_frames(sent, crc, r_ns, r_crc)
    took = time.perf_counter() - t
    assert p.lost_start == 1 and p.paired == len(keep) and p.lost_later == len(lost)
    assert np.array_equal(p.sent, keep) and p.latency_ns.max() < 5 * MS
    assert took < 1.0, took


def test_a_lossless_gap_pairs_in_order_whatever_the_jitter():
    """One silence frame lost early makes every silence frame ambiguous by count; the later
    silence run lost nothing, so it pairs in order even with jitter over a frame."""
    sent, crc = call(typical())
    n = len(sent)
    keep = np.delete(np.arange(n), 10)
    r_ns, r_crc = forward(sent, crc, keep)
    rng = np.random.default_rng(11)
    mid = (keep >= 100) & (keep < 140)  # the middle silence run, between the two utterances
    r_ns[mid] += rng.integers(0, 30 * MS, int(mid.sum()))
    r_ns = np.maximum.accumulate(r_ns)
    p = pair_frames(sent, crc, r_ns, r_crc)
    assert list(p.sent) == list(keep) and (p.lost_start, p.lost_later, p.duplicated) == (0, 1, 0)


def test_pairs_never_cross():
    """Frames are never reordered: when time alone would pair two blocks crosswise, one is dropped."""
    a, b, x, y = (zlib.crc32(bytes([v]) * 160) for v in (1, 2, 3, 4))
    crc = np.array([x, a, b, a, b, y], dtype=np.int64)
    sent = 10**12 + np.arange(6, dtype=np.int64) * 20 * MS
    # X, then frame 1 (A) held up past frame 3's sending, then frame 2 (B), then Y
    r_ns = np.array([sent[0] + LAT, sent[3] + 5 * MS, sent[3] + 6 * MS, sent[5] + LAT])
    r_crc = np.array([x, a, b, y], dtype=np.int64)
    p = pair_frames(sent, crc, r_ns, r_crc)
    assert np.all(np.diff(p.sent) > 0) and np.all(np.diff(p.recv) > 0)
    assert p.paired == 3 and p.unpaired == 1 and p.latency_ns.min() >= 0
