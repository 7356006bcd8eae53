"""Sans-IO tests of ``callsim.bridge.call.CallCore``: one phone call, driven on a synthetic clock.

Everything here is independent of ``simulator``: Twilio and OpenAI messages are written
by hand as dicts (shapes from /work/shared/protocols.md 1.2, 1.3, 2.3, 2.4), and Twilio's
outbound playback is modelled by :class:`TwilioPlayback` below — a FIFO of μ-law bytes
played in 160-byte / 20 ms frames at real time, echoing a mark when the audio queued
before it has played (or at once on ``clear``). The barge-in assertions compare the
bridge's ``audio_end_ms`` with what that model says the caller heard.

Times are integer nanoseconds. ``MS`` converts.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from callsim.bridge import twilio_wire
from callsim.bridge.call import (
    MAX_EARLY_FRAMES,
    CallCore,
    CallStarted,
    CloseOpenAI,
    ConnectOpenAI,
    Hangup,
    RunTool,
    SaveTranscript,
    ToOpenAI,
    ToTwilio,
)
from callsim.bridge.codec import Transcoder
from callsim.bridge.realtime import SessionParams
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MS = 1_000_000
FRAME = 160  # μ-law bytes per Twilio frame
FRAME_NS = 20 * MS
NS_PER_BYTE = 125_000  # μ-law 8 kHz: 8 bytes per ms

ACCOUNT_SID = "AC" + "00112233445566778899aabbccddeeff"
CALL_SID = "CA" + "fedcba9876543210fedcba9876543210"
STREAM_SID = "MZ" + "0123456789abcdef0123456789abcdef"
CUSTOM = {"FirstName": "Jane", "LastName": "Doe", "token": "t0k3n"}

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


# ============================================================== message builders


class TwilioMsgs:
    """Twilio → bridge messages, exactly as protocols.md 1.2 (counters are JSON strings)."""

    def __init__(self, stream_sid: str = STREAM_SID) -> None:
        self.stream_sid = stream_sid
        self.seq = 0
        self.chunk = 0

    def _n(self) -> str:
        self.seq += 1
        return str(self.seq)

    @staticmethod
    def connected() -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, params: dict[str, str] | None = None) -> str:
        return json.dumps({
            "event": "start", "sequenceNumber": self._n(),
            "start": {"accountSid": ACCOUNT_SID, "streamSid": self.stream_sid, "callSid": CALL_SID,
                      "tracks": ["inbound"],
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                      "customParameters": dict(CUSTOM if params is None else params)},
            "streamSid": self.stream_sid})

    def media(self, payload: Any) -> str:
        self.chunk += 1
        return json.dumps({"event": "media", "sequenceNumber": self._n(),
                           "media": {"track": "inbound", "chunk": str(self.chunk),
                                     "timestamp": str(20 * (self.chunk - 1)), "payload": payload},
                           "streamSid": self.stream_sid})

    def mark(self, name: Any) -> str:
        return json.dumps({"event": "mark", "sequenceNumber": self._n(), "streamSid": self.stream_sid,
                           "mark": {"name": name}})

    def dtmf(self, digit: str) -> str:
        return json.dumps({"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": self._n(),
                           "dtmf": {"track": "inbound_track", "digit": digit}})

    def stop(self) -> str:
        return json.dumps({"event": "stop", "sequenceNumber": self._n(),
                           "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID}, "streamSid": self.stream_sid})


_eid = 0


def oa(etype: str, **fields: Any) -> str:
    """An OpenAI server event as JSON text."""
    global _eid
    _eid += 1
    return json.dumps({"type": etype, "event_id": f"event_{_eid:04d}", **fields})


def audio_delta(item: str, resp: str, payload: str, dialect: str = "ga") -> str:
    etype = "response.output_audio.delta" if dialect == "ga" else "response.audio.delta"
    return oa(etype, response_id=resp, item_id=item, output_index=0, content_index=0, delta=payload)


def audio_done(item: str, resp: str, dialect: str = "ga") -> str:
    etype = "response.output_audio.done" if dialect == "ga" else "response.audio.done"
    return oa(etype, response_id=resp, item_id=item, output_index=0, content_index=0)


def transcript_done(item: str, resp: str, text: str, dialect: str = "ga") -> str:
    etype = "response.output_audio_transcript.done" if dialect == "ga" else "response.audio_transcript.done"
    return oa(etype, response_id=resp, item_id=item, output_index=0, content_index=0, transcript=text)


def response_created(resp: str) -> str:
    return oa("response.created", response={"id": resp, "object": "realtime.response", "status": "in_progress",
                                            "status_details": None, "output": [], "usage": None})


def response_done(resp: str, status: str = "completed") -> str:
    return oa("response.done", response={"id": resp, "object": "realtime.response", "status": status,
                                         "status_details": None, "output": []})


def speech_started(ms: int = 1000) -> str:
    return oa("input_audio_buffer.speech_started", audio_start_ms=ms, item_id="item_user")


def session_updated() -> str:
    return oa("session.updated", session={"type": "realtime", "id": "sess_1"})


def ulaw(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def non_canonical_b64(data: bytes) -> str:
    """Base64 of ``data`` (len % 3 == 1) with non-zero pad bits: decodes to ``data`` but
    re-encoding gives a different string, so any decode/re-encode in the bridge shows."""
    assert len(data) % 3 == 1
    s = b64(data)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(s[-3]) | 0b0101  # low 4 bits are unused when 1 byte remains
    odd = s[:-3] + alphabet[last] + "=="
    assert base64.b64decode(odd) == data and b64(base64.b64decode(odd)) != odd
    return odd


# ============================================================== action helpers


def tw_out(actions: list) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, ToTwilio)]


def oa_out(actions: list) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, ToOpenAI)]


def of_type(msgs: list[dict[str, Any]], etype: str) -> list[dict[str, Any]]:
    return [m for m in msgs if m.get("type") == etype]


def kinds(actions: list) -> list[str]:
    """A compact description of each action, in order: 'tw:clear', 'oa:conversation.item.truncate', 'Hangup'…"""
    out = []
    for a in actions:
        if isinstance(a, ToTwilio):
            out.append("tw:" + json.loads(a.text)["event"])
        elif isinstance(a, ToOpenAI):
            out.append("oa:" + json.loads(a.text)["type"])
        else:
            out.append(type(a).__name__)
    return out


# ============================================================== Twilio playback model


@dataclass
class Run:
    """A stretch of continuous playback: Twilio starts it when audio arrives while idle."""

    start: int
    total: int = 0  # μ-law bytes queued (after a clear: the bytes whose frame had begun)

    def begun(self, t: int) -> int:
        """Bytes of this run in 20 ms frames that have begun playing by ``t`` (heard: a
        begun frame cannot be recalled)."""
        if t < self.start:
            return 0
        return min(self.total, ((t - self.start) // FRAME_NS + 1) * FRAME)

    def end(self) -> int:
        return self.start + self.total * NS_PER_BYTE


class TwilioPlayback:
    """What Twilio does with the bridge's media/mark/clear, on the test's own clock."""

    def __init__(self, to_twilio_ns: int, echo_ns: int) -> None:
        self.to_twilio_ns = to_twilio_ns
        self.echo_ns = echo_ns  # Twilio → bridge transit of an echoed mark
        self.runs: list[Run] = []
        self.chunks: dict[str, list[tuple[Run, int, int]]] = defaultdict(list)  # item -> (run, offset, n)
        self.pending: list[list[Any]] = []  # [time Twilio echoes it, name], FIFO, not yet at the bridge
        self.clears: list[int] = []
        self.media_msgs: list[dict[str, Any]] = []

    def receive(self, t_bridge: int, msg: dict[str, Any], item: str | None) -> None:
        t = t_bridge + self.to_twilio_ns
        assert msg["streamSid"] == STREAM_SID
        ev = msg["event"]
        run = self.runs[-1] if self.runs else None
        if ev == "media":
            self.media_msgs.append(msg)
            n = len(base64.b64decode(msg["media"]["payload"], validate=True))
            if run is None or t >= run.end():
                run = Run(t)
                self.runs.append(run)
            if item is not None:
                self.chunks[item].append((run, run.total, n))
            run.total += n
        elif ev == "mark":
            when = t if run is None else max(t, run.end())
            self.pending.append([when, msg["mark"]["name"]])
        elif ev == "clear":
            self.clears.append(t)
            if run is not None and run.end() > t:
                run.total = run.begun(t)
            for m in self.pending:
                m[0] = min(m[0], t)
        else:  # pragma: no cover - the bridge may only send media, mark, clear
            raise AssertionError(f"bridge sent Twilio an {ev!r}")

    def heard(self, item: str, t: int) -> int:
        """μ-law bytes of ``item`` the caller has heard by ``t`` (whole frames begun)."""
        return sum(min(max(run.begun(t) - off, 0), n) for run, off, n in self.chunks[item])

    def queued(self, item: str) -> int:
        return sum(n for _, _, n in self.chunks[item])


class Sim:
    """A CallCore, a started stream and a configured session, plus Twilio's playback model."""

    def __init__(self, params: SessionParams | None = None, *, to_twilio_ms: float = 1, echo_ms: float = 2,
                 transcoder: Any = None, apology: bytes = b"", greeting: str | None = None) -> None:
        self.core = CallCore(params or SessionParams(), transcoder=transcoder, apology_ulaw=apology,
                             ai_greeting=greeting)
        self.tw = TwilioMsgs()
        self.pb = TwilioPlayback(int(to_twilio_ms * MS), int(echo_ms * MS))
        self.now = 0
        self.actions: list = []
        self.mark_actions: list = []
        assert self.twilio(0, self.tw.connected()) == []
        start = self.twilio(1 * MS, self.tw.start())
        assert kinds(start) == ["CallStarted", "ConnectOpenAI"]
        assert kinds(self.core.openai_opened(2 * MS)) == ["oa:session.update"]
        self.openai(3 * MS, session_updated())

    def advance(self, t: int) -> None:
        """Deliver, in order, the mark echoes that reach the bridge by ``t``."""
        assert t >= self.now
        while self.pb.pending and self.pb.pending[0][0] + self.pb.echo_ns <= t:
            when, name = self.pb.pending.pop(0)
            at = max(when + self.pb.echo_ns, self.now)
            acts = self.core.twilio_message(at, self.tw.mark(name))
            self.mark_actions += acts
            self._handle(at, acts, None)
        self.now = t

    def twilio(self, t: int, text: str | bytes) -> list:
        self.advance(t)
        acts = self.core.twilio_message(t, text)
        self._handle(t, acts, None)
        return acts

    def openai(self, t: int, text: str | bytes, item: str | None = None) -> list:
        self.advance(t)
        acts = self.core.openai_message(t, text)
        self._handle(t, acts, item)
        return acts

    def _handle(self, t: int, acts: list, item: str | None) -> None:
        self.actions += acts
        for a in acts:
            if isinstance(a, ToTwilio):
                self.pb.receive(t, json.loads(a.text), item)


def started_core(params: SessionParams | None = None, **kw: Any) -> tuple[CallCore, TwilioMsgs]:
    core = CallCore(params or SessionParams(), **kw)
    tw = TwilioMsgs()
    core.twilio_message(0, tw.connected())
    core.twilio_message(1 * MS, tw.start())
    core.openai_opened(2 * MS)
    core.openai_message(3 * MS, session_updated())
    return core, tw


# ============================================================== 1. start and session.update


def test_connected_then_start_reports_the_call_and_opens_openai() -> None:
    core = CallCore(SessionParams())
    tw = TwilioMsgs()
    assert core.twilio_message(0, tw.connected()) == []
    acts = core.twilio_message(1 * MS, tw.start())
    assert acts == [CallStarted(CALL_SID, STREAM_SID, CUSTOM), ConnectOpenAI()]
    assert core.stats["twilio_bad"] == 0


def test_openai_opened_sends_exactly_one_session_update_ga_shape() -> None:
    params = SessionParams(voice="cedar", instructions="Be brief.", vad_threshold=0.7, vad_prefix_padding_ms=250,
                           vad_silence_duration_ms=400, transcription_model="whisper-1", tools=(WEATHER_TOOL,))
    core = CallCore(params)
    tw = TwilioMsgs()
    core.twilio_message(0, tw.connected())
    core.twilio_message(1 * MS, tw.start())
    acts = core.openai_opened(2 * MS)
    assert len(acts) == 1 and isinstance(acts[0], ToOpenAI)
    msg = json.loads(acts[0].text)
    assert msg["type"] == "session.update"
    s = msg["session"]
    assert s["type"] == "realtime"
    assert s["model"] == "gpt-realtime"
    assert s["instructions"] == "Be brief."
    assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert s["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 250, "silence_duration_ms": 400,
        "create_response": True, "interrupt_response": True}
    assert s["audio"]["input"]["transcription"] == {"model": "whisper-1"}
    assert s["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "cedar"}
    assert s["tools"] == [WEATHER_TOOL]
    assert s["tool_choice"] == "auto"
    for beta_key in ("input_audio_format", "output_audio_format", "voice", "modalities", "turn_detection",
                     "input_audio_transcription"):
        assert beta_key not in s


def test_session_update_without_tools_or_transcription_omits_them() -> None:
    core = CallCore(SessionParams(transcription_model=None, interrupt_response=False))
    s = json.loads(core.openai_opened(0)[0].text)["session"]
    assert "tools" not in s and "tool_choice" not in s
    assert "transcription" not in s["audio"]["input"]
    assert s["audio"]["input"]["turn_detection"]["interrupt_response"] is False


def test_session_update_semantic_vad_has_eagerness_not_threshold() -> None:
    core = CallCore(SessionParams(vad_type="semantic_vad", vad_eagerness="high"))
    td = json.loads(core.openai_opened(0)[0].text)["session"]["audio"]["input"]["turn_detection"]
    assert td == {"type": "semantic_vad", "eagerness": "high", "create_response": True, "interrupt_response": True}


def test_session_update_beta_dialect_is_flat_g711_ulaw() -> None:
    params = SessionParams(dialect="beta", voice="alloy", tools=(WEATHER_TOOL,))
    s = json.loads(CallCore(params).openai_opened(0)[0].text)["session"]
    assert s["input_audio_format"] == "g711_ulaw"
    assert s["output_audio_format"] == "g711_ulaw"
    assert s["voice"] == "alloy"
    assert s["modalities"] == ["text", "audio"]
    assert s["turn_detection"] == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                   "silence_duration_ms": 500, "create_response": True, "interrupt_response": True}
    assert s["input_audio_transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert s["tools"] == [WEATHER_TOOL]
    assert "type" not in s and "audio" not in s


@pytest.mark.parametrize("dialect,fmt", [("ga", {"type": "audio/pcm", "rate": 24000}), ("beta", "pcm16")])
def test_session_update_transcode_mode_asks_for_pcm16_24k(dialect: str, fmt: Any) -> None:
    core = CallCore(SessionParams(dialect=dialect, audio_mode="transcode"), transcoder=Transcoder())
    s = json.loads(core.openai_opened(0)[0].text)["session"]
    if dialect == "ga":
        assert s["audio"]["input"]["format"] == fmt
        assert s["audio"]["output"]["format"] == fmt
    else:
        assert s["input_audio_format"] == fmt
        assert s["output_audio_format"] == fmt


def test_transcode_mode_without_transcoder_is_refused() -> None:
    with pytest.raises(ValueError):
        CallCore(SessionParams(audio_mode="transcode"))


# ============================================================== 2. early audio


def test_early_frames_are_held_then_flushed_in_order_unchanged() -> None:
    core = CallCore(SessionParams())
    tw = TwilioMsgs()
    core.twilio_message(0, tw.connected())
    core.twilio_message(1 * MS, tw.start())
    payloads = [non_canonical_b64(ulaw(160, seed=i)) for i in range(5)]
    t = 2 * MS
    for p in payloads[:2]:  # before the socket is even open
        assert core.twilio_message(t, tw.media(p)) == []
        t += 20 * MS
    assert kinds(core.openai_opened(t)) == ["oa:session.update"]
    for p in payloads[2:]:  # open, but session.updated not yet seen
        assert core.twilio_message(t, tw.media(p)) == []
        t += 20 * MS
    acts = core.openai_message(t, session_updated())
    assert all(isinstance(a, ToOpenAI) for a in acts)
    assert [json.loads(a.text) for a in acts] == [{"type": "input_audio_buffer.append", "audio": p}
                                                   for p in payloads]
    # the very same base64 text: no decode / re-encode (the pad bits would change)
    for a, p in zip(acts, payloads):
        assert f'"{p}"' in a.text
    # later frames go at once, one append each
    later = non_canonical_b64(ulaw(160, seed=99))
    acts = core.twilio_message(t + 20 * MS, tw.media(later))
    assert acts == [ToOpenAI(json.dumps({"type": "input_audio_buffer.append", "audio": later},
                                        separators=(",", ":")))]
    assert core.early_dropped == 0
    assert core.stats["frames_in"] == 6
    # a second session.updated (e.g. after another session.update) flushes nothing twice
    assert core.openai_message(t + 40 * MS, session_updated()) == []


def test_early_buffer_is_bounded_oldest_dropped() -> None:
    core = CallCore(SessionParams())
    tw = TwilioMsgs()
    core.twilio_message(0, tw.start())
    extra = 7
    payloads = [b64(i.to_bytes(4, "big") * 40) for i in range(MAX_EARLY_FRAMES + extra)]
    for i, p in enumerate(payloads):
        assert core.twilio_message(i * FRAME_NS, tw.media(p)) == []
    assert core.early_dropped == extra
    core.openai_opened(10_000 * MS)
    acts = core.openai_message(10_001 * MS, session_updated())
    assert [json.loads(a.text)["audio"] for a in acts] == payloads[extra:]


def test_greeting_follows_session_updated() -> None:
    core = CallCore(SessionParams(), ai_greeting="Greet the caller warmly.")
    tw = TwilioMsgs()
    core.twilio_message(0, tw.start())
    early = b64(ulaw(160))
    core.twilio_message(1 * MS, tw.media(early))
    core.openai_opened(2 * MS)
    msgs = oa_out(core.openai_message(3 * MS, session_updated()))
    assert msgs == [
        {"type": "input_audio_buffer.append", "audio": early},
        {"type": "conversation.item.create",
         "item": {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                  "text": "Greet the caller warmly."}]}},
        {"type": "response.create"},
    ]
    assert core.openai_message(4 * MS, session_updated()) == []  # greeted once


def test_no_greeting_by_default() -> None:
    core = CallCore(SessionParams())
    core.twilio_message(0, TwilioMsgs().start())
    core.openai_opened(1)
    assert core.openai_message(2, session_updated()) == []


# ============================================================== 3. output audio


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_delta_is_forwarded_unchanged_with_a_named_mark(dialect: str) -> None:
    core, _ = started_core(SessionParams(dialect=dialect))
    p1 = non_canonical_b64(ulaw(160, 1))
    acts = core.openai_message(10 * MS, audio_delta("item_A", "resp_1", p1, dialect))
    assert acts == [ToTwilio(json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": p1}},
                                        separators=(",", ":"))),
                    ToTwilio(json.dumps({"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "0:1:160"}},
                                        separators=(",", ":")))]
    p2 = b64(ulaw(800, 2))
    assert [m["mark"]["name"] for m in tw_out(core.openai_message(11 * MS, audio_delta("item_A", "resp_1", p2,
                                                                                        dialect)))
            if m["event"] == "mark"] == ["0:1:960"]
    # a new item gets the next sequence number and counts from 0 again
    out = tw_out(core.openai_message(12 * MS, audio_delta("item_B", "resp_1", b64(ulaw(320, 3)), dialect)))
    assert out[1] == {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "0:2:320"}}


def test_delta_of_the_other_dialect_is_not_audio() -> None:
    core, _ = started_core(SessionParams(dialect="ga"))
    assert core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160)), "beta")) == []
    core, _ = started_core(SessionParams(dialect="beta"))
    assert core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160)), "ga")) == []


@pytest.mark.parametrize("sizes", [[1], [2], [3], [1, 2, 3, 4, 5], [160, 161, 162, 163], [7999, 1]])
def test_mark_byte_counts_handle_base64_padding(sizes: list[int]) -> None:
    core, _ = started_core()
    total = 0
    for i, n in enumerate(sizes):
        total += n
        out = tw_out(core.openai_message((10 + i) * MS, audio_delta("item_A", "resp_1", b64(ulaw(n, i)))))
        assert out[1]["mark"]["name"] == f"0:1:{total}"


def test_b64_len_without_decoding() -> None:
    for n in range(0, 40):
        assert twilio_wire.b64_len(b64(bytes(n))) == n
    assert twilio_wire.b64_len("") == 0
    assert twilio_wire.b64_len("AA==") == 1
    assert twilio_wire.b64_len("AAA=") == 2
    assert twilio_wire.b64_len("AAAA") == 3


# ============================================================== 4. marks and barge-in


def schedule(item: str = "item_A", resp: str = "resp_1", *, t0: int = 100 * MS, n_deltas: int = 10,
             delta_bytes: int = 800, spacing: int = 15 * MS, transcript: str | None = None,
             dialect: str = "ga") -> list[tuple[int, str, str | None]]:
    """One spoken reply as OpenAI sends it: faster than real time (100 ms of audio / 15 ms)."""
    evs: list[tuple[int, str, str | None]] = [(t0, response_created(resp), None)]
    for i in range(n_deltas):
        evs.append((t0 + 1 * MS + i * spacing, audio_delta(item, resp, b64(ulaw(delta_bytes, i)), dialect), item))
    t_end = t0 + 1 * MS + n_deltas * spacing
    evs.append((t_end, audio_done(item, resp, dialect), item))
    if transcript is not None:
        evs.append((t_end + 1 * MS, transcript_done(item, resp, transcript, dialect), item))
    evs.append((t_end + 2 * MS, response_done(resp), None))
    return evs


def run_until(sim: Sim, evs: list[tuple[int, str, str | None]], t: int) -> list[tuple[int, str, str | None]]:
    """Feed the events before ``t``; return the rest."""
    rest = []
    for ev in evs:
        if ev[0] < t:
            sim.openai(ev[0], ev[1], ev[2])
        else:
            rest.append(ev)
    sim.advance(t)
    return rest


def check_barge_in(sim: Sim, T: int, item: str, expect_truncate: bool = True) -> dict[str, Any]:
    """speech_started at T; assert the barge-in rules against the playback model."""
    core = sim.core
    heard = sim.pb.heard(item, T)
    received = sim.pb.queued(item)  # passthrough: bytes received == bytes forwarded
    pending_before = len(sim.pb.pending)
    stats0 = dict(core.stats)
    acts = sim.openai(T, speech_started())
    k = kinds(acts)
    info: dict[str, Any] = {"acts": acts, "heard_ms": heard / 8, "pending": pending_before, "kinds": k}
    if not expect_truncate:
        assert "tw:clear" not in k and "oa:conversation.item.truncate" not in k, k
        assert core.stats["barge_ins"] == stats0["barge_ins"]
        return info
    assert k[0] == "tw:clear", k
    assert tw_out(acts)[0] == {"event": "clear", "streamSid": STREAM_SID}
    (tr,) = of_type(oa_out(acts), "conversation.item.truncate")
    assert set(tr) == {"type", "item_id", "content_index", "audio_end_ms"}
    assert tr["item_id"] == item
    assert tr["content_index"] == 0
    assert isinstance(tr["audio_end_ms"], int)
    assert tr["audio_end_ms"] <= received // 8, (tr, received)
    assert abs(tr["audio_end_ms"] - heard / 8) <= 20, (T / MS, tr["audio_end_ms"], heard / 8)
    assert core.stats["barge_ins"] == stats0["barge_ins"] + 1
    assert core.stats["truncates"] == stats0["truncates"] + 1
    info["truncate"] = tr
    return info


# barge-in moments (ms): before the first frame ends, inside frames, at frame and mark
# boundaries, while OpenAI is still generating, long after, after everything played.
MOMENTS_MS = [102, 105, 117, 121, 123, 130, 150, 199, 201, 203, 205, 222, 250, 300, 333, 399, 401, 404,
              555, 700, 777, 900, 1000, 1080, 1099, 1100, 1101, 1102, 1103, 1104, 1105, 1150, 1500]


@pytest.mark.parametrize("echo_ms,to_twilio_ms", [(0, 0), (2, 1), (5, 3), (12, 6)])
def test_barge_in_truncates_at_what_the_caller_heard(echo_ms: float, to_twilio_ms: float) -> None:
    for T_ms in MOMENTS_MS:
        T = T_ms * MS
        sim = Sim(to_twilio_ms=to_twilio_ms, echo_ms=echo_ms)
        rest = run_until(sim, schedule(), T)
        generating = any("response.done" in ev[1] for ev in rest)
        all_echoed = not sim.pb.pending and not generating
        info = check_barge_in(sim, T, "item_A", expect_truncate=not all_echoed)
        core = sim.core
        if all_echoed:
            assert info["acts"] == [], (T_ms, info["kinds"])
            continue
        # interrupt_response is on: the server cancels by itself, so no response.cancel
        assert "oa:response.cancel" not in info["kinds"]
        acked = core.items["item_A"].acked
        ignored0 = core.stats["marks_ignored"]
        # what OpenAI still sends for the cancelled response is dropped
        n_late = sum(1 for ev in rest if "output_audio.delta" in ev[1])
        for ev in rest:
            assert [a for a in sim.openai(ev[0], ev[1], ev[2]) if isinstance(a, ToTwilio)] == []
        assert core.stats["deltas_dropped"] == n_late
        # the marks Twilio echoes because of the clear are ignored and do not move playback
        sim.advance(T + 200 * MS)
        assert sim.mark_actions == []
        assert core.stats["marks_ignored"] == ignored0 + info["pending"], T_ms
        assert core.items["item_A"].acked == acked
        assert not sim.pb.pending


def test_barge_in_exact_frames_and_transcript_cut() -> None:
    """Deterministic numbers: 10 × 100 ms deltas; caller speaks 290 ms into playback."""
    words = "one two three four five six seven eight nine ten"
    sim = Sim(to_twilio_ms=1, echo_ms=2)
    evs = schedule(transcript=words)
    first_send = evs[1][0]
    T = first_send + 1 * MS + 290 * MS  # Twilio started at first_send + 1 ms: 15 frames have begun
    rest = run_until(sim, evs, T)
    assert rest == []
    assert SaveTranscript("item_A", "assistant", words) in sim.actions
    info = check_barge_in(sim, T, "item_A")
    assert info["heard_ms"] == 300
    assert info["truncate"]["audio_end_ms"] == 300
    assert info["kinds"] == ["tw:clear", "oa:conversation.item.truncate", "SaveTranscript"]
    assert info["acts"][2] == SaveTranscript("item_A", "assistant", "one two three", truncated=True,
                                             audio_end_ms=300)
    assert sim.core.truncates[-1]["audio_end_ms"] == 300


def test_barge_in_while_generating_with_interrupt_response_off_sends_cancel() -> None:
    sim = Sim(SessionParams(interrupt_response=False))
    evs = schedule()
    T = 150 * MS
    rest = run_until(sim, evs, T)
    info = check_barge_in(sim, T, "item_A")
    assert info["kinds"] == ["tw:clear", "oa:response.cancel", "oa:conversation.item.truncate"]
    assert oa_out(info["acts"])[0] == {"type": "response.cancel"}
    n_late = 0
    for ev in rest:
        n_late += "output_audio.delta" in ev[1]
        assert not [a for a in sim.openai(ev[0], ev[1], ev[2]) if isinstance(a, ToTwilio)]
    assert sim.core.stats["deltas_dropped"] == n_late > 0


def test_no_cancel_when_no_response_is_active_even_with_interrupt_response_off() -> None:
    sim = Sim(SessionParams(interrupt_response=False))
    evs = schedule()
    T = 600 * MS  # generation finished (response.done seen), audio still playing
    assert run_until(sim, evs, T) == []
    info = check_barge_in(sim, T, "item_A")
    assert "oa:response.cancel" not in info["kinds"]
    assert info["kinds"] == ["tw:clear", "oa:conversation.item.truncate"]


def test_speech_with_nothing_playing_does_nothing() -> None:
    sim = Sim(SessionParams(interrupt_response=False))
    assert sim.openai(10 * MS, speech_started()) == []  # no audio yet
    run_until(sim, schedule(), 3000 * MS)  # all played, all marks back
    assert sim.openai(3000 * MS, speech_started()) == []
    assert sim.core.stats["barge_ins"] == 0 and sim.core.stats["truncates"] == 0


def test_active_response_without_audio_is_cancelled_only_when_server_will_not() -> None:
    for interrupt, expect in ((False, [{"type": "response.cancel"}]), (True, [])):
        core, _ = started_core(SessionParams(interrupt_response=interrupt))
        core.openai_message(10 * MS, response_created("resp_1"))
        acts = core.openai_message(20 * MS, speech_started())
        assert oa_out(acts) == expect and tw_out(acts) == []
        # the cancelled response's audio is not played
        assert core.openai_message(30 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160)))) == []
        assert core.stats["deltas_dropped"] == 1


def test_new_reply_after_barge_in_plays_in_the_new_generation() -> None:
    sim = Sim()
    T = 400 * MS
    run_until(sim, schedule(), T)
    check_barge_in(sim, T, "item_A")
    sim.advance(T + 50 * MS)
    evs = schedule("item_B", "resp_2", t0=T + 600 * MS, n_deltas=3)
    rest = run_until(sim, evs, T + 700 * MS)
    marks = [m["mark"]["name"] for a in sim.actions if isinstance(a, ToTwilio)
             for m in [json.loads(a.text)] if m["event"] == "mark"]
    assert marks[-3:] == ["1:2:800", "1:2:1600", "1:2:2400"]
    assert rest == []
    T2 = T + 600 * MS + 1 * MS + 1 * MS + 130 * MS
    info = check_barge_in(sim, T2, "item_B")
    assert info["truncate"]["audio_end_ms"] == 140  # 7 frames begun
    assert sim.core.stats["barge_ins"] == 2


def test_second_barge_in_on_same_item_does_nothing() -> None:
    sim = Sim()
    run_until(sim, schedule(), 400 * MS)
    check_barge_in(sim, 400 * MS, "item_A")
    assert sim.openai(420 * MS, speech_started()) == []
    assert sim.core.stats["truncates"] == 1


def test_truncate_is_clamped_to_audio_received() -> None:
    """Transcode mode: 959 pcm16 samples received (1918 B = 39.96 ms → 39 ms) resample to 320
    μ-law bytes (40 ms). When both frames have begun, the heard estimate (40 ms) exceeds the
    audio received for the item and must be clamped. (In passthrough bytes sent to Twilio are
    the bytes received, so heard ≤ received always.)"""
    sim = Sim(SessionParams(audio_mode="transcode"), transcoder=Transcoder(), to_twilio_ms=0, echo_ms=2)
    pcm = (np.sin(np.arange(959) * 2 * np.pi / 24) * 8000).astype("<i2").tobytes()
    sim.openai(100 * MS, response_created("resp_1"))
    sim.openai(101 * MS, audio_delta("item_A", "resp_1", b64(pcm)), "item_A")
    sim.openai(102 * MS, audio_done("item_A", "resp_1"), "item_A")
    assert sim.pb.queued("item_A") == 320
    T = 125 * MS  # second frame (started at 121 ms) has begun; its mark is not back
    sim.advance(T)
    assert sim.pb.heard("item_A", T) == 320
    acts = sim.openai(T, speech_started())
    (tr,) = of_type(oa_out(acts), "conversation.item.truncate")
    assert tr["audio_end_ms"] == 1918 // 48 == 39
    assert sim.core.truncates[-1]["received_ms"] == 39


def test_marks_of_old_generation_and_garbage_marks_are_ignored() -> None:
    core, tw = started_core()
    core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(ulaw(1600))))
    core.openai_message(11 * MS, speech_started())
    item = core.items["item_A"]
    acked = item.acked
    for name in ("0:1:1600", "not-a-mark", "1:99:10", "x:y:z"):
        assert core.twilio_message(50 * MS, tw.mark(name)) == []
        assert item.acked == acked
    assert core.stats["marks_ignored"] == 4
    assert core.stats["twilio_bad"] == 0


def test_echoed_marks_move_the_estimate() -> None:
    """played(): after a mark echo, the next frame starts at once and one more every 20 ms."""
    core, tw = started_core()
    core.openai_message(0, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    core.openai_message(0, audio_delta("item_A", "resp_1", b64(ulaw(800, 1))))
    item = core.items["item_A"]
    assert item.played(0) == 160 and item.played(10 * MS) == 160 and item.played(20 * MS) == 320
    # capped just under a frame past the first mark not echoed (its echo may be in transit)
    assert item.played(500 * MS) == 800 + FRAME - 1
    core.twilio_message(100 * MS, tw.mark("0:1:800"))
    assert item.acked == 800
    assert item.played(100 * MS) == 960
    assert item.played(140 * MS) == 1280
    assert item.played(900 * MS) == 1600  # never past what was sent
    core.twilio_message(200 * MS, tw.mark("0:1:1600"))
    assert not item.playing and item.played(300 * MS) == 1600


# ------------------------------------------------------------------- queued items (known bug)


def test_barge_in_while_an_earlier_item_still_plays() -> None:
    sim = Sim()
    a = schedule("item_A", "resp_1", n_deltas=10)  # 1 s of audio, sent by 251 ms
    b = schedule("item_B", "resp_2", t0=400 * MS, n_deltas=5)  # queued behind A
    rest = run_until(sim, sorted(a + b), 600 * MS)
    assert rest == []
    assert sim.pb.heard("item_B", 600 * MS) == 0
    acts = sim.openai(600 * MS, speech_started())
    truncs = {t["item_id"]: t["audio_end_ms"] for t in of_type(oa_out(acts), "conversation.item.truncate")}
    assert abs(truncs.get("item_A", -1000) - sim.pb.heard("item_A", 600 * MS) / 8) <= 20, truncs
    assert truncs.get("item_B", 0) == 0, truncs


def test_barge_in_just_after_a_queued_item_starts() -> None:
    sim = Sim()
    a = schedule("item_A", "resp_1", n_deltas=10)  # plays 101..1101 ms
    b = schedule("item_B", "resp_2", t0=400 * MS, n_deltas=1, delta_bytes=8000)  # 1 s in one delta
    T = 1180 * MS
    rest = run_until(sim, sorted(a + b), T)
    assert rest == []
    check_barge_in(sim, T, "item_B")  # heard ≈ 80 ms, estimated ≈ 780 ms


# ============================================================== hypothesis: barge-in at random


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames_per_delta=st.lists(st.integers(1, 12), min_size=1, max_size=12),
    spacing_ms=st.integers(1, 60),
    to_twilio_ms=st.integers(0, 8),
    echo_ms=st.integers(0, 15),
    T_ms=st.integers(101, 2600),  # the response is created at 100 ms
    interrupt=st.booleans(),
)
def test_barge_in_at_random_moments(frames_per_delta: list[int], spacing_ms: int, to_twilio_ms: int,
                                    echo_ms: int, T_ms: int, interrupt: bool) -> None:
    sim = Sim(SessionParams(interrupt_response=interrupt), to_twilio_ms=to_twilio_ms, echo_ms=echo_ms)
    evs: list[tuple[int, str, str | None]] = [(100 * MS, response_created("resp_1"), None)]
    t = 101 * MS
    for i, f in enumerate(frames_per_delta):
        evs.append((t, audio_delta("item_A", "resp_1", b64(ulaw(f * FRAME, i))), "item_A"))
        t += spacing_ms * MS
    evs.append((t, response_done("resp_1"), None))
    T = T_ms * MS
    rest = run_until(sim, evs, T)
    generating = bool(rest)
    all_echoed = not sim.pb.pending and sim.pb.queued("item_A") == sim.pb.heard("item_A", T)
    info = check_barge_in(sim, T, "item_A", expect_truncate=not all_echoed)
    cancels = of_type(oa_out(info["acts"]), "response.cancel")
    assert len(cancels) == (1 if generating and not interrupt else 0)
    for ev in rest:
        assert not [a for a in sim.openai(ev[0], ev[1], ev[2]) if isinstance(a, ToTwilio)]
    sim.advance(T + 3000 * MS)
    assert sim.mark_actions == []


# ============================================================== 5. tools


def tool_events(call_id: str, item: str, name: str, args: str, resp: str, dialect: str = "ga") -> list[str]:
    added = oa("response.output_item.added", response_id=resp, output_index=0,
               item={"id": item, "type": "function_call", "status": "in_progress", "name": name,
                     "call_id": call_id, "arguments": ""})
    done_fields: dict[str, Any] = {"response_id": resp, "item_id": item, "output_index": 0, "call_id": call_id,
                                   "arguments": args}
    if dialect == "ga":
        done_fields["name"] = name
    return [added, oa("response.function_call_arguments.done", **done_fields)]


def output_item(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_tool_call_runs_and_result_then_response_done(dialect: str) -> None:
    core, _ = started_core(SessionParams(dialect=dialect, tools=(WEATHER_TOOL,)))
    core.openai_message(10 * MS, response_created("resp_1"))
    added, done = tool_events("call_1", "fc_1", "get_weather", '{"city": "Paris"}', "resp_1", dialect)
    assert core.openai_message(11 * MS, added) == []
    assert core.openai_message(12 * MS, done) == [RunTool("call_1", "get_weather", '{"city": "Paris"}')]
    assert core.stats["tool_calls"] == 1
    # result first: not yet a response.create (the response is still active)
    assert oa_out(core.tool_result(13 * MS, "call_1", '{"temp_c": 21}')) == [output_item("call_1", '{"temp_c": 21}')]
    assert oa_out(core.openai_message(14 * MS, response_done("resp_1"))) == [{"type": "response.create"}]
    assert core.openai_message(15 * MS, response_done("resp_1")) == []


def test_tool_response_done_then_result() -> None:
    core, _ = started_core()
    core.openai_message(10 * MS, response_created("resp_1"))
    for ev in tool_events("call_1", "fc_1", "get_time", "{}", "resp_1"):
        core.openai_message(11 * MS, ev)
    assert core.openai_message(12 * MS, response_done("resp_1")) == []
    assert oa_out(core.tool_result(13 * MS, "call_1", '"12:00"')) == [output_item("call_1", '"12:00"'),
                                                                      {"type": "response.create"}]
    assert core.tool_result(14 * MS, "call_1", '"again"') == []  # not pending any more
    assert core.tool_result(14 * MS, "call_unknown", '"x"') == []


def test_beta_tool_name_comes_from_output_item_added() -> None:
    core, _ = started_core(SessionParams(dialect="beta"))
    core.openai_message(10 * MS, response_created("resp_1"))
    added, done = tool_events("call_9", "fc_9", "get_time", '{"tz": "UTC"}', "resp_1", "beta")
    assert "name" not in json.loads(done)
    core.openai_message(11 * MS, added)
    assert core.openai_message(12 * MS, done) == [RunTool("call_9", "get_time", '{"tz": "UTC"}')]


@pytest.mark.parametrize("order", ["done_first", "results_first", "interleaved"])
def test_two_parallel_tool_calls_get_one_response_create(order: str) -> None:
    core, _ = started_core()
    core.openai_message(10 * MS, response_created("resp_1"))
    runs = []
    for i, (cid, name) in enumerate((("call_a", "get_time"), ("call_b", "get_weather"))):
        for ev in tool_events(cid, f"fc_{i}", name, "{}", "resp_1"):
            runs += core.openai_message(11 * MS, ev)
    assert runs == [RunTool("call_a", "get_time", "{}"), RunTool("call_b", "get_weather", "{}")]
    steps = {
        "done_first": [("done",), ("res", "call_a"), ("res", "call_b")],
        "results_first": [("res", "call_b"), ("res", "call_a"), ("done",)],
        "interleaved": [("res", "call_a"), ("done",), ("res", "call_b")],
    }[order]
    out: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        t = (20 + i) * MS
        acts = core.openai_message(t, response_done("resp_1")) if step[0] == "done" else \
            core.tool_result(t, step[1], f'"{step[1]}"')
        msgs = oa_out(acts)
        if i < len(steps) - 1:
            assert {"type": "response.create"} not in msgs, (order, i)
        out += msgs
    assert out.count({"type": "response.create"}) == 1
    assert out[-1] == {"type": "response.create"}
    assert output_item("call_a", '"call_a"') in out and output_item("call_b", '"call_b"') in out


# ============================================================== 6. transcripts


def test_caller_and_assistant_transcripts_are_saved() -> None:
    core, _ = started_core()
    acts = core.openai_message(10 * MS, oa("conversation.item.input_audio_transcription.completed",
                                           item_id="item_u1", content_index=0, transcript="Hey, can you hear me?"))
    assert acts == [SaveTranscript("item_u1", "caller", "Hey, can you hear me?")]
    core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    acts = core.openai_message(12 * MS, transcript_done("item_A", "resp_1", "Loud and clear!"))
    assert acts == [SaveTranscript("item_A", "assistant", "Loud and clear!")]
    # a text-only item (no audio) is saved as is
    acts = core.openai_message(13 * MS, transcript_done("item_T", "resp_2", "Text only."))
    assert acts == [SaveTranscript("item_T", "assistant", "Text only.")]


def test_beta_assistant_transcript_name() -> None:
    core, _ = started_core(SessionParams(dialect="beta"))
    acts = core.openai_message(12 * MS, transcript_done("item_A", "resp_1", "Hello there.", "beta"))
    assert acts == [SaveTranscript("item_A", "assistant", "Hello there.")]


def test_assistant_transcript_after_truncate_is_cut() -> None:
    words = " ".join(f"w{i}" for i in range(1, 21))
    sim = Sim(to_twilio_ms=1, echo_ms=2)
    evs = [ev for ev in schedule(n_deltas=10) if "response.done" not in ev[1]]
    T = 102 * MS + 390 * MS  # 20 frames begun = 400 ms of the 1000 received
    run_until(sim, evs, T)
    info = check_barge_in(sim, T, "item_A")
    assert info["truncate"]["audio_end_ms"] == 400
    acts = sim.openai(T + 5 * MS, transcript_done("item_A", "resp_1", words))
    assert acts == [SaveTranscript("item_A", "assistant", "w1 w2 w3 w4 w5 w6 w7 w8", truncated=True,
                                   audio_end_ms=400)]


# ============================================================== 7. failures


APOLOGY = bytes(range(0, 250, 3)) * 3  # a small stand-in for the apology audio


def apology_msgs(clear: bool) -> list[dict[str, Any]]:
    out = [{"event": "clear", "streamSid": STREAM_SID}] if clear else []
    return out + [{"event": "media", "streamSid": STREAM_SID, "media": {"payload": b64(APOLOGY)}},
                  {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "apology"}}]


def test_openai_refused_after_start_apologises_and_hangs_up_after_the_mark() -> None:
    core = CallCore(SessionParams(), apology_ulaw=APOLOGY)
    tw = TwilioMsgs()
    core.twilio_message(0, tw.start())
    core.twilio_message(5 * MS, tw.media(b64(ulaw(160))))
    acts = core.openai_failed(10 * MS, "connect failed: HTTP 401")
    assert kinds(acts) == ["tw:media", "tw:mark", "Hangup", "CloseOpenAI"]
    assert tw_out(acts) == apology_msgs(clear=False)
    assert acts[2] == Hangup("connect failed: HTTP 401", after_mark="apology")
    assert isinstance(acts[3], CloseOpenAI)
    # the call is over: nothing more goes anywhere, failures are not repeated
    assert core.twilio_message(30 * MS, tw.media(b64(ulaw(160)))) == []
    assert core.openai_failed(31 * MS, "again") == []
    assert core.twilio_message(500 * MS, tw.mark("apology")) == [Hangup("apology played")]
    assert core.twilio_message(500 * MS, tw.mark("apology"))[0].after_mark is None


def test_openai_failed_before_the_stream_started_just_hangs_up() -> None:
    core = CallCore(SessionParams(), apology_ulaw=APOLOGY)
    acts = core.openai_failed(0, "boom")
    assert acts == [Hangup("boom"), CloseOpenAI("boom")]


def test_openai_dropped_mid_reply_clears_then_apologises() -> None:
    sim = Sim(apology=APOLOGY)
    run_until(sim, schedule(), 300 * MS)
    acts = sim.core.openai_failed(300 * MS, "closed: 1011")
    assert kinds(acts) == ["tw:clear", "tw:media", "tw:mark", "Hangup", "CloseOpenAI"]
    assert tw_out(acts) == apology_msgs(clear=True)
    assert acts[3].after_mark == "apology"
    # no truncate, nothing to OpenAI: it is gone
    assert oa_out(acts) == []
    # old marks echoed by the clear are ignored; the apology mark ends the call
    assert sim.core.twilio_message(301 * MS, sim.tw.mark("0:1:800")) == []
    assert sim.core.twilio_message(900 * MS, sim.tw.mark("apology")) == [Hangup("apology played")]


def test_openai_dropped_when_nothing_plays_needs_no_clear() -> None:
    sim = Sim(apology=APOLOGY)
    run_until(sim, schedule(), 3000 * MS)
    acts = sim.core.openai_failed(3000 * MS, "closed")
    assert tw_out(acts) == apology_msgs(clear=False)


def test_no_apology_audio_hangs_up_at_once() -> None:
    core, _ = started_core()
    assert core.openai_failed(0, "x") == [Hangup("x"), CloseOpenAI("x")]


@pytest.mark.parametrize("code", ["session_expired", "beta_api_shape_disabled"])
def test_fatal_openai_errors_apologise(code: str) -> None:
    core, tw = started_core(apology_ulaw=APOLOGY)
    acts = core.openai_message(10 * MS, oa("error", error={"type": "invalid_request_error", "code": code,
                                                           "message": "no", "param": None}))
    assert kinds(acts) == ["tw:media", "tw:mark", "Hangup", "CloseOpenAI"]
    assert tw_out(acts) == apology_msgs(clear=False)
    assert acts[2].after_mark == "apology"
    assert core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160)))) == []


@pytest.mark.parametrize("code", ["response_cancel_not_active", "conversation_already_has_active_response"])
def test_benign_openai_errors_change_nothing(code: str) -> None:
    core, _ = started_core(apology_ulaw=APOLOGY)
    assert core.openai_message(10 * MS, oa("error", error={"type": "invalid_request_error", "code": code,
                                                           "message": "benign", "param": None})) == []
    assert kinds(core.openai_message(11 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160))))) == \
        ["tw:media", "tw:mark"]
    assert core.stats["truncate_errors"] == 0


def test_truncate_too_long_error_is_counted_not_fatal() -> None:
    core, _ = started_core(apology_ulaw=APOLOGY)
    acts = core.openai_message(10 * MS, oa("error", error={
        "type": "invalid_request_error", "code": "invalid_value", "param": None, "event_id": None,
        "message": "Audio content of 9800ms is already shorter than 11579ms"}))
    assert acts == []
    assert core.stats["truncate_errors"] == 1
    assert core.stats["openai_errors"] == 1


# ============================================================== 8. the end


def test_stop_closes_openai_once() -> None:
    core, tw = started_core()
    core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160))))
    assert core.twilio_message(20 * MS, tw.stop()) == [CloseOpenAI("caller hung up")]
    assert core.twilio_closed(21 * MS) == []
    assert core.twilio_message(22 * MS, tw.stop()) == []
    # nothing more goes to either side
    assert core.twilio_message(23 * MS, tw.media(b64(ulaw(160)))) == []
    assert core.openai_message(24 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160)))) == []
    assert core.openai_failed(25 * MS, "closed by us") == []


def test_socket_closed_without_stop_closes_openai() -> None:
    core, _ = started_core()
    acts = core.twilio_closed(5 * MS)
    assert len(acts) == 1 and isinstance(acts[0], CloseOpenAI)
    assert core.twilio_closed(6 * MS) == []


def test_transcode_audio_done_after_stop_sends_nothing() -> None:
    core, tw = started_core(SessionParams(audio_mode="transcode"), transcoder=Transcoder())
    pcm = (np.sin(np.arange(4800) * 2 * np.pi / 24) * 8000).astype("<i2").tobytes()
    core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(pcm)))
    core.twilio_message(20 * MS, tw.stop())
    assert core.openai_message(21 * MS, audio_done("item_A", "resp_1")) == []


# ============================================================== 9. bad input


GOOD_MEDIA = b64(ulaw(160, 5))

BAD_TWILIO: list[str | bytes] = [
    b'{"event": "media"}', b"\x00\xff\x10", "not json", "", "[]", "5", '"media"', "null",
    json.dumps({"event": "bogus"}), json.dumps({"no_event": 1}), json.dumps({"event": 5}),
    json.dumps({"event": ["media"]}), json.dumps({"event": {"a": 1}}),
    json.dumps({"event": "media"}), json.dumps({"event": "media", "media": "x"}),
    json.dumps({"event": "media", "media": {"payload": 5}}), json.dumps({"event": "media", "media": None}),
    json.dumps({"event": "media", "media": {"payload": None}}),
    json.dumps({"event": "media", "media": {"payload": 'AAAA","type":"response.create'}}),
    json.dumps({"event": "media", "media": {"payload": "not base64!"}}),
    json.dumps({"event": "mark"}), json.dumps({"event": "mark", "mark": {}}),
    json.dumps({"event": "mark", "mark": {"name": 5}}), json.dumps({"event": "mark", "mark": {"name": None}}),
    json.dumps({"event": "mark", "mark": ["0:1:1"]}),
    json.dumps({"event": "start"}), json.dumps({"event": "start", "start": []}),
    json.dumps({"event": "start", "start": "x", "streamSid": STREAM_SID}),
    json.dumps({"event": "start", "start": [], "streamSid": STREAM_SID}),
    json.dumps({"event": "dtmf", "dtmf": []}),
]


def test_bad_twilio_messages_are_counted_and_survived() -> None:
    core, tw = started_core()
    for i, msg in enumerate(BAD_TWILIO):
        before = core.stats["twilio_bad"]
        assert core.twilio_message((10 + i) * MS, msg) == [], msg
        assert core.stats["twilio_bad"] == before + 1, msg
    assert core.stream_sid == STREAM_SID
    # good messages still work, on both sides
    assert oa_out(core.twilio_message(100 * MS, tw.media(GOOD_MEDIA))) == [
        {"type": "input_audio_buffer.append", "audio": GOOD_MEDIA}]
    assert kinds(core.openai_message(101 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160))))) == \
        ["tw:media", "tw:mark"]
    assert core.twilio_message(102 * MS, tw.dtmf("7")) == []
    assert core.stats["openai_bad"] == 0


BAD_OPENAI: list[str | bytes] = [
    b"\xff\xfe", "nope", "", "[]", "{}", "7", json.dumps({"type": 5}), json.dumps({"type": None}),
    json.dumps({"type": "response.output_audio.delta"}),
    json.dumps({"type": "response.output_audio.delta", "item_id": "item_X", "response_id": "r", "delta": 5}),
    json.dumps({"type": "response.output_audio.delta", "item_id": ["x"], "delta": "AAAA"}),
    json.dumps({"type": "response.output_audio.delta", "item_id": "item_X", "delta": 'AA","event":"clear'}),
    json.dumps({"type": "response.created"}), json.dumps({"type": "response.created", "response": []}),
    json.dumps({"type": "response.created", "response": {"id": ["r"]}}),
    json.dumps({"type": "response.done"}), json.dumps({"type": "response.done", "response": []}),
    json.dumps({"type": "response.done", "response": "x"}),
    json.dumps({"type": "error", "error": "boom"}), json.dumps({"type": "error", "error": [1, 2]}),
    json.dumps({"type": "response.output_item.added", "item": [1]}),
    json.dumps({"type": "response.output_item.added", "item": {"type": "function_call"}}),
    json.dumps({"type": "conversation.item.input_audio_transcription.completed"}),
    json.dumps({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u",
                "transcript": 5}),
    json.dumps({"type": "response.output_audio_transcript.done"}),
    json.dumps({"type": "response.output_audio_transcript.done", "item_id": "item_A", "transcript": ["x"]}),
    json.dumps({"type": "response.function_call_arguments.done"}),
    json.dumps({"type": "response.function_call_arguments.done", "call_id": "c", "arguments": {"a": 1}}),
    json.dumps({"type": "response.function_call_arguments.done", "call_id": ["c"], "arguments": "{}"}),
]


def test_bad_openai_messages_are_counted_and_survived() -> None:
    core, tw = started_core()
    # an item that has been truncated, so a late transcript of a wrong type would hit the cut
    core.openai_message(5 * MS, audio_delta("item_A", "resp_0", b64(ulaw(1600))))
    core.openai_message(6 * MS, speech_started())
    for i, msg in enumerate(BAD_OPENAI):
        before = core.stats["openai_bad"]
        acts = core.openai_message((10 + i) * MS, msg)
        assert [a for a in acts if not isinstance(a, ToTwilio)] == [], msg
        assert tw_out(acts) == [], msg
        assert core.stats["openai_bad"] == before + 1, msg
    assert core.stats["tool_calls"] == 0
    # unknown (or merely uninteresting) event types are ignored, not "bad"
    before = core.stats["openai_bad"]
    for etype in ("rate_limits.updated", "response.output_audio_transcript.delta", "conversation.item.added",
                  "some.future.event"):
        assert core.openai_message(90 * MS, oa(etype)) == []
    assert core.stats["openai_bad"] == before
    # good messages still work, on both sides
    assert kinds(core.openai_message(100 * MS, audio_delta("item_B", "resp_1", b64(ulaw(160))))) == \
        ["tw:media", "tw:mark"]
    assert core.openai_message(101 * MS, response_created("resp_2")) == []
    assert len(oa_out(core.twilio_message(102 * MS, tw.media(GOOD_MEDIA)))) == 1
    assert core.stats["twilio_bad"] == 0


def test_a_second_start_is_refused() -> None:
    core, tw = started_core()
    other = TwilioMsgs("MZ" + "9" * 32)
    assert core.twilio_message(10 * MS, other.start()) == []  # no second OpenAI session
    assert core.stats["twilio_bad"] == 1
    assert core.stream_sid == STREAM_SID


def test_start_with_an_unsafe_stream_sid_is_refused() -> None:
    core = CallCore(SessionParams())
    assert core.twilio_message(0, TwilioMsgs('MZ"x').start()) == []
    assert core.stats["twilio_bad"] == 1 and core.stream_sid is None
    assert kinds(core.twilio_message(1, TwilioMsgs().start())) == ["CallStarted", "ConnectOpenAI"]


def test_openai_audio_before_the_stream_started_is_survived() -> None:
    core = CallCore(SessionParams())
    acts = core.openai_message(0, audio_delta("item_A", "resp_1", b64(ulaw(160))))
    assert acts == []
    assert core.openai_message(1, audio_done("item_A", "resp_1")) == []


# ------------------------------------------------------------------- fuzzing both sides

_leaf = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(
    _leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["id", "name", "payload", "type", "event", ""]) | st.text(max_size=4), children, max_size=3),
    max_leaves=4,
)
_ids = st.sampled_from(["item_A", "item_B", "fc_1", "resp_1", "call_1", "", "0:1:160"]) | _json
_payloads = st.sampled_from([GOOD_MEDIA, "", "AA==", "AAA=", "====", "A", '"', "\\"]) | st.text(max_size=30) | _json
_marks = st.sampled_from(["0:1:160", "0:1:320", "1:1:160", "0:2:99", "apology", "::", "a:b:c"]) | _json

_twilio_dicts = st.fixed_dictionaries(
    {"event": st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop", "clear", "bogus"]) | _json},
    optional={
        "streamSid": st.sampled_from([STREAM_SID, "MZ1", '"', ""]) | _json,
        "sequenceNumber": st.text(max_size=4) | _json,
        "media": st.fixed_dictionaries({}, optional={"payload": _payloads, "track": _json}) | _json,
        "mark": st.fixed_dictionaries({}, optional={"name": _marks}) | _json,
        "start": st.fixed_dictionaries({}, optional={
            "streamSid": st.sampled_from([STREAM_SID, '"quote', "MZ\\x"]) | _json,
            "callSid": st.sampled_from([CALL_SID]) | _json, "customParameters": _json,
            "mediaFormat": _json}) | _json,
        "dtmf": st.fixed_dictionaries({}, optional={"digit": _json}) | _json,
    },
)
_OA_TYPES = ["response.output_audio.delta", "response.audio.delta", "response.output_audio.done",
             "response.audio.done", "response.output_audio_transcript.done", "response.audio_transcript.done",
             "input_audio_buffer.speech_started", "response.created", "response.done",
             "conversation.item.input_audio_transcription.completed", "response.function_call_arguments.done",
             "response.output_item.added", "session.updated", "error", "rate_limits.updated"]
_openai_dicts = st.fixed_dictionaries(
    {"type": st.sampled_from(_OA_TYPES) | _json},
    optional={
        "item_id": _ids, "response_id": _ids, "call_id": _ids, "name": _json, "arguments": _json,
        "delta": _payloads, "transcript": _json,
        "response": st.fixed_dictionaries({}, optional={"id": _ids, "status": _json}) | _json,
        "error": st.fixed_dictionaries({}, optional={
            "code": st.sampled_from(["session_expired", "response_cancel_not_active", "x"]) | _json,
            "message": st.sampled_from(["Audio content of 1ms is already shorter than 2ms"]) | _json}) | _json,
        "item": st.fixed_dictionaries({}, optional={
            "type": st.sampled_from(["function_call", "message"]) | _json, "id": _ids, "name": _json}) | _json,
    },
)


def _encode(d: Any) -> str:
    return json.dumps(d)


_message = st.one_of(
    st.tuples(st.just("tw"), _twilio_dicts.map(_encode)),
    st.tuples(st.just("oa"), _openai_dicts.map(_encode)),
    st.tuples(st.sampled_from(["tw", "oa"]), st.text(max_size=40) | st.binary(max_size=40)),
    st.tuples(st.sampled_from(["tw", "oa"]), _json.map(_encode)),
    # the driver hands back the call_id of a RunTool: always a string
    st.tuples(st.just("tool"), st.tuples(st.sampled_from(["call_1", "call_2", ""]) | st.text(max_size=6),
                                         st.text(max_size=10))),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(["none", "started", "ready"]), mode=st.sampled_from(["passthrough", "transcode"]),
       dialect=st.sampled_from(["ga", "beta"]), msgs=st.lists(_message, max_size=20))
def test_fuzz_both_sides_never_raise(prefix: str, mode: str, dialect: str, msgs: list[tuple[str, Any]]) -> None:
    core = CallCore(SessionParams(audio_mode=mode, dialect=dialect),  # type: ignore[arg-type]
                    transcoder=Transcoder() if mode == "transcode" else None, apology_ulaw=b"\x7f" * 160)
    tw = TwilioMsgs()
    if prefix != "none":
        core.twilio_message(0, tw.start())
        core.openai_opened(1)
    if prefix == "ready":
        core.openai_message(2, session_updated())
    t = 10 * MS
    for side, data in msgs:
        t += 7 * MS
        if side == "tw":
            acts = core.twilio_message(t, data)
        elif side == "oa":
            acts = core.openai_message(t, data)
        else:
            acts = core.tool_result(t, *data)
        for a in acts:
            if isinstance(a, (ToTwilio, ToOpenAI)):
                msg = json.loads(a.text)  # always valid JSON
                assert isinstance(msg, dict)
                if isinstance(a, ToTwilio):
                    assert msg["event"] in ("media", "mark", "clear")
                    assert isinstance(msg["streamSid"], str)
                    if msg["event"] == "media":
                        base64.b64decode(msg["media"]["payload"], validate=True)
                else:
                    assert isinstance(msg["type"], str)
                    if msg["type"] == "input_audio_buffer.append":
                        assert msg["audio"] and base64.b64decode(msg["audio"], validate=True)
            elif isinstance(a, SaveTranscript):
                assert isinstance(a.text, str)
            elif isinstance(a, RunTool):
                assert isinstance(a.arguments, str) and isinstance(a.name, str)
    # still alive: a well-formed call works afterwards unless it has ended
    if not core.ending and core.stream_sid == STREAM_SID and core.openai_ready:
        acts = core.twilio_message(t + MS, tw.media(GOOD_MEDIA))
        assert len(acts) <= 1


# ============================================================== 10. transcode mode


def tone_ulaw(n_samples: int, freq: float = 1000.0, amp: float = 8000.0, rate: int = 8000) -> bytes:
    """μ-law of a sine (a small standalone G.711 encoder; exactness is not the point here)."""
    x = (amp * np.sin(2 * np.pi * freq * np.arange(n_samples) / rate)).astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.floor(np.log2(mag)).astype(np.int32) - 7
    mant = (mag >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


def ulaw_to_lin(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.float64)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_transcode_inbound_frames_become_pcm16_24k_appends() -> None:
    core, tw = started_core(SessionParams(audio_mode="transcode"), transcoder=Transcoder())
    n = 50
    signal = tone_ulaw(160 * n)
    pcm = b""
    appends = 0
    for i in range(n):
        acts = core.twilio_message((100 + 20 * i) * MS, tw.media(b64(signal[160 * i:160 * (i + 1)])))
        for m in oa_out(acts):
            assert m["type"] == "input_audio_buffer.append"
            chunk = base64.b64decode(m["audio"], validate=True)
            assert chunk and len(chunk) % 2 == 0
            pcm += chunk
            appends += 1
    assert core.stats["frames_in"] == n
    assert appends >= n // 4
    # 3 × the samples, 2 bytes each: 960 bytes per 20 ms frame, less what the resampler withholds
    latency_bytes = int(Transcoder().latency_ms * 48) + 2
    assert 960 * n - latency_bytes <= len(pcm) <= 960 * n
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert abs(dominant_hz(x[2400:], 24000) - 1000) < 15
    ref = ulaw_to_lin(signal)
    assert 0.8 < np.sqrt(np.mean(x[2400:] ** 2)) / np.sqrt(np.mean(ref ** 2)) < 1.2


def test_transcode_early_frames_are_converted_too() -> None:
    core = CallCore(SessionParams(audio_mode="transcode"), transcoder=Transcoder())
    tw = TwilioMsgs()
    core.twilio_message(0, tw.start())
    signal = tone_ulaw(160 * 10)
    for i in range(10):
        assert core.twilio_message(i * FRAME_NS, tw.media(b64(signal[160 * i:160 * (i + 1)]))) == []
    core.openai_opened(300 * MS)
    msgs = oa_out(core.openai_message(301 * MS, session_updated()))
    pcm = b"".join(base64.b64decode(m["audio"]) for m in msgs)
    assert all(m["type"] == "input_audio_buffer.append" and m["audio"] for m in msgs)
    ref = Transcoder()
    assert pcm == b"".join(ref.inbound(signal[160 * i:160 * (i + 1)]) for i in range(10))


def pcm_tone(n_samples: int, freq: float = 600.0, amp: float = 9000.0, phase0: int = 0) -> bytes:
    t = np.arange(phase0, phase0 + n_samples)
    return (amp * np.sin(2 * np.pi * freq * t / 24000)).astype("<i2").tobytes()


def test_transcode_outbound_deltas_become_ulaw_media_and_done_flushes() -> None:
    sim = Sim(SessionParams(audio_mode="transcode"), transcoder=Transcoder())
    n_deltas, per = 8, 2400  # 100 ms each
    sim.openai(100 * MS, response_created("resp_1"))
    for i in range(n_deltas):
        sim.openai((101 + i * 10) * MS, audio_delta("item_A", "resp_1", b64(pcm_tone(per, phase0=i * per))),
                   "item_A")
    before_done = sim.pb.queued("item_A")
    assert 0 < before_done < n_deltas * per // 3
    acts = sim.openai(200 * MS, audio_done("item_A", "resp_1"), "item_A")
    assert kinds(acts) == ["tw:media", "tw:mark"]
    total = sim.pb.queued("item_A")
    assert total == n_deltas * per // 3  # 24 kHz → 8 kHz: a third of the samples, 1 byte each
    assert tw_out(acts)[1]["mark"]["name"] == f"0:1:{total}"
    ulaw_all = b"".join(base64.b64decode(m["media"]["payload"]) for m in sim.pb.media_msgs)
    y = ulaw_to_lin(ulaw_all)
    assert abs(dominant_hz(y[400:], 8000) - 600) < 10
    assert sim.core.items["item_A"].received == n_deltas * per * 2
    # barge-in: heard vs received in the right units (μ-law 8 B/ms vs pcm16 48 B/ms)
    T = 101 * MS + 1 * MS + 250 * MS
    info = check_barge_in(sim, T, "item_A")  # within 20 ms of the model, ≤ received (in 48 B/ms)
    assert info["heard_ms"] == 260  # 13 frames begun


def test_transcode_barge_in_resets_the_outbound_resampler() -> None:
    sim = Sim(SessionParams(audio_mode="transcode"), transcoder=Transcoder())
    sim.openai(100 * MS, response_created("resp_1"))
    for i in range(5):
        sim.openai((101 + i) * MS, audio_delta("item_A", "resp_1", b64(pcm_tone(2400, phase0=i * 2400))), "item_A")
    sim.openai(150 * MS, speech_started())
    # the cancelled response's last deltas and its audio.done do not reach Twilio
    n_media = len(sim.pb.media_msgs)
    assert sim.openai(151 * MS, audio_delta("item_A", "resp_1", b64(pcm_tone(2400))), "item_A") == []
    assert sim.openai(152 * MS, audio_done("item_A", "resp_1"), "item_A") == []
    assert len(sim.pb.media_msgs) == n_media
    # the next reply starts from a clean resampler: same bytes as a fresh Transcoder gives
    ref = Transcoder()
    deltas = [pcm_tone(2400, freq=400, phase0=i * 2400) for i in range(4)]
    expect = [ref.outbound(d) for d in deltas] + [ref.outbound_flush()]
    got = []
    sim.openai(400 * MS, response_created("resp_2"))
    for i, d in enumerate(deltas):
        got.append(b"".join(base64.b64decode(m["media"]["payload"])
                            for m in tw_out(sim.openai((401 + i) * MS, audio_delta("item_B", "resp_2", b64(d)),
                                                       "item_B")) if m["event"] == "media"))
    got.append(b"".join(base64.b64decode(m["media"]["payload"])
                        for m in tw_out(sim.openai(410 * MS, audio_done("item_B", "resp_2"), "item_B"))
                        if m["event"] == "media"))
    assert got == expect
