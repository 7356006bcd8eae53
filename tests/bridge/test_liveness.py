"""callsim.bridge.liveness: when a media stream's far end is gone, on synthetic times."""

from __future__ import annotations

import pytest
from callsim.bridge.liveness import Liveness


def live(**kw) -> Liveness:
    return Liveness(100.0, **{"start_timeout": 5.0, "media_timeout": 4.0, "send_timeout": 2.0, **kw})


def run(lv: Liveness, until: float, frames=lambda t: 0, pending=lambda t: 0, done=lambda t: 0):
    """Check at each time the watchdog would wake, up to ``until``; (time, Gone) or (until, None)."""
    t = lv.opened
    while t <= until:
        t = lv.next_check(t)
        gone = lv.check(t, frames_in=frames(t), sends_pending=pending(t), sends_done=done(t))
        if gone is not None:
            return t, gone
    return until, None


def test_no_start_within_the_timeout_closes_the_stream_at_its_deadline():
    lv = live()
    assert lv.next_check(100.0) == 100.5  # polled: a start may come any time
    assert lv.next_check(104.8) == 105.0
    assert lv.check(104.9, frames_in=0, sends_pending=0, sends_done=0) is None
    gone = lv.check(105.0, frames_in=0, sends_pending=0, sends_done=0)
    assert gone is not None and gone.kind == "stream_start_timeout" and gone.close_code == 1008
    assert "no valid start within 5 s" in gone.reason


def test_a_started_call_with_media_flowing_lives_on():
    lv = live()
    lv.started(100.1)
    t, gone = run(lv, 200.0, frames=lambda t: int((t - 100) * 50))  # a frame every 20 ms
    assert gone is None


@pytest.mark.parametrize("stop", [101.0, 103.3, 150.05])
def test_media_silence_ends_the_call_between_1_and_1_5_timeouts_after_it_began(stop):
    lv = live()
    lv.started(100.1)
    t, gone = run(lv, 300.0, frames=lambda t: int((min(t, stop) - 100) * 50))
    assert gone is not None and gone.kind == "media_timeout" and gone.status == "media_timeout"
    assert 4.0 <= t - stop < 4.0 * 1.5
    assert "no media from Twilio" in gone.reason


def test_media_before_start_does_not_count_and_silence_counts_from_the_start():
    lv = live()
    lv.started(100.5, frames_in=7)
    t, gone = run(lv, 300.0, frames=lambda t: 7)
    assert gone is not None and gone.kind == "media_timeout" and 4.0 <= t - 100.5 < 6.0


@pytest.mark.parametrize("block", [100.6, 120.0])
def test_a_send_blocked_past_its_bound_ends_the_call(block):
    lv = live()
    lv.started(100.1)
    t, gone = run(lv, 300.0, frames=lambda t: int((t - 100) * 50),  # the peer still sends, never reads
                  pending=lambda t: 1, done=lambda t: int((min(t, block) - 100) * 100))
    assert gone is not None and gone.kind == "send_timeout" and gone.status == "send_timeout"
    assert 2.0 <= t - block < 2.0 * 1.5


def test_sends_that_finish_or_none_pending_are_not_a_stall():
    lv = live()
    lv.started(100.1)
    t, gone = run(lv, 200.0, frames=lambda t: int((t - 100) * 50), pending=lambda t: 1,
                  done=lambda t: int((t - 100) * 100))
    assert gone is None
    lv = live()
    lv.started(100.1)
    t, gone = run(lv, 200.0, frames=lambda t: int((t - 100) * 50), pending=lambda t: 0, done=lambda t: 5)
    assert gone is None


def test_timeouts_must_be_positive():
    with pytest.raises(ValueError):
        live(media_timeout=0)
