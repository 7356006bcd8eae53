"""Both ends fingerprint the same 20 ms of μ-law the same way: the caller the CRC-32 of each
frame it sends (``CallerCore.media_sent_crc``), the mock the CRC-32 of each 160-byte block of
the input stream (``block_crc`` in a session's snapshot with timings), however it was chunked."""

from __future__ import annotations

import base64
import json
import os
import random
import zlib

import orjson
from callsim.simulator.audio.utterances import UtteranceBank
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.core import CallerConfig, CallerCore
from callsim.simulator.caller.script import Hangup, Pause, Say
from callsim.simulator.caller.sids import make_sid
from callsim.simulator.mock.behaviour import Behaviour
from callsim.simulator.mock.fingerprint import BlockPrints
from callsim.simulator.mock.session import MockSession

T0 = 5_000_000_000


def test_the_caller_records_the_crc_of_every_frame_it_sends():
    rng = random.Random(4)
    ident = tw.StreamIdentity(make_sid("AC", rng), make_sid("CA", rng), make_sid("MZ", rng), {})
    core = CallerCore(CallerConfig(ident), [Pause(100), Say("caller_stop"), Pause(100), Hangup()], UtteranceBank())
    payloads = []
    msgs = core.begin(T0)
    while True:
        payloads += [base64.b64decode(m["media"]["payload"]) for m in map(json.loads, msgs) if m["event"] == "media"]
        d = core.next_deadline_ns()
        if d is None:
            break
        msgs = core.advance(d)
    assert len(payloads) > 20 and len(core.media_sent_crc) == len(core.media_sent_ns) == len(payloads)
    assert list(core.media_sent_crc) == [zlib.crc32(p) for p in payloads]


def _session(fmt: str = "audio/pcmu") -> MockSession:
    s = MockSession(behaviour=Behaviour(seed=3), recognizer=None)
    s.open(0)
    s.receive(0, orjson.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": fmt}}}}}).decode())
    return s


def _append(s: MockSession, t: int, data: bytes) -> None:
    assert not s.receive(t, orjson.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(data).decode()}).decode())


def test_the_mock_fingerprints_each_160_byte_block_of_the_stream_whatever_the_appends():
    audio = os.urandom(160 * 12)
    s = _session()
    cuts = [0, 160, 480, 500, 1000, 1120, 1900, len(audio)]  # one frame, two, odd sizes, a tail
    for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
        _append(s, 1_000 * (k + 1), audio[a:b])
    snap = s.snapshot(full=False, timings=True)
    assert snap["block_crc"] == [zlib.crc32(audio[o:o + 160]) for o in range(0, len(audio), 160)]
    # a block's time is the arrival of the append that completed it
    ends = [(o + 160) for o in range(0, len(audio), 160)]
    assert snap["block_ns"] == [1_000 * next(k + 1 for k, b in enumerate(cuts[1:]) if b >= e) for e in ends]
    assert len(snap["append_ns"]) == len(cuts) - 1
    assert "block_crc" not in s.snapshot(full=False)  # only with timings


def test_pcm16_blocks_are_20ms_long():
    s = _session("audio/pcm")
    audio = os.urandom(960 * 3)
    _append(s, 1, audio)
    assert s.snapshot(full=False, timings=True)["block_crc"] == [zlib.crc32(audio[o:o + 960]) for o in (0, 960, 1920)]


def test_blocks_are_bounded_like_the_other_timings():
    bp = BlockPrints(cap=5)
    for t in range(4):
        bp.add(t, bytes([t]) * 160, 160)
    bp.add(9, os.urandom(160 * 4), 160)  # only one more fits
    bp.add(10, b"\x00" * 160, 160)
    assert len(bp.crc) == len(bp.ns) == 5 and bp.ns[-1] == 9
