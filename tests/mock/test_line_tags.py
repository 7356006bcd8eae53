"""The mock reads the caller's line tags from μ-law appends, and its VAD hears them as silence.

Sans-IO first (``LineTagLog``, then a ``MockSession`` on the fake clock fed a
real fixture call with tagged and untagged idle line), then over a real
WebSocket: the rx times reported are the appends' arrival times on the mock's
clock, and the VAD turns match an untagged call's.
"""

from __future__ import annotations

import base64
import json
import time
import timeit
from typing import Any

import trio
from callsim.simulator.audio.codec import FRAME_BYTES, SILENCE_FRAME
from callsim.simulator.audio.linetag import tag_frame
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime
from callsim.simulator.mock.line_tags import MAX_RX_ENTRIES, MAX_TAGS, LineTagLog
from callsim.simulator.mock.server import running_mock

from .conftest import CHUNK_MS, MS, T0
from .test_server import PCMU_VAD, config, connect
from .session_helpers import PCM, configure

TAG = 0x5EED0001  # a call tag: random per call in the caller (CallerCore.line_tag)
HEX = f"{TAG:08x}"
OTHER = 0x5EED0002


def _speech(name: str) -> bytes:
    """A fixture as the caller sends it: whole 160-byte frames (the last one padded with line silence)."""
    audio = default_bank().get(name).ulaw
    return audio + b"\xff" * (-len(audio) % FRAME_BYTES)


class Line:
    """Builds a call's outgoing audio frame by frame, idle frames tagged or not (as the caller does)."""

    def __init__(self, tagged: bool, tag: int = TAG) -> None:
        self.tagged, self.tag = tagged, tag
        self.seq = 0
        self.frames: list[bytes] = []
        self.tag_frames: list[int] = []  # index of each tag frame in ``frames``

    def idle(self, ms: int) -> Line:
        for _ in range(ms // CHUNK_MS):
            if self.tagged:
                self.tag_frames.append(len(self.frames))
                self.frames.append(tag_frame(self.tag, self.seq))
            else:
                self.frames.append(SILENCE_FRAME)
            self.seq += 1
        return self

    def say(self, name: str) -> Line:
        audio = _speech(name)
        self.frames += [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
        return self

    def audio(self) -> bytes:
        return b"".join(self.frames)


def _call(tagged: bool) -> Line:
    return (Line(tagged).idle(1000).say("caller_greeting").idle(1500)
            .say("caller_weather_question").idle(1200).say("caller_stop").idle(1500))


# ====================================================================== LineTagLog


def test_single_frame_appends_are_recorded_and_heard_as_silence() -> None:
    log = LineTagLog()
    assert log.observe(tag_frame(TAG, 7), 100) == SILENCE_FRAME
    assert log.observe(tag_frame(TAG, 8), 120) == SILENCE_FRAME
    speech = _speech("caller_greeting")[1600:1760]
    assert log.observe(speech, 140) is speech  # untouched, not copied
    assert log.observe(SILENCE_FRAME, 160) is SILENCE_FRAME
    assert log.summary() == {HEX: {"frames": 2, "first_rx_ns": 100, "last_rx_ns": 120}}
    assert log.rx() == {HEX: [[7, 100], [8, 120]]}


def test_batched_appends_are_scanned_frame_by_frame_from_their_start() -> None:
    log = LineTagLog()
    speech = _speech("caller_greeting")[1600:1920]  # two speech frames
    data = tag_frame(TAG, 1) + speech[:160] + tag_frame(OTHER, 5) + tag_frame(TAG, 2) + speech[160:] + b"\xff" * 50
    heard = log.observe(data, 1000)
    assert heard == SILENCE_FRAME + speech[:160] + SILENCE_FRAME * 2 + speech[160:] + b"\xff" * 50
    assert log.rx() == {HEX: [[1, 1000], [2, 1000]], f"{OTHER:08x}": [[5, 1000]]}
    assert log.summary()[HEX] == {"frames": 2, "first_rx_ns": 1000, "last_rx_ns": 1000}
    # blocks cut at another offset carry no readable tag: nothing recorded, audio untouched
    shifted = b"\xff" * 80 + tag_frame(TAG, 3) + b"\xff" * 80
    assert log.observe(shifted, 2000) is shifted
    assert log.observe(tag_frame(TAG, 4)[:100], 3000) == tag_frame(TAG, 4)[:100]
    assert log.summary()[HEX]["frames"] == 2


def test_the_log_is_bounded() -> None:
    log = LineTagLog()
    for k in range(MAX_RX_ENTRIES + 500):
        log.observe(tag_frame(TAG, k), k)
    rx = log.rx()[HEX]
    assert len(rx) == MAX_RX_ENTRIES and rx[0] == [500, 500] and rx[-1][0] == MAX_RX_ENTRIES + 499
    assert log.summary()[HEX] == {"frames": MAX_RX_ENTRIES + 500, "first_rx_ns": 0,
                                  "last_rx_ns": MAX_RX_ENTRIES + 499}
    many = LineTagLog()
    for t in range(MAX_TAGS + 3):
        many.observe(tag_frame(t, 0), t)
    assert len(many.summary()) == MAX_TAGS and many.overflow == 3
    assert many.as_snapshot(True)["line_tags_overflow"] == 3


def test_rejecting_an_ordinary_append_is_cheap() -> None:
    """Measured locally ≈ 0.15 µs per untagged 160-byte append; the bound is generous for CI."""
    log = LineTagLog()
    speech = _speech("caller_greeting")[1600:1760]
    per = min(timeit.repeat(lambda: log.observe(speech, 0), number=5000, repeat=5)) / 5000
    assert per < 3e-6, per


# ====================================================================== MockSession (fake clock)


def _run_call(drive, tagged: bool, *, chunk_ms: int = CHUNK_MS, **cfg: Any):
    d = drive(Behaviour(think=ThinkTime("fixed", 200), seed=5))
    configure(d, **cfg)
    line = _call(tagged)
    d.append(line.audio(), chunk_ms=chunk_ms)
    d.settle()
    return d, line


def _vad_view(d) -> dict[str, Any]:
    snap = d.s.snapshot()
    return {"vad_decisions": snap["vad_decisions"], "turns": snap["turns"],
            "events": [(e["type"], t) for e, t in zip(d.events, d.times)]}


def test_tagged_idle_line_changes_no_vad_decision_and_no_turn(drive) -> None:
    plain, _ = _run_call(drive, tagged=False)
    tagged, line = _run_call(drive, tagged=True)
    want = _vad_view(plain)
    assert len(want["turns"]) == 3 and [t["heard"] for t in want["turns"]] == \
        ["caller_greeting", "caller_weather_question", "caller_stop"]
    assert _vad_view(tagged) == want  # decisions, turns (timing, what was heard, its score), every event and time

    snap = tagged.s.snapshot()
    n = len(line.tag_frames)
    # appends are at T0, T0 + 20 ms, ...: frame k arrived at T0 + 20k ms
    rx = [[seq, T0 + k * CHUNK_MS * MS] for seq, k in enumerate(line.tag_frames)]
    assert snap["line_tags"] == {HEX: {"frames": n, "first_rx_ns": rx[0][1], "last_rx_ns": rx[-1][1]}}
    assert snap["line_tag_rx"] == {HEX: rx}
    assert tagged.s.snapshot(full=False)["line_tags"] == snap["line_tags"]
    assert "line_tag_rx" not in tagged.s.snapshot(full=False)
    assert plain.s.snapshot()["line_tags"] == {} and plain.s.snapshot()["line_tag_rx"] == {}


def test_tag_frames_take_the_vads_digital_silence_path(drive, monkeypatch) -> None:
    """A tag frame costs the VAD what 0xFF silence does: ``feed_silence``, never a decode and ``feed``."""
    from callsim.simulator.mock.vad import ServerVad

    calls: list[tuple[str, int]] = []
    feed, feed_silence = ServerVad.feed, ServerVad.feed_silence

    def spy_feed(self, samples):
        calls.append(("feed", len(samples)))
        return feed(self, samples)

    def spy_silence(self, n):
        calls.append(("feed_silence", n))
        return feed_silence(self, n)

    monkeypatch.setattr(ServerVad, "feed", spy_feed)
    monkeypatch.setattr(ServerVad, "feed_silence", spy_silence)
    _run_call(drive, tagged=False)
    plain, calls[:] = list(calls), []
    _run_call(drive, tagged=True)
    assert calls == plain
    assert sum(1 for c in calls if c[0] == "feed_silence") > 200


def test_batched_appends_mixing_tags_and_speech_keep_the_vad_identical(drive) -> None:
    """100 ms appends: tag frames and speech frames share appends; the VAD still hears the same."""
    plain, _ = _run_call(drive, tagged=False, chunk_ms=100)
    tagged, line = _run_call(drive, tagged=True, chunk_ms=100)
    assert _vad_view(tagged) == _vad_view(plain)
    assert tagged.s.snapshot()["line_tags"][HEX]["frames"] == len(line.tag_frames)
    first_seqs = [seq for seq, _ in tagged.s.snapshot()["line_tag_rx"][HEX][:6]]
    assert first_seqs == [0, 1, 2, 3, 4, 5]
    # five frames per append: frames 0-4 arrived together at T0, 5 at T0 + 100 ms
    assert {t for _, t in tagged.s.snapshot()["line_tag_rx"][HEX][:5]} == {T0}


def test_tagged_audio_is_kept_in_the_buffer_for_echo(drive) -> None:
    """The input buffer (what echo mode plays back) keeps the tag frames as sent."""
    d = drive(Behaviour(think=ThinkTime("fixed", 0), echo=True, seed=6))
    configure(d)
    d.append(Line(True).idle(600).say("caller_stop").idle(1000).audio())
    d.settle()
    assert d.s.turns and d.s._last_turn_audio
    assert tag_frame(TAG, 29) in d.s._last_turn_audio  # the prefix padding before the speech


def test_other_input_formats_record_nothing(drive) -> None:
    """After a bridge's transcoding no tag survives; the bytes are not even read as μ-law blocks."""
    d = drive()
    configure(d, fmt_in=PCM)
    d.append(Line(True).idle(400).audio() * 6, bytes_per_ms=48)  # μ-law tag frames mislabelled as pcm16
    assert d.s.snapshot()["line_tags"] == {} and d.s.snapshot()["line_tag_rx"] == {}


# ====================================================================== over a real WebSocket


async def _stream(mock, line: Line) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """Send every frame as one append, as fast as the socket takes them; the session's full
    snapshot (with timings) once the mock has handled them all, and each send's time window."""
    windows: list[tuple[int, int]] = []
    async with connect(mock) as c:
        sid = (await c.recv())["session"]["id"]
        await c.send(PCMU_VAD)
        await c.until("session.updated")
        for frame in line.frames:
            before = time.monotonic_ns()
            await c.ws.send_message(json.dumps({"type": "input_audio_buffer.append",
                                                "audio": base64.b64encode(frame).decode("ascii")}))
            windows.append((before, 0))
        # the mock handles a session's messages in order: once this is answered, every append was seen
        await c.send({**PCMU_VAD, "event_id": "evt_fence"})
        await c.until(lambda e: e["type"] == "session.updated")
        fence = time.monotonic_ns()
        snap = mock.sessions[sid].snapshot(full=True, timings=True)
    return snap, [(b, fence) for b, _ in windows]


async def test_over_a_websocket_tags_are_reported_with_their_arrival_times_and_vad_is_unchanged():
    behaviour = Behaviour(think=ThinkTime("fixed", 10), seed=8)
    async with running_mock(config(behaviour=behaviour)) as mock:
        with trio.fail_after(30):
            line = _call(tagged=True)
            tagged, windows = await _stream(mock, line)
            plain, _ = await _stream(mock, _call(tagged=False))

    append_ns = tagged["append_ns"]
    assert len(append_ns) == len(line.frames)
    rx = tagged["line_tag_rx"][HEX]
    assert [seq for seq, _ in rx] == list(range(len(line.tag_frames)))
    for (seq, t), k in zip(rx, line.tag_frames):
        assert t == append_ns[k], (seq, k)  # the append's arrival on the mock's clock
        sent, fence = windows[k]
        assert sent <= t <= fence
    summary = tagged["line_tags"][HEX]
    assert summary == {"frames": len(line.tag_frames), "first_rx_ns": rx[0][1], "last_rx_ns": rx[-1][1]}
    assert plain["line_tags"] == {}

    def turns(snap: dict[str, Any]) -> list[tuple]:
        return [(t["audio_start_ms"], t["audio_end_ms"], t["speech_onset_ms"], t["speech_end_ms"], t["heard"],
                 t["score"]) for t in snap["turns"]]

    assert len(turns(plain)) == 3
    assert turns(tagged) == turns(plain)
    assert tagged["vad_decisions"] == plain["vad_decisions"]
