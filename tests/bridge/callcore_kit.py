"""The kit for the sans-IO tests of ``callsim.bridge.call.CallCore`` (the ``test_call_core_*`` files).

Everything here is independent of ``simulator``: Twilio and OpenAI messages are written
by hand as dicts (shapes from /work/shared/protocols.md 1.2, 1.3, 2.3, 2.4), and Twilio's
outbound playback is modelled by :class:`TwilioPlayback` — a FIFO of μ-law bytes
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
from callsim.bridge.call import (
    CallCore,
    ToOpenAI,
    ToTwilio,
)
from callsim.bridge.realtime import SessionParams

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


def marks(actions: list) -> list[str]:
    """The names of the marks among ``actions``, in order."""
    return [m["mark"]["name"] for m in tw_out(actions) if m["event"] == "mark"]


def reply(core: Any, t: int, resp: str, item: str, n: int = 800) -> list:
    """A response with one audio delta of ``n`` μ-law bytes (``n``/8 ms), created and done at ``t``."""
    out = core.openai_message(t, response_created(resp))
    out += core.openai_message(t + 1 * MS, audio_delta(item, resp, b64(ulaw(n))))
    out += core.openai_message(t + 2 * MS, response_done(resp))
    return out


def call_tool(core: Any, t: int, resp: str, name: str, reason: str) -> list:
    """The model calls ``name`` (``{"reason": reason}``) in response ``resp``; for the tools the core
    answers itself (end_call, transfer_call), so no RunTool comes out."""
    out = core.openai_message(t, json.dumps({
        "type": "response.function_call_arguments.done", "response_id": resp, "item_id": "fc_1",
        "call_id": "call_1", "name": name, "arguments": json.dumps({"reason": reason})}))
    assert "RunTool" not in kinds(out)
    return out


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


# ============================================================== a reply, and a barge-in into it


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


# ============================================================== a tool call, and the apology


def tool_events(call_id: str, item: str, name: str, args: str, resp: str, dialect: str = "ga") -> list[str]:
    added = oa("response.output_item.added", response_id=resp, output_index=0,
               item={"id": item, "type": "function_call", "status": "in_progress", "name": name,
                     "call_id": call_id, "arguments": ""})
    done_fields: dict[str, Any] = {"response_id": resp, "item_id": item, "output_index": 0, "call_id": call_id,
                                   "arguments": args}
    if dialect == "ga":
        done_fields["name"] = name
    return [added, oa("response.function_call_arguments.done", **done_fields)]


APOLOGY = bytes(range(0, 250, 3)) * 3  # a small stand-in for the apology audio


def apology_msgs(clear: bool) -> list[dict[str, Any]]:
    out = [{"event": "clear", "streamSid": STREAM_SID}] if clear else []
    return out + [{"event": "media", "streamSid": STREAM_SID, "media": {"payload": b64(APOLOGY)}},
                  {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "apology"}}]
