"""`callsim dial` as the caller of an agent whose bridge ends the call over Twilio's REST API, all
offline: callsim dial → the emulator (REST, call legs, tunnels) → a "TwiML Bin" webhook → the
foreign careful.py bridge (its REST hang-up or transfer pointed at the emulator) → the mock OpenAI.

What the caller sees is what Twilio would show it: after the agent's second reply the stream ends
with ``stop`` (report: ``dial.ended_by`` ``far_end_hung_up``, scenario ``end_reason`` ``closed_by_app``);
a transfer is heard as the agent, then "Transferring you now.", then the transfer target, then
``stop``, and the calls' records are the ones Twilio keeps (fetched with the twilio client). A
bridge that closes its socket ends the call the same way for the caller, with no REST request
(control). ``--record`` fetches the dual-channel recording into the report.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import trio
from callsim.simulator.audio.codec import FRAME_BYTES, is_silent
from callsim.simulator.cli import main
from callsim.simulator.mock.behaviour import Behaviour, Fault, ThinkTime
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.twilio_emu.calls import CallEvent
from callsim.simulator.twilio_emu.numbers import PhoneNumber
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_emulator
from callsim.simulator.twilio_emu.speech import synthesize
from callsim.simulator.twilio_emu.tunnels import Tunnels, parse_tunnel
from twilio.rest import Client

from tests.foreign.launch import running_foreign_bridge
from tests.twilio_emu.test_dial_e2e import Router
from tests.twilio_emu.test_legs_e2e import webhook

from .emulator import SID, TOKEN, no_proxy_env
from .stack import AGENT, DESK, DESK_SAY, TESTER, free_port  # DESK: launch.REST_BRIDGES' --transfer-to

AGENT_PUBLIC = "wss://agent.example"
TRANSFER_SAY = "Transferring you now."
SCENARIO = """name = "until_the_agent_ends_it"
[caller]
steps = [
  { wait_for_reply = { quiet_ms = 600, timeout_ms = 8000 } },
  { say = "caller_greeting" },
  { wait_for_reply = { quiet_ms = 600, timeout_ms = 8000 } },
  { pause_ms = 15000 },
  { hangup = true },
]
[expect]
end_reason = "closed_by_app"
"""


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)


@contextmanager
def agent_side(bridge: str, dial_port: int, behaviour: Behaviour | None = None) -> Iterator[tuple[RestCore, str, list]]:
    """In a thread of its own (callsim dial runs its own trio.run): the mock, the foreign bridge,
    the numbers' webhooks and the emulator; yields (core, emulator URL, store events seen)."""
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    events: list[CallEvent] = []
    router = Router({
        "/agent": f'<Response><Connect><Stream url="{AGENT_PUBLIC}/media-stream"/></Connect></Response>',
        "/desk": f"<Response><Say>{DESK_SAY}</Say><Hangup/></Response>",
    })
    emu_port = free_port()

    async def serve() -> None:
        try:
            cfg = MockConfig(any_key=True, behaviour=behaviour or Behaviour(think=ThinkTime("fixed", 200.0), seed=3))
            async with running_mock(cfg) as mock, webhook(router) as hooks:
                env = {"TWILIO_API_URL": f"http://127.0.0.1:{emu_port}", "TWILIO_ACCOUNT_SID": SID,
                       "TWILIO_AUTH_TOKEN": TOKEN, **no_proxy_env({})}
                async with running_foreign_bridge(bridge, mock.realtime_url, env=env) as ws_url:
                    origin = ws_url.rsplit("/", 1)[0]
                    tunnels = Tunnels([parse_tunnel(f"{AGENT_PUBLIC}={origin}"),
                                       parse_tunnel(f"wss://dial.example=ws://127.0.0.1:{dial_port}")])
                    core = RestCore(SID, TOKEN, clock=time.time, numbers=[
                        PhoneNumber(AGENT, f"{hooks}/agent"), PhoneNumber(DESK, f"{hooks}/desk")])
                    core.store.listeners.append(events.append)
                    async with serve_emulator(core, port=emu_port, tunnels=tunnels) as url:
                        ready.put((core, url))
                        await trio.to_thread.run_sync(stop.wait)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            ready.put(exc)
            raise

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    got = ready.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    try:
        yield got[0], got[1], events
    finally:
        stop.set()
        thread.join(20)


def dial(tmp_path: Path, url: str, port: int, *extra: str) -> tuple[int, Path]:
    scenario = tmp_path / "until_the_agent_ends_it.toml"
    scenario.write_text(SCENARIO)
    report = tmp_path / "report"
    rc = main(["dial", "--to", AGENT, "--from", TESTER, "--scenario", str(scenario),
               "--public-url", "wss://dial.example/stream", "--twilio-api-url", url, "--port", str(port),
               "--report", str(report), "--stream-timeout-s", "20", "--max-duration-s", "60", *extra])
    return rc, report


def client_for(url: str) -> Client:
    c = Client(SID, TOKEN)
    c.api.base_url = url
    return c


def frames(audio: bytes) -> list[bytes]:
    return [audio[i:i + FRAME_BYTES] for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES)]


def first_at(heard: list[bytes], phrase: bytes) -> int | None:
    """Index of the heard frame where ``phrase`` (μ-law, queued from a frame boundary) begins,
    found by its first voiced frames, in order; silent frames between them are skipped (a stall
    of the machine under load inserts silence on the line without changing what plays)."""
    pf = frames(phrase)
    k = next(i for i, f in enumerate(pf) if not is_silent(f))
    probe = pf[k:k + 5]
    for i, f in enumerate(heard):
        if f != probe[0]:
            continue
        j, rest = i + 1, probe[1:]
        while rest and j < len(heard):
            if heard[j] == rest[0]:
                rest = rest[1:]
            elif not is_silent(heard[j]):
                break
            j += 1
        if not rest:
            return i - k
    return None


def report_of(report: Path) -> dict:
    return json.loads((report / "report.json").read_text())


def test_a_bridge_that_hangs_up_over_rest_is_seen_as_the_far_end_hanging_up(tmp_path, capsys):
    port = free_port()
    with agent_side("rest_hangup", port) as (core, url, events):
        rc, report = dial(tmp_path, url, port)
        calls = client_for(url).calls.list()
    err = capsys.readouterr().err
    data = report_of(report)
    (a,) = [c for c in calls if c.direction == "outbound-api"]
    (b,) = [c for c in calls if c.direction == "inbound"]
    assert rc == 0, err
    assert (a.status, b.status) == ("completed", "completed") and len(calls) == 2
    assert [e.sid for e in events if e.kind == "hung_up"][0] == b.sid  # the bridge's REST hang-up, first
    assert data["meta"]["dial"]["ended_by"] == "far_end_hung_up"
    assert "the far end hung up" in err
    (exp,) = data["meta"]["scenarios"][0]["expectations"]
    assert (exp["name"], exp["status"]) == ("end_reason", "passed")
    assert data["calls"][0]["end_reason"] == "closed_by_app"
    # it ended after the second reply, well before the scenario's own 15 s pause ran out
    assert data["meta"]["dial"]["marks"]["echoed"] >= 1 and int(a.duration) < 14


def test_a_bridge_that_transfers_over_rest_is_heard_saying_so_then_the_front_desk(tmp_path, capsys):
    port = free_port()
    with agent_side("rest_transfer", port) as (core, url, events):
        rc, report = dial(tmp_path, url, port, "--record")
        client = client_for(url)
        calls = client.calls.list()
        recs = client.recordings.list(call_sid=calls[-1].sid)
    err = capsys.readouterr().err
    data = report_of(report)
    by = {(c.direction, c.to): c for c in calls}
    a, b = by["outbound-api", AGENT], by["inbound", AGENT]
    child, desk = by["outbound-dial", DESK], by["inbound", DESK]
    assert rc == 0, err
    assert len(calls) == 4 and {c.status for c in calls} == {"completed"}
    assert (child.parent_call_sid, child._from) == (b.sid, TESTER) and desk._from == TESTER
    assert not [e for e in events if e.kind == "hung_up"]  # transferred, never hung up over REST
    (redirect,) = [e for e in events if e.kind == "redirected"]
    assert redirect.sid == b.sid and "<Dial>" in redirect.instructions.twiml
    assert data["meta"]["dial"]["ended_by"] == "far_end_hung_up"
    # what the caller heard: the agent, then the Say of the transfer, then the front desk
    (call_dir,) = [p for p in (report / "calls").iterdir() if p.is_dir()]
    heard = frames((call_dir / "heard.ulaw").read_bytes())
    transfer = trio.run(synthesize, TRANSFER_SAY)
    desk_audio = trio.run(synthesize, DESK_SAY)
    at_transfer, at_desk = first_at(heard, transfer), first_at(heard, desk_audio)
    assert at_transfer is not None and at_desk is not None
    agent_voiced = [i for i, f in enumerate(heard[:at_transfer]) if not is_silent(f)]
    assert len(agent_voiced) * 20 > 1000  # the agent's replies came first
    assert at_transfer + len(frames(transfer)) <= at_desk
    # --record: the dual-channel recording, fetched into the report
    (rec,) = recs
    entry = data["meta"]["dial"]["recording"]
    assert entry == {"sid": rec.sid, "duration_s": int(rec.duration), "channels": 2, "file": "recording.wav"}
    audio, rate = sf.read(report / "recording.wav", dtype="int16")
    assert rate == 8000 and audio.shape[1] == 2
    assert abs(len(audio) / 8000 - int(a.duration)) <= 1.5
    caller_ch, called_ch = np.abs(audio[:, 0]).astype(int), np.abs(audio[:, 1]).astype(int)
    # channel 1 holds the caller's utterance, channel 2 the agent and the front desk, heard apart
    assert (caller_ch > 1000).sum() > 4000 and (called_ch > 1000).sum() > 8000
    assert ((caller_ch > 1000) & (called_ch > 1000)).sum() < 0.2 * (caller_ch > 1000).sum()


def test_a_bridge_that_closes_its_socket_ends_the_call_as_before(tmp_path, capsys):
    port = free_port()
    expire = Behaviour(think=ThinkTime("fixed", 200.0), seed=3, faults=(Fault("expire", after_ms=6000),))
    with agent_side("careful", port, expire) as (core, url, events):
        rc, report = dial(tmp_path, url, port)
        calls = client_for(url).calls.list()
    err = capsys.readouterr().err
    data = report_of(report)
    assert rc == 0, err
    assert {c.status for c in calls} == {"completed"} and len(calls) == 2
    assert not [e for e in events if e.kind in ("hung_up", "redirected")]  # no REST request ended it
    assert data["meta"]["dial"]["ended_by"] == "far_end_hung_up"
    assert data["calls"][0]["end_reason"] == "closed_by_app"
