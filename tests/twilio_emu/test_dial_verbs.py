"""<Dial> and <Play> as the emulator reads them, and what a leg does when a <Dial> is over (sans-IO)."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl

from callsim.simulator.twilio_emu.calls import Instructions
from callsim.simulator.twilio_emu.leg import Bridge, End, Fetch, FetchAudio, Leg, Speak
from callsim.simulator.twilio_emu.twiml import Dial, Play, Say, parse
from twilio.request_validator import RequestValidator

TOKEN = "dial-token"
ACCOUNT = "AC" + "34" * 16


def leg() -> Leg:
    lg = Leg("CA" + "01" * 16, ACCOUNT, TOKEN, "+15550002222", "+15550001111", "inbound", random.Random(1))
    lg.answered = True
    return lg


def test_dial_numbers_and_attributes_with_relative_urls_resolved():
    verbs = parse('<Response><Dial timeout="12" action="/after" method="GET" callerId="+15550003333">'
                  '<Number>+15550009999</Number><Number> +15550008888 </Number></Dial>'
                  '<Dial>+15550007777</Dial><Play loop="3">/hold.wav</Play></Response>',
                  "https://agent.example/voice")
    assert verbs == (Dial(("+15550009999", "+15550008888"), 12, "https://agent.example/after", "GET", "+15550003333"),
                     Dial(("+15550007777",), 30, None, "POST", None),
                     Play("https://agent.example/hold.wav", 3))


def test_a_dial_without_action_goes_on_with_the_next_verb():
    lg = leg()
    step = lg.load(Instructions(twiml="<Response><Dial>+15550009999</Dial><Say>Back again</Say></Response>"),
                   "in-progress")
    assert isinstance(step, Bridge) and step.dial.numbers == ("+15550009999",)
    nxt = lg.dial_ended(step.dial, "no-answer", "CA" + "02" * 16, None)
    assert isinstance(nxt, Speak) and nxt.text == "Back again"
    assert lg.next() == End("completed", "no TwiML left", True)


def test_a_dial_action_gets_dial_call_status_signed_and_replaces_the_rest():
    lg = leg()
    step = lg.load(Instructions(twiml='<Response><Dial action="https://agent.example/after" timeout="5">'
                                      '<Number>+15550009999</Number></Dial><Say>never</Say></Response>'),
                   "in-progress")
    assert isinstance(step, Bridge) and step.dial.timeout_s == 5
    fetch = lg.dial_ended(step.dial, "completed", "CA" + "03" * 16, 7)
    assert isinstance(fetch, Fetch) and fetch.url == "https://agent.example/after"
    form = dict(parse_qsl(fetch.body.decode()))
    assert (form["DialCallStatus"], form["DialCallSid"], form["DialCallDuration"]) == ("completed", "CA" + "03" * 16, "7")
    assert form["CallStatus"] == "in-progress"
    assert RequestValidator(TOKEN).validate(fetch.url, form, fetch.headers["X-Twilio-Signature"])
    assert lg.fetched(200, b"<Response/>") == End("completed", "no TwiML left", True)  # <Say>never</Say> dropped


def test_play_fetches_then_plays_its_audio_loop_times():
    lg = leg()
    step = lg.load(Instructions(twiml='<Response><Play loop="2">https://media.example/a.wav</Play></Response>'),
                   "in-progress")
    assert step == FetchAudio("https://media.example/a.wav", 2)
    lg.speech_ready(b"\x01" * 160, step)
    assert not lg.speech_done
    played = b"".join(lg.play() for _ in range(3))
    assert played[:320] == b"\x01" * 320 and lg.speech_done


def test_say_is_still_a_say():
    assert parse("<Response><Say>hi</Say></Response>") == (Say("hi"),)
