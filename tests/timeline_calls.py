"""Synthetic calls that write every kind of timeline event, for tests/test_timeline.py.

Each is a real :class:`CallerCore` driven with synthetic times (as in test_report.py), so
what it records is the same on every run; ``tests/data/timeline_golden.json`` holds what
:func:`~callsim.simulator.measure.recording.call_record` wrote for them, and the test checks
that the typed timeline still writes exactly that.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Callable

from callsim.simulator.audio.utterances import UtteranceBank
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.call_result import CallResult
from callsim.simulator.caller.core import FRAME_NS, CallerConfig, CallerCore
from callsim.simulator.caller.impairments import Impairments
from callsim.simulator.caller.script import Dtmf, Hangup, Pause, Say, WaitForAudio, WaitForReply

T0 = 987_654_321_000
BANK = UtteranceBank()
REPLY = BANK.get("assistant_short_reply").ulaw


def _media(sid: str, payload: bytes) -> str:
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(payload).decode()}})


def _mark(sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}})


def _clear(sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": sid})


def _ident(seed: int, params: dict[str, str]) -> tw.StreamIdentity:
    from callsim.simulator.caller.sids import make_sid
    rng = random.Random(seed)
    return tw.StreamIdentity(make_sid("AC", rng), make_sid("CA", rng), make_sid("MZ", rng), params)


def _drive(core: CallerCore, feed: dict[int, list[str]], *, late: dict[int, int] | None = None,
           close_at: int | None = None, after_stop_close: bool = False) -> CallResult:
    """Run at each deadline (``late``: tick → ns late); app messages of tick k just before it."""
    late = late or {}
    core.begin(T0)
    while (d := core.next_deadline_ns()) is not None:
        k = (d - T0) // FRAME_NS
        now = d + late.pop(k, 0)
        if close_at is not None and k >= close_at:
            core.peer_closed(now, 1000, "bye")
            break
        for msg in feed.pop(k, []):
            core.receive(now, msg)
        core.advance(now)
        if after_stop_close and core._hung_up and not core.finished:
            core.peer_closed(now + 1_000_000, 1006, None)
            break
    return CallResult(target="ws://bridge.test/stream", core=core, stream_url="ws://bridge.test/stream")


def rich_call() -> CallResult:
    """Speech (some frames lost), DTMF, media, marks played/idle/cleared, a clear, an overflow,
    a warning, a late driver, a wait that times out, playback and onset events, a stop."""
    cfg = CallerConfig(_ident(1, {"FirstName": "Jane"}), impairments=Impairments(loss_prob=0.25, seed=3),
                       max_queued_bytes=12_000)
    script = [Pause(100), Say("caller_stop"), Dtmf("12", gap_ms=40), WaitForReply(quiet_ms=300, timeout_ms=3000),
              Say("caller_stop"), WaitForAudio(after_ms=100, timeout_ms=200), Hangup()]
    core = CallerCore(cfg, script, BANK)
    sid = core.stream_sid
    feed = {
        3: [_mark(sid, "idle0")],
        40: [_media(sid, REPLY[:8000]), _mark(sid, "r1"), _media(sid, REPLY[8000:16000]), _mark(sid, "r2")],
        60: ['{"event": "media", "streamSid": "MZwrong"}', _clear(sid)],
        70: [_media(sid, REPLY[:1600]), _mark(sid, "r3")],
    }
    return _drive(core, feed, late={55: 70_000_000, 56: 50_000_000, 57: 0})


def closed_call() -> CallResult:
    """The app closes the socket in the middle of an utterance."""
    core = CallerCore(CallerConfig(_ident(2, {})), [Pause(60), Say("caller_stop"), Hangup()], BANK)
    return _drive(core, {1: [_media(core.stream_sid, REPLY[:800])]}, close_at=20)


def max_duration_call() -> CallResult:
    """The call runs into its maximum duration; the app closes after the stop."""
    cfg = CallerConfig(_ident(3, {}), max_duration_ms=400, impairments=Impairments(jitter_ms=100, seed=1))
    core = CallerCore(cfg, [Pause(5000)], BANK)
    return _drive(core, {}, after_stop_close=True)


CALLS: dict[str, Callable[[], CallResult]] = {
    "rich": rich_call, "closed": closed_call, "max_duration": max_duration_call,
}


def records() -> dict[str, dict]:
    """What recording.call_record writes for each call (as JSON would read it back)."""
    import orjson

    from callsim.simulator.measure.recording import call_record
    return {name: orjson.loads(orjson.dumps(call_record(make()))) for name, make in CALLS.items()}


if __name__ == "__main__":  # writes the golden file (with the code under test: review the diff)
    import sys
    from pathlib import Path
    out = Path(__file__).parent / "data" / "timeline_golden.json"
    out.write_text(json.dumps(records(), indent=1, sort_keys=False) + "\n")
    print(out, file=sys.stderr)
