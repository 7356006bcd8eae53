"""Scenario ``transfer`` end to end, offline: callsim dial → the Twilio emulator → our bridge
(``TRANSFER_NUMBER`` = the front desk, set by the test as a deployment would: a dial applies no
``[bridge]`` table; the emulator's account for its REST requests) → the mock.

The caller asks for a person; the mock calls ``transfer_call`` then says the pre-transfer phrase
(``assistant_transferring``); our bridge waits for the mark after it, then redirects its leg with
``<Say>Connecting your call.</Say><Dial><Number>+15550009999</Number></Dial>``. What the caller sees
is what Twilio shows it: the phrase, Twilio's Say, the front desk ("TwiML Bin": Say + Hangup), then
``stop``; Twilio's records hold a child call to the desk (``transferred_to``, read with the twilio
client by ``callsim dial``).

The controls: our bridge with the REST request skipped (it believes it transferred): the scenario
fails on ``transferred_to``; and one that redirects as soon as the phrase has *arrived* (its
``response.done``) instead of when its mark comes back: Twilio drops the phrase still queued for
the agent's stream. A line cannot tell a cut reply from a whole one without knowing the reply
(``heard_goodbye`` is skipped on a line for that reason), so this control is judged on the line's
heard audio against the one reply it can know: the mock's own μ-law of the phrase, which our
bridge forwards bit-exact in passthrough and the emulator plays as received. Its voiced part is
found whole in ``heard.ulaw`` for our bridge, and only its beginning for the control.
"""

from __future__ import annotations

import json

import pytest
import trio
from callsim.simulator.audio.codec import is_silent
from callsim.simulator.cli import main
from callsim.simulator.mock.audio import fixture_audio
from callsim.simulator.runner import run_embedded
from callsim.simulator.scenario import find_scenario
from callsim.simulator.twilio_emu.speech import synthesize
from twilio.rest import Client

from .stack import DESK, DESK_SAY, SID, TOKEN, dial_stack, with_seed

pytestmark = pytest.mark.slow

PHRASE = "assistant_transferring"
CONNECTING = "Connecting your call."  # the bridge's default TRANSFER_SAY


def run_dial(tmp_path, hook: str = "callsim.bridge.server:embedded"):
    scenario = with_seed(find_scenario("transfer"))
    report = tmp_path / "report"
    with dial_stack(scenario, tmp_path, hook=hook, bridge={"transfer_number": DESK}) as stack:
        rc = main(stack.dial_args("transfer", report))
        client = Client(SID, TOKEN)
        client.api.base_url = stack.api_url
        calls = client.calls.list()
        snaps = stack.mock_snapshots()
    data = json.loads((report / "report.json").read_text())
    (call_dir,) = [p for p in (report / "calls").iterdir() if p.is_dir()]
    heard = (call_dir / "heard.ulaw").read_bytes()
    return rc, data, calls, snaps, heard


def expectation(data: dict, name: str) -> dict:
    return next(e for e in data["meta"]["scenarios"][0]["expectations"] if e["name"] == name)


def voiced_frames(audio: bytes) -> list[tuple[int, bytes]]:
    """``audio``'s voiced 20 ms frames, with their byte offsets."""
    return [(i, audio[i:i + 160]) for i in range(0, len(audio) - 159, 160) if not is_silent(audio[i:i + 160])]


def heard_of(phrase: bytes, heard: bytes) -> tuple[int, int, int]:
    """(voiced frames of ``phrase`` the caller heard, in order, of how many, where it began in ``heard``).

    Each voiced frame of the phrase is looked for (bytes, any alignment) anywhere after the one
    before it: audio that came late (a stall of the machine inserts silence on the line, for as
    long as it lasts) shifts what follows without cutting it, while a phrase cut off never plays
    its later frames at all — a voiced 160-byte μ-law frame does not turn up by chance elsewhere.
    Only voiced frames: the line feeds callsim's recording only what is not silence, so the
    phrase's near-silent frames are the idle line there.
    """
    frames = voiced_frames(phrase)
    first, probe = frames[0]
    at = heard.find(probe)
    if at < 0:
        return 0, len(frames), -1
    got, pos, prev = 0, at, first
    for off, f in frames:
        found = heard.find(f, pos + (off - prev))
        if found >= 0:
            got, pos, prev = got + 1, found, off
    return got, len(frames), at


def test_transfer_passes_against_our_bridge_as_twilio_shows_it(tmp_path, capsys):
    rc, data, calls, snaps, heard = run_dial(tmp_path)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert data["meta"]["scenarios"][0]["status"] == "passed", err
    t = expectation(data, "transferred_to")
    assert t["status"] == "passed" and t["measured"] == DESK
    assert expectation(data, "end_reason")["status"] == "passed"
    assert data["meta"]["dial"]["ended_by"] == "far_end_hung_up"
    by = {(c.direction, c.to): c for c in calls}
    child, agent_leg = by["outbound-dial", DESK], by["inbound", "+15550001111"]
    assert child.parent_call_sid == agent_leg.sid and {c.status for c in calls} == {"completed"}
    (row,) = data["calls"][0]["twilio_calls"]
    assert (row["sid"], row["direction"], row["to"]) == (child.sid, "outbound-dial", DESK)
    (snap,) = snaps  # one OpenAI session, closed once Twilio ended the stream
    # the line: the phrase whole, then Twilio's Say, then the desk, in that order
    got, of, at_phrase = heard_of(fixture_audio(PHRASE, "pcmu"), heard)
    assert got == of > 100  # every voiced frame of the phrase (> 2 s of it), in place
    connecting, desk = trio.run(synthesize, CONNECTING), trio.run(synthesize, DESK_SAY)
    at_connecting, at_desk = heard_of(connecting, heard)[2], heard_of(desk, heard)[2]
    assert 0 <= at_phrase < at_connecting < at_desk, (at_phrase, at_connecting, at_desk)


def test_control_a_bridge_that_never_makes_the_rest_request_fails_transferred_to(tmp_path, capsys):
    rc, data, calls, snaps, heard = run_dial(tmp_path, "tests.broken_bridges:never_transfers")
    err = capsys.readouterr().err
    assert rc == 1, err
    t = expectation(data, "transferred_to")
    assert t["status"] == "failed" and t["message"].startswith("the call was never transferred"), t
    assert data["calls"][0]["twilio_calls"] == []  # Twilio's records were read, and hold no child call
    assert not [c for c in calls if c.direction == "outbound-dial"]
    # left on the line: the caller hung up after its 25 s wait, so the end reason fails too
    assert expectation(data, "end_reason")["status"] == "failed"
    got, of, _ = heard_of(fixture_audio(PHRASE, "pcmu"), heard)
    assert got == of  # the phrase itself played whole: the failure is the missing transfer alone


def test_control_a_redirect_before_the_phrase_played_cuts_it(tmp_path, capsys):
    """The line's verdict passes (Twilio did dial the desk, and ended the stream): what is wrong is what
    the caller heard of the phrase, measured on the line's audio against the mock's phrase."""
    rc, data, calls, snaps, heard = run_dial(tmp_path, "tests.broken_bridges:hasty_transfer")
    err = capsys.readouterr().err
    assert expectation(data, "transferred_to")["status"] == "passed", err
    got, of, at = heard_of(fixture_audio(PHRASE, "pcmu"), heard)
    assert at >= 0 and 0 < got < of * 0.8, (got, of)  # its beginning was heard, then it was cut
    connecting = trio.run(synthesize, CONNECTING)
    assert heard_of(connecting, heard)[2] > at  # ... by Twilio's Say of the transfer


def test_without_a_twilio_in_the_loop_the_scenario_is_skipped_naming_callsim_dial():
    run = trio.run(lambda: run_embedded(find_scenario("transfer")))
    assert run.status == "skipped" and run.passed and not run.calls
    assert run.skip_reason.startswith("requires twilio") and "callsim dial --scenario transfer" in run.skip_reason
    assert {e.name: e.status for e in run.expectations} == {"transferred_to": "skipped", "end_reason": "skipped"}
