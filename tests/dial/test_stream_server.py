"""Callsim's stream server for `callsim dial`, driven by a Twilio-side client on 127.0.0.1 in real time:
signatures, the stream's token and call SID, the scenario played on the line, the line's figures
(turn latency from the mark's echo, greeting latency, barge-in reaction, continuity), mock-only
expectations skipped with the reason, and the reports."""

from __future__ import annotations

import dataclasses
import json

import httpx
import pytest
import trio
from callsim.simulator.caller.script import Hangup, Pause, Say, WaitForAudio, WaitForReply
from callsim.simulator.caller.webhook import sign
from callsim.simulator.dial.request import DialRequest
from callsim.simulator.dial.stream_server import DialStreamServer
from callsim.simulator.dial.verdict import LINE_UNMEASURED, SKIP_ON_A_LINE, dial_summary, judge_line, outcome, write_dial_report
from callsim.simulator.net.wsconn import ConnectionRejected
from callsim.simulator.scenario import Expectations, find_scenario

from .fake_twilio import AUTH, PUBLIC, agent, run_agent

CALL = "CA" + "cd" * 16
TOKEN = "tok-" + "x" * 20


def scenario(steps=None, **expect):
    base = find_scenario("greeting_two_turns")
    steps = steps or (WaitForReply(quiet_ms=500, timeout_ms=5000), Say("caller_stop"),
                      WaitForReply(quiet_ms=500, timeout_ms=6000), Hangup())
    return dataclasses.replace(base, steps=tuple(steps), requires=(), expect=Expectations(**expect))


def request() -> DialRequest:
    return DialRequest.checked(to="+15551234567", from_="+15550001111", scenario="greeting_two_turns",
                               public_url=PUBLIC, max_duration_s=60, token=TOKEN)


#: the agent: greets after 300 ms, answers 400 ms after hearing 300 ms of quiet
AGENT_TWO_TURNS = (Pause(300), Say("assistant_short_reply"), WaitForReply(quiet_ms=300, timeout_ms=8000),
                   Pause(400), Say("assistant_short_reply"), WaitForReply(quiet_ms=300, timeout_ms=8000))


async def serve(nursery, sc, judge=None, call_sid=CALL) -> DialStreamServer:
    server = DialStreamServer(request(), sc, AUTH, call_sid=lambda: call_sid, judge=judge)
    await nursery.start(server.serve)
    return server


async def test_turn_latency_runs_from_the_marks_echo_not_the_send():
    """Twilio plays what callsim sends 400 ms late: the turn is measured from when our speech ended
    on the line (the echo), so the agent's 300 ms quiet + 400 ms pause + 200 ms lead is what shows."""
    sc = scenario(turn_latency_p95_ms=1500, transcript_contains=["stop"], no_underruns=True,
                  end_reason="hangup", heard_min_ms=4500, heard_goodbye=True)
    async with trio.open_nursery() as nursery:
        server = await serve(nursery, sc)
        with trio.fail_after(30):
            twilio = await run_agent(server.port, agent(AGENT_TWO_TURNS, call_sid=CALL, token=TOKEN), delay_ms=400)
            ok, why = await server.run_call()  # noqa: F841
        nursery.cancel_scope.cancel()
    line, result = server.line, server.result
    assert line is not None and result is not None and result.error is None
    assert line.unechoed == 0 and len(line.marks) == 4
    run = judge_line(sc, result, line)
    (m,) = run.metrics
    (turn,) = m.turns
    assert 800 <= turn.latency_ms <= 1150, turn.latency_ms  # from the send it would be ~400 ms more
    # the agent heard our speech end when the echo says, 400 ms after it was sent
    mark = next(mk for mk in line.marks.values() if mk.name.startswith("speech_end"))
    assert 380 <= (mark.echo_ns - mark.sent_ns) / 1e6 <= 480
    assert turn.speech_end_ns == mark.echo_ns
    g = dial_summary(line, [], None)["greeting_ms"]
    assert 450 <= g <= 650, g  # the agent's 300 ms pause + its reply's 200 ms of leading silence
    by = {e.name: e for e in run.expectations}
    assert by["turn_latency_p95_ms"].status == "passed"
    assert by["transcript_contains"].status == "skipped" and by["transcript_contains"].message == SKIP_ON_A_LINE
    assert by["end_reason"].status == "passed"
    # a bridge's underruns never reach the line (Twilio plays silence): reported, not judged
    assert (by["no_underruns"].status, by["no_underruns"].message) == ("skipped", LINE_UNMEASURED["no_underruns"])
    # two replies of 2385 ms each (4770 ms as callsim call counts them); the line hears their voice only
    for name in ("heard_min_ms", "heard_goodbye"):
        assert (by[name].status, by[name].message) == ("skipped", LINE_UNMEASURED[name])
    assert 3800 <= dial_summary(line, [], None)["heard_voiced_ms"] <= 4000  # 2 × 98 voiced frames
    assert all(d["status"] != "failed" for d in m.expectations) and m.status == "passed"
    assert outcome(run)[0] and twilio.inner.timeline  # the agent ran
    assert line.continuity.frames > 200 and line.continuity.gap_ms == 0


async def test_the_report_files_are_written(tmp_path):
    sc = scenario(turn_latency_p95_ms=1500, transcript_contains=["stop"])
    async with trio.open_nursery() as nursery:
        server = await serve(nursery, sc)
        with trio.fail_after(30):
            await run_agent(server.port, agent(AGENT_TWO_TURNS, call_sid=CALL, token=TOKEN))
            await server.run_call()
        nursery.cancel_scope.cancel()
    run = judge_line(sc, server.result, server.line)
    paths = write_dial_report(tmp_path, run, dial_summary(server.line, [{"status": "answered"}], None), "callsim dial")
    assert {p.name for p in tmp_path.iterdir()} >= {"report.json", "junit.xml", "report.html", "calls"}
    report = json.loads(paths["json"].read_text())
    assert report["meta"]["dial"]["call_sid"] == CALL and report["meta"]["dial"]["greeting_ms"] > 0
    assert report["summary"]["turns"] == 1
    assert "skipped" in paths["junit"].read_text()


async def test_an_unsigned_or_wrongly_signed_upgrade_is_refused_403():
    async with trio.open_nursery() as nursery:
        server = await serve(nursery, scenario())
        for auth, url in ((None, PUBLIC), ("wrong-token", PUBLIC), (AUTH, f"ws://127.0.0.1:{server.port}/stream")):
            with pytest.raises(ConnectionRejected) as exc:
                await run_agent(server.port, agent(AGENT_TWO_TURNS, call_sid=CALL, token=TOKEN), auth=auth,
                                signed_url=url)
            assert exc.value.status_code == 403
        assert [r.what for r in server.refusals] == ["stream upgrade"] * 3
        assert "does not match wss://dial.example/stream" in server.refusals[1].why
        assert not server._accepted.is_set()
        nursery.cancel_scope.cancel()


async def test_a_wrong_token_is_closed_while_the_right_stream_still_runs():
    sc = scenario(steps=(Pause(200), Say("caller_stop"), Pause(300), Hangup()))
    async with trio.open_nursery() as nursery:
        server = await serve(nursery, sc)
        with trio.fail_after(20):
            intruder = await run_agent(server.port, agent((Pause(2000),), call_sid=CALL, token="guess"))
            other_call = await run_agent(server.port, agent((Pause(2000),), call_sid="CA" + "ee" * 16, token=TOKEN))
            assert not server._accepted.is_set()
            await run_agent(server.port, agent((Pause(3000),), call_sid=CALL, token=TOKEN))
            await server.wait()
            await server.run_call()
        nursery.cancel_scope.cancel()
    assert intruder.inner.end_reason == "closed_by_app" and other_call.inner.end_reason == "closed_by_app"
    whys = [r.why for r in server.refusals]
    assert "wrong callsim_token" in whys[0] and f"is not the dialled call {CALL}" in whys[1]
    assert server.line.start.call_sid == CALL and server.line.core.end_reason == "hangup"


async def test_status_callbacks_are_checked_and_recorded():
    async with trio.open_nursery() as nursery:
        server = await serve(nursery, scenario())
        url = "https://dial.example/dial-status"
        form = {"CallSid": CALL, "CallStatus": "ringing", "SequenceNumber": "1"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            good = await http.post("/dial-status", data=form, headers={"X-Twilio-Signature": sign(AUTH, url, form)})
            bad = await http.post("/dial-status", data={**form, "CallStatus": "completed"},
                                  headers={"X-Twilio-Signature": sign(AUTH, url, form)})
            unsigned = await http.post("/dial-status", data=form)
            other = await http.get("/nothing")
        nursery.cancel_scope.cancel()
    assert (good.status_code, bad.status_code, unsigned.status_code, other.status_code) == (204, 403, 403, 404)
    assert [s["status"] for s in server.statuses] == ["ringing"]
    assert [r.what for r in server.refusals] == ["status callback"] * 2


async def test_barge_in_reaction_is_when_the_agents_voice_stops_on_the_line():
    """The agent's long reply is cut when it hears us (a hand-driven stop: the scripted agent
    is replaced by its hang-up, which stops its audio); talk-over and reaction come from the inbound audio."""
    sc = scenario(steps=(WaitForAudio(after_ms=1500, timeout_ms=5000), Say("caller_barge_in"),
                         Pause(500), Hangup()),
                  barge_ins=1, barge_in_clear_max_ms=1500, talk_over_max_ms=1500, truncate_error_max_ms=60)
    async with trio.open_nursery() as nursery:
        server = await serve(nursery, sc)
        core = agent((Say("assistant_long_reply"),), call_sid=CALL, token=TOKEN)

        async def cut_when_heard() -> None:
            # the agent "reacts": 600 ms after our speech reaches it, its voice stops (the stream stays up)
            while not any(e.kind == "audio_onset" for e in core.timeline):
                await trio.sleep(0.01)
            await trio.sleep(0.6)
            core.script[:] = []
            core._step = Pause(60_000)
            core._step_mark = core._step_tick = 0

        nursery.start_soon(cut_when_heard)
        with trio.fail_after(30):
            await run_agent(server.port, core)
            await server.run_call()
        nursery.cancel_scope.cancel()
    run = judge_line(sc, server.result, server.line)
    (m,) = run.metrics
    (b,) = m.barge_ins
    # our speech starts 200 ms into the fixture; the agent stops 600 ms after it heard the first frame
    assert 300 <= b.clear_ms <= 650, b.clear_ms
    assert abs(b.talk_over_ms - b.clear_ms) <= 40
    by = {e.name: e for e in run.expectations}
    assert by["barge_ins"].status == "passed" and by["barge_in_clear_max_ms"].status == "passed"
    assert by["truncate_error_max_ms"].message == SKIP_ON_A_LINE
