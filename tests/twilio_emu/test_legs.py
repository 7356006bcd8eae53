"""The call legs' sans-IO parts: TwiML as the emulator reads it, tunnels, one leg's steps and
stream messages, two legs joined on the 20 ms grid."""

from __future__ import annotations

import base64
import logging
import random
from urllib.parse import parse_qsl

import orjson
import pytest
from callsim.simulator.audio.codec import FRAME_BYTES, SILENCE_FRAME
from callsim.simulator.caller.webhook import MAX_LOOP, loop_count, parse_twiml, say_seconds
from callsim.simulator.twilio_emu.calls import Instructions
from callsim.simulator.twilio_emu.leg import End, Fetch, Join, Leg, OpenStream, Speak, Wait
from callsim.simulator.twilio_emu.tunnels import Tunnels, parse_tunnel
from callsim.simulator.twilio_emu.twiml import (
    ConnectStream,
    Hangup,
    Pause,
    Redirect,
    Reject,
    Say,
    TwimlInvalid,
    parse,
)
from twilio.request_validator import RequestValidator

TOKEN = "leg-token"
ACCOUNT = "AC" + "12" * 16


def test_twiml_verbs_in_order_with_urls_resolved():
    verbs = parse('<Response><Say loop="2" language="en-GB">Hi there</Say><Pause length="2"/>'
                  '<Connect><Stream url="/media"><Parameter name="a" value="1"/></Stream></Connect>'
                  '<Redirect method="GET">next</Redirect><Reject reason="busy"/><Hangup/></Response>',
                  "https://agent.example/voice/start")
    assert verbs == (Say("Hi there", 2, None, "en-GB"), Pause(2.0),
                     ConnectStream("wss://agent.example/media", {"a": "1"}),
                     Redirect("https://agent.example/voice/next", "GET"), Reject("busy"), Hangup())


@pytest.mark.parametrize("xml, says", [
    ("<Response><Dance/></Response>", "<Dance> is not supported"),
    ("<Response><Connect/></Response>", "<Connect> with nothing"),
    ("<Response><Connect><Stream/></Connect></Response>", "without a url"),
    ("<Response><Pause length='x'/></Response>", "not a number"),
    ("<Response><Connect><Stream url='media'/></Connect></Response>", "not an absolute"),  # inline: no base
    ("<Reply/>", "expected <Response>"),
    ("<Response>", "not XML"),
    ("<Response><Dial/></Response>", "without a number"),
    ("<Response><Dial><Client>bob</Client></Dial></Response>", "<Dial><Client>"),
    ("<Response><Dial>" + "<Number>+15550000000</Number>" * 11 + "</Dial></Response>", "at most 10"),
    ("<Response><Dial timeout='soon'>+15550000000</Dial></Response>", "not an integer"),
    ("<Response><Play digits='1'/></Response>", "no DTMF"),
    ("<Response><Play/></Response>", "without a URL"),
])
def test_invalid_twiml_says_why(xml, says):
    with pytest.raises(TwimlInvalid, match=says):
        parse(xml)


def test_tunnels_map_both_protocols_of_a_host_and_leave_others_alone():
    t = Tunnels([parse_tunnel("https://Bridge.example=http://127.0.0.1:5050"),
                 parse_tunnel("wss://dial.example=ws://127.0.0.1:7000")])
    assert t.local("https://bridge.example/incoming-call?x=1") == "http://127.0.0.1:5050/incoming-call?x=1"
    assert t.local("wss://bridge.example/media-stream") == "ws://127.0.0.1:5050/media-stream"
    assert t.local("https://dial.example/status") == "http://127.0.0.1:7000/status"
    assert t.local("http://bridge.example/x") == "http://bridge.example/x"  # another origin: as it is
    assert t.local("https://other.example/x") == "https://other.example/x"


def leg(sid: str = "CA" + "01" * 16, direction: str = "inbound") -> Leg:
    return Leg(sid, ACCOUNT, TOKEN, "+15550002222", "+15550001111", direction, random.Random(1))


def test_a_webhook_is_signed_with_the_params_twilio_sends():
    step = leg().load(Instructions(url="https://agent.example/voice"), "ringing")
    assert isinstance(step, Fetch) and step.method == "POST"
    form = dict(parse_qsl(step.body.decode()))
    assert form["Direction"] == "inbound" and form["CallStatus"] == "ringing" and form["Called"] == "+15550001111"
    assert {"CallSid", "AccountSid", "From", "To", "ApiVersion", "Caller"} <= set(form)
    assert RequestValidator(TOKEN).validate("https://agent.example/voice", form, step.headers["X-Twilio-Signature"])


def test_steps_follow_the_twiml_and_an_empty_remainder_hangs_up():
    lg = leg()
    lg.answered = True
    step = lg.load(Instructions(twiml='<Response><Pause length="0.5"/><Say>two words</Say>'
                                      '<Connect><Stream url="wss://a.example/s"/></Connect></Response>'), "in-progress")
    assert step == Wait(0.5)
    assert isinstance(s := lg.next(), Speak) and s.text == "two words" and s.estimate_s == pytest.approx(0.8)
    stream = lg.next()
    assert isinstance(stream, OpenStream) and stream.url == "wss://a.example/s"
    sig = dict((k.decode(), v.decode()) for k, v in stream.headers)["X-Twilio-Signature"]
    assert RequestValidator(TOKEN).validate("wss://a.example/s", {}, sig)
    lg.stream_opened()
    assert lg.stream_closed_by_server() == End("completed", "no TwiML left", True)


def test_reject_before_an_answer_is_busy_or_no_answer():
    assert leg().load(Instructions(twiml='<Response><Reject reason="busy"/></Response>'), "ringing") == \
        End("busy", "<Reject reason=busy>", False)
    assert leg().load(Instructions(twiml="<Response><Reject/></Response>"), "ringing").status == "no-answer"


def test_invalid_twiml_is_an_application_error_logged_with_the_call_sid(caplog):
    caplog.set_level(logging.WARNING, logger="callsim.twilio_emu")
    lg = leg("CA" + "ab" * 16)
    lg.answered = True
    step = lg.load(Instructions(twiml="<Response><Gather/></Response>"), "in-progress")
    assert isinstance(step, End) and step.status == "completed" and "application error" in step.reason
    assert any("CA" + "ab" * 16 in r.getMessage() and "<Gather>" in r.getMessage() for r in caplog.records)
    assert isinstance(lg.fetched(500, b""), End)


def _open(lg: Leg) -> str:
    lg.load(Instructions(twiml='<Response><Connect><Stream url="wss://a.example/s"/></Connect></Response>'),
            "in-progress")
    connected, start = (orjson.loads(m) for m in lg.stream_opened())
    assert connected["event"] == "connected" and start["event"] == "start" and start["sequenceNumber"] == "1"
    return start["streamSid"]


def _media(sid: str, audio: bytes) -> bytes:
    return orjson.dumps({"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(audio).decode()}}).decode()


def test_joined_legs_hear_each_other_frame_by_frame_and_marks_echo_when_played():
    a, b = leg("CA" + "0a" * 16, "outbound-api"), leg("CA" + "0b" * 16)
    sid_a = _open(a)
    _open(b)
    join = Join(a, b)
    said = bytes(range(1, 161)) * 3  # three frames from the caller leg's server
    assert a.stream_message(_media(sid_a, said)) == []
    assert a.stream_message(orjson.dumps({"event": "mark", "streamSid": sid_a, "mark": {"name": "m1"}}).decode()) == []
    for _ in range(3):
        join.tick()
    heard_b = [orjson.loads(m) for m in b.take_outbox()]
    assert [m["media"]["chunk"] for m in heard_b] == ["1", "2", "3"]
    assert [m["media"]["timestamp"] for m in heard_b] == ["0", "20", "40"]
    assert b"".join(base64.b64decode(m["media"]["payload"]) for m in heard_b) == said
    assert [orjson.loads(m)["event"] for m in a.take_outbox()] == ["media"] * 3  # m1 not yet: frame 3 plays
    join.tick()
    out = [orjson.loads(m) for m in a.take_outbox()]
    assert [m["event"] for m in out] == ["mark", "media"] and out[0]["mark"]["name"] == "m1"
    assert base64.b64decode(out[1]["media"]["payload"]) == SILENCE_FRAME  # b says nothing
    assert base64.b64decode(orjson.loads(b.take_outbox()[0])["media"]["payload"]) == SILENCE_FRAME


def test_clear_echoes_pending_marks_and_a_bad_message_is_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger="callsim.twilio_emu")
    lg = leg()
    sid = _open(lg)
    lg.stream_message(_media(sid, b"\x01" * FRAME_BYTES * 10))
    lg.stream_message(orjson.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "m"}}).decode())
    assert lg.stream_message(b"binary") == [] and lg.stream_message("{nope") == []
    (echo,) = lg.stream_message(orjson.dumps({"event": "clear", "streamSid": sid}).decode())
    assert orjson.loads(echo)["mark"]["name"] == "m"
    assert lg.play() == SILENCE_FRAME
    warnings = [r.getMessage() for r in caplog.records if lg.call_sid in r.getMessage()]
    assert len(warnings) == 1 and "31950" in warnings[0]


def test_stop_ends_the_stream_with_the_next_sequence_number():
    lg = leg()
    sid = _open(lg)
    stop = orjson.loads(lg.stop_stream())
    assert stop == {"event": "stop", "sequenceNumber": "2", "streamSid": sid,
                    "stop": {"accountSid": ACCOUNT, "callSid": lg.call_sid}}
    assert lg.stream is None and lg.stop_stream() is None


def test_say_without_synthesis_plays_silence_for_its_duration():
    lg = leg()
    lg.answered = True
    step = lg.load(Instructions(twiml="<Response><Say>one two three four five</Say></Response>"), "in-progress")
    assert isinstance(step, Speak)
    lg.speech_ready(None, step)
    frames = 0
    while not lg.speech_done:
        lg.play()
        frames += 1
    assert frames == pytest.approx(step.estimate_s / 0.02 + 1, abs=1)


@pytest.mark.parametrize("raw, times", [("0", 100), ("3", 3), ("500", 100), ("-2", 1), (None, 1)])
def test_loop_counts_as_callsim_call_counts_it(raw, times):
    """loop="0" is Twilio's "until the call ends": the emulator and ``callsim call``'s webhook
    reading both take it as MAX_LOOP plays, and clamp any other count the same way."""
    attr = "" if raw is None else f' loop="{raw}"'
    (say,) = parse(f"<Response><Say{attr}>hello there</Say></Response>")
    target = parse_twiml(f'<Response><Say{attr}>hello there</Say><Connect><Stream url="wss://a.example/s"/>'
                         "</Connect></Response>", "https://a.example/voice")
    assert say.loop == loop_count(raw) == times and MAX_LOOP == 100
    assert target.preamble[0].ms == pytest.approx(say_seconds("hello there", times) * 1000)
    if raw == "0":
        assert "until the call ends" in target.preamble[0].note


def test_a_stream_url_real_twilio_refuses_is_opened_with_twilios_note_logged(caplog):
    caplog.set_level(logging.WARNING, logger="callsim.twilio_emu")
    (stream,) = parse('<Response><Connect><Stream url="http://127.0.0.1:5050/media"/></Connect></Response>')
    assert stream.url == "ws://127.0.0.1:5050/media" and any("31922" in n for n in stream.notes)
    lg = leg("CA" + "cd" * 16)
    lg.answered = True
    step = lg.load(Instructions(twiml='<Response><Connect><Stream url="ws://127.0.0.1:5050/media"/>'
                                      "</Connect></Response>"), "in-progress")
    assert isinstance(step, OpenStream) and step.url == "ws://127.0.0.1:5050/media"
    assert any("CA" + "cd" * 16 in r.getMessage() and "31922" in r.getMessage() for r in caplog.records)
    (wss,) = parse('<Response><Connect><Stream url="wss://a.example/s"/></Connect></Response>')
    assert wss.notes == ()


def test_a_stream_url_query_string_is_dropped_as_twilio_drops_it():
    (stream,) = parse('<Response><Connect><Stream url="wss://a.example/s?token=1"/></Connect></Response>')
    assert stream.url == "wss://a.example/s" and any("query string" in n for n in stream.notes)
