"""What `callsim dial` sends Twilio, decided before anything is sent."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from callsim.simulator.dial.request import DialInputError, DialRequest, check_api_url, dry_run_text, mask

ARGS = dict(to="+15551234567", from_="+15550001111", scenario="barge_in", public_url="wss://h.example/s",
            max_duration_s=120)


def test_twiml_connects_a_stream_back_with_the_scenario_and_a_token():
    r = DialRequest.checked(**ARGS)
    root = ET.fromstring(r.twiml())
    stream = root.find("Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://h.example/s"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {"callsim_scenario": "barge_in", "callsim_token": r.token}
    assert len(r.token) >= 24 and DialRequest.checked(**ARGS).token != r.token  # fresh per call


def test_create_params_cap_the_call_and_ask_for_status_callbacks():
    p = DialRequest.checked(**ARGS).create_params()
    assert p["time_limit"] == 120 and p["to"] == "+15551234567" and p["from_"] == "+15550001111"
    assert p["status_callback"] == "https://h.example/dial-status"
    assert p["status_callback_event"] == ["initiated", "ringing", "answered", "completed"]
    assert "record" not in p
    rec = DialRequest.checked(**ARGS, record=True).create_params()
    assert rec["record"] is True and rec["recording_channels"] == "dual"


def test_an_https_public_url_becomes_the_wss_stream_url():
    assert DialRequest.checked(**{**ARGS, "public_url": "https://t.example"}).stream_url == "wss://t.example/"


@pytest.mark.parametrize("change, says", [
    ({"to": "5551234567"}, "--to must be an E.164"),
    ({"from_": "+0123"}, "--from must be an E.164"),
    ({"from_": "+15551234567"}, "the same number"),
    ({"public_url": "ws://h.example/s"}, "--public-url must be wss://"),
    ({"public_url": "wss:///s"}, "--public-url must be wss://"),
    ({"public_url": "wss://h.example/s?x=1"}, "no query"),
    ({"max_duration_s": 14401}, "--max-duration-s must be 1..14400"),
])
def test_bad_inputs_are_refused_with_the_flag_named(change, says):
    with pytest.raises(DialInputError, match=says):
        DialRequest.checked(**{**ARGS, **change})


def test_api_url_and_masking():
    assert check_api_url("http://127.0.0.1:9/") == "http://127.0.0.1:9"
    with pytest.raises(DialInputError):
        check_api_url("http://127.0.0.1:9/2010-04-01")
    assert mask("AC" + "0" * 28 + "9876") == "AC…9876" and mask("secret-token-value") == "****"


def test_dry_run_text_shows_the_wire_fields_and_masks_every_secret():
    r = DialRequest.checked(**ARGS, record=True)
    sid, token = "AC" + "1" * 28 + "4321", "super-secret-token"
    text = dry_run_text(r, api_url="https://api.twilio.com", account_sid=sid, auth_token=token, listen="127.0.0.1:8765")
    assert sid not in text and token not in text and r.token not in text
    assert "POST https://api.twilio.com/2010-04-01/Accounts/AC…4321/Calls.json" in text
    for field in ("To=+15551234567", "From=+15550001111", "TimeLimit=120", "Record=true", "RecordingChannels=dual",
                  "StatusCallback=https://h.example/dial-status", 'Twiml=<Response><Connect><Stream url="wss://h.example/s">'):
        assert field in text, field
