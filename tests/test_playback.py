"""Twilio's outbound playback buffer, emulated (protocols.md 1.3), driven tick by tick.

Timing convention (simulator/caller/playback.py): tick *k* plays one 160-byte frame,
which finishes at tick *k+1*; a mark is echoed at the start of the tick after
the tick that played the last byte queued before it — never earlier — or at
once (``add_mark`` returns True) when nothing is queued or playing.
"""

from __future__ import annotations

import math

import pytest
from callsim.simulator.audio.codec import FRAME_BYTES, SILENCE_BYTE
from callsim.simulator.caller.playback import Frame, Playback
from hypothesis import given, settings
from hypothesis import strategies as st

SILENCE = bytes([SILENCE_BYTE]) * FRAME_BYTES


def pattern(n: int, start: int = 0) -> bytes:
    """n distinct-looking bytes (never 0xFF) so misplaced bytes show up."""
    return bytes((start + i) % 251 for i in range(n))


def test_idle_tick_plays_line_silence():
    pb = Playback()
    for _ in range(3):
        f = pb.tick()
        assert f == Frame(SILENCE, 0, ())
    assert pb.bytes_played == 0 and pb.partial_frames == 0 and not pb.busy


def test_audio_plays_160_bytes_per_tick_in_arrival_order():
    pb = Playback()
    a, b = pattern(200, 0), pattern(300, 100)
    pb.add_audio(a)
    pb.add_audio(b)
    stream = a + b
    assert pb.queued_bytes == 500 and pb.bytes_received == 500 and pb.busy

    f1, f2, f3, f4, f5 = (pb.tick() for _ in range(5))
    assert (f1.audio, f1.played_bytes) == (stream[0:160], 160)
    assert (f2.audio, f2.played_bytes) == (stream[160:320], 160)  # crosses the a|b boundary
    assert (f3.audio, f3.played_bytes) == (stream[320:480], 160)
    assert (f4.audio, f4.played_bytes) == (stream[480:500] + bytes([0xFF]) * 140, 20)  # partial, padded
    assert (f5.audio, f5.played_bytes) == (SILENCE, 0)
    assert all(len(f.audio) == FRAME_BYTES for f in (f1, f2, f3, f4, f5))
    assert pb.bytes_played == 500 and pb.queued_bytes == 0
    assert pb.partial_frames == 1
    assert not pb.busy


def test_queued_bytes_counts_down_per_tick():
    pb = Playback()
    pb.add_audio(pattern(400))
    seen = []
    for _ in range(4):
        pb.tick()
        seen.append((pb.queued_bytes, pb.busy))
    assert seen == [(240, True), (80, True), (0, True), (0, False)]


def test_every_partial_frame_is_counted():
    pb = Playback()
    for n in (100, 1, 159):
        pb.add_audio(pattern(n))
        f = pb.tick()
        assert f.played_bytes == n
        assert f.audio == pattern(n) + bytes([0xFF]) * (160 - n)
    pb.add_audio(pattern(160))
    assert pb.tick().played_bytes == 160
    assert pb.partial_frames == 3


def test_mark_after_480_bytes_is_echoed_on_the_4th_tick():
    pb = Playback()
    pb.add_audio(pattern(480))
    assert pb.add_mark("m") is False
    echoes = [pb.tick().echoed for _ in range(5)]
    assert echoes == [(), (), (), ("m",), ()]


@pytest.mark.parametrize("n", [1, 80, 159, 160, 161, 320, 479, 480, 481, 1600])
def test_mark_is_echoed_the_tick_after_its_last_byte_played(n):
    pb = Playback()
    pb.add_audio(pattern(n))
    assert pb.add_mark("m") is False
    last_tick_with_audio = math.ceil(n / FRAME_BYTES)  # 1-based tick that plays byte n-1
    echo_tick = None
    for t in range(1, last_tick_with_audio + 3):
        f = pb.tick()
        if f.echoed:
            assert f.echoed == ("m",)
            assert echo_tick is None, "mark echoed twice"
            echo_tick = t
        if t <= last_tick_with_audio:
            assert f.played_bytes > 0
    assert echo_tick == last_tick_with_audio + 1
    assert pb.pending_marks == 0


def test_mark_with_nothing_queued_is_immediate():
    pb = Playback()
    assert pb.add_mark("now") is True
    assert pb.pending_marks == 0
    assert pb.tick().echoed == ()  # and never echoed a second time


def test_mark_while_last_frame_still_plays_waits_one_tick():
    pb = Playback()
    pb.add_audio(pattern(160))
    pb.tick()  # plays all 160 bytes; they finish at the next tick
    assert pb.queued_bytes == 0 and pb.busy
    assert pb.add_mark("tail") is False
    assert pb.tick().echoed == ("tail",)
    assert not pb.busy
    assert pb.add_mark("later") is True  # idle again: immediate


def test_marks_are_echoed_in_queue_order():
    pb = Playback()
    pb.add_audio(pattern(100))
    pb.add_mark("A")
    pb.add_audio(pattern(100))
    pb.add_mark("B")
    pb.add_mark("C")
    pb.add_audio(pattern(50))
    pb.add_mark("D")
    assert pb.pending_marks == 4
    f1, f2, f3, f4 = (pb.tick() for _ in range(4))
    # tick 1 plays bytes 0..159 (A's audio ends inside it), tick 2 plays 160..249.
    assert (f1.echoed, f1.played_bytes) == ((), 160)
    assert (f2.echoed, f2.played_bytes) == (("A",), 90)
    assert (f3.echoed, f3.played_bytes) == (("B", "C", "D"), 0)
    assert f4.echoed == ()
    assert pb.pending_marks == 0


def test_marks_back_to_back_after_audio_echo_together():
    pb = Playback()
    pb.add_audio(pattern(320))
    for name in ("x", "y", "z"):
        pb.add_mark(name)
    assert [pb.tick().echoed for _ in range(3)] == [(), (), ("x", "y", "z")]


def test_clear_drops_queued_audio_and_returns_pending_marks():
    pb = Playback()
    pb.add_audio(pattern(800))
    pb.add_mark("A")
    pb.add_audio(pattern(160, 7))
    pb.add_mark("B")
    first = pb.tick()
    assert first.played_bytes == 160
    dropped, names = pb.clear()
    assert dropped == 800  # 640 of the first chunk + 160 of the second
    assert names == ("A", "B")
    assert pb.queued_bytes == 0 and pb.pending_marks == 0
    assert pb.bytes_cleared == 800 and pb.bytes_played == 160
    # Nothing left to play or echo: the marks went out with the clear, not again.
    f = pb.tick()
    assert f == Frame(SILENCE, 0, ())
    assert pb.tick() == Frame(SILENCE, 0, ())


def test_clear_returns_a_mark_already_passed_inside_the_playing_frame_once():
    pb = Playback()
    pb.add_audio(pattern(100))
    pb.add_mark("inside")
    pb.add_audio(pattern(300))
    pb.add_mark("behind")
    pb.tick()  # plays 160: 'inside' has been reached within this frame
    dropped, names = pb.clear()
    assert (dropped, names) == (240, ("inside", "behind"))
    assert pb.tick().echoed == ()


def test_clear_when_idle_is_a_no_op():
    pb = Playback()
    assert pb.clear() == (0, ())
    assert pb.bytes_cleared == 0


def test_audio_after_clear_plays_normally_and_marks_behind_it_wait():
    pb = Playback()
    pb.add_audio(pattern(1000))
    pb.tick()
    pb.clear()
    fresh = pattern(200, 33)
    pb.add_audio(fresh)
    assert pb.add_mark("after") is False
    f1, f2, f3 = pb.tick(), pb.tick(), pb.tick()
    assert (f1.audio, f1.played_bytes, f1.echoed) == (fresh[:160], 160, ())
    assert (f2.audio, f2.played_bytes, f2.echoed) == (fresh[160:] + bytes([0xFF]) * 120, 40, ())
    assert f3.echoed == ("after",)
    assert pb.bytes_played == 160 + 200


def test_mark_right_after_clear_waits_for_the_frame_on_the_wire():
    # The frame that was playing at the clear is not recalled; a mark sent now
    # follows it and comes back when it finishes (next tick), not at once.
    pb = Playback()
    pb.add_audio(pattern(1000))
    pb.tick()
    pb.clear()
    assert pb.add_mark("m") is False
    assert pb.tick().echoed == ("m",)


def test_max_queued_bytes_bounds_memory_and_counts_overflow():
    pb = Playback(max_queued_bytes=400)
    assert pb.add_audio(pattern(300)) == 0
    assert pb.add_audio(pattern(300, 50)) == 200
    assert pb.queued_bytes == 400 and pb.bytes_dropped == 200 and pb.bytes_received == 600
    assert pb.add_audio(pattern(10)) == 10  # full
    f = pb.tick()
    assert f.audio == pattern(160)
    assert pb.add_audio(pattern(200)) == 40  # 160 bytes of room again
    assert pb.queued_bytes == 400 and pb.bytes_dropped == 250
    # what was kept plays in order: rest of chunk 1, the first 100 of chunk 2, then 160 new bytes
    played = b"".join(pb.tick().audio[:160] for _ in range(3))
    assert played[:240] == pattern(300)[160:] + pattern(300, 50)[:100]
    assert played[240:400] == pattern(200)[:160]


def test_empty_audio_is_ignored():
    pb = Playback()
    assert pb.add_audio(b"") == 0
    assert not pb.busy
    assert pb.add_mark("m") is True


# --------------------------------------------------------- model-based check

ops = st.lists(
    st.one_of(
        st.tuples(st.just("audio"), st.integers(min_value=0, max_value=500)),
        st.tuples(st.just("mark"), st.none()),
        st.tuples(st.just("tick"), st.integers(min_value=1, max_value=4)),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(ops)
def test_playback_matches_a_simple_model(program):
    """Against an independent model: bytes play in order at 160 per tick, every
    mark comes back exactly once, in order, at the first tick after the tick
    that played its last preceding byte (or at once when idle, or at a clear)."""
    pb = Playback()
    pending = bytearray()  # model: unplayed bytes, in order
    model_marks: list[tuple[str, int]] = []  # (name, bytes that must play before it), in order
    played_total = 0
    playing = False  # the previous tick played app audio
    echoed: list[str] = []
    sent: list[str] = []
    counter = 0
    for op, arg in program:
        if op == "audio":
            data = pattern(arg, counter)
            counter += arg
            pb.add_audio(data)
            pending += data
        elif op == "mark":
            name = f"m{len(sent)}"
            sent.append(name)
            pos = played_total + len(pending)
            immediate = pb.add_mark(name)
            assert immediate == (not pending and not playing)
            if immediate:
                echoed.append(name)
            else:
                model_marks.append((name, pos))
        elif op == "clear":
            dropped, names = pb.clear()
            assert dropped == len(pending)
            assert names == tuple(n for n, _ in model_marks)
            echoed.extend(names)
            model_marks.clear()
            pending.clear()
        else:
            for _ in range(arg):
                due = tuple(n for n, pos in model_marks if pos <= played_total)
                model_marks = model_marks[len(due):]
                f = pb.tick()
                assert f.echoed == due
                echoed.extend(due)
                n = min(FRAME_BYTES, len(pending))
                assert f.played_bytes == n
                assert f.audio == bytes(pending[:n]) + bytes([0xFF]) * (FRAME_BYTES - n)
                del pending[:n]
                played_total += n
                playing = n > 0
        assert pb.queued_bytes == len(pending)
        assert pb.pending_marks == len(model_marks)
    # every mark echoed exactly once, in the order sent, once everything has drained
    for _ in range(len(pending) // FRAME_BYTES + 3):
        echoed.extend(pb.tick().echoed)
    assert echoed == sent
