"""Twilio's wire format, both directions, as pure functions (protocols.md 1.2, 1.3).

Sans-IO: builders are checked field by field and type by type against the
protocol table, and ``parse_outbound`` against every rejection Twilio makes
(31950 binary frame, 31951 everything else) and the messages it accepts.
"""

from __future__ import annotations

import base64
import json
import random
import re

import pytest
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.sids import SID_RE, make_sid

_rng = random.Random(20240601)
ACCOUNT = make_sid("AC", _rng)
CALL = make_sid("CA", _rng)
STREAM = make_sid("MZ", _rng)
OTHER_STREAM = make_sid("MZ", _rng)
IDENT = tw.StreamIdentity(ACCOUNT, CALL, STREAM, {"FirstName": "Jane", "RemoteParty": "Bob"})

TWILIO_SID = {p: re.compile(rf"^{p}[0-9a-f]{{32}}$") for p in ("AC", "CA", "MZ")}
AUDIO = bytes(range(256)) * 2
AUDIO_B64 = base64.b64encode(AUDIO).decode()


def _load(msg: str) -> dict:
    assert isinstance(msg, str)
    return json.loads(msg)


# ------------------------------------------------------------------ SIDs


@pytest.mark.parametrize("prefix", ["AC", "CA", "MZ"])
def test_make_sid_has_twilio_shape_and_is_seeded(prefix):
    a = make_sid(prefix, random.Random(5))
    b = make_sid(prefix, random.Random(5))
    assert a == b
    assert len(a) == 34
    assert TWILIO_SID[prefix].match(a)
    assert SID_RE.match(a)
    assert make_sid(prefix, random.Random(6)) != a


@pytest.mark.parametrize("bad", ["", "A", "ACX", "ac", "A1"])
def test_make_sid_rejects_bad_prefix(bad):
    with pytest.raises(ValueError, match="two capital letters"):
        make_sid(bad)


def test_sid_pattern_rejects_uppercase_hex_and_wrong_length():
    assert not SID_RE.match("AC" + "A" * 32)
    assert not SID_RE.match("AC" + "a" * 31)
    assert not SID_RE.match("AC" + "a" * 33)
    assert not SID_RE.match("XX" + "a" * 32)


# ------------------------------------------------------- Twilio -> app (1.2)


def test_connected_message_exact():
    msg = _load(tw.connected_message())
    assert msg == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert "streamSid" not in msg and "sequenceNumber" not in msg


def test_start_message_fields_and_types():
    msg = _load(tw.start_message(IDENT, 1))
    assert set(msg) == {"event", "sequenceNumber", "start", "streamSid"}
    assert msg["event"] == "start"
    assert msg["sequenceNumber"] == "1"  # a string, not 1
    assert msg["streamSid"] == STREAM
    start = msg["start"]
    assert set(start) == {"accountSid", "streamSid", "callSid", "tracks", "customParameters", "mediaFormat"}
    assert start["accountSid"] == ACCOUNT and TWILIO_SID["AC"].match(start["accountSid"])
    assert start["callSid"] == CALL and TWILIO_SID["CA"].match(start["callSid"])
    assert start["streamSid"] == STREAM and TWILIO_SID["MZ"].match(start["streamSid"])
    assert start["tracks"] == ["inbound"]
    assert start["customParameters"] == {"FirstName": "Jane", "RemoteParty": "Bob"}
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in start["customParameters"].items())
    fmt = start["mediaFormat"]
    assert fmt == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert type(fmt["sampleRate"]) is int and type(fmt["channels"]) is int


def test_start_message_without_parameters_has_empty_object():
    msg = _load(tw.start_message(tw.StreamIdentity(ACCOUNT, CALL, STREAM), 1))
    assert msg["start"]["customParameters"] == {}


def test_start_message_escapes_parameter_values():
    ident = tw.StreamIdentity(ACCOUNT, CALL, STREAM, {"q": 'say "hi"\n\\ é'})
    assert _load(tw.start_message(ident, 1))["start"]["customParameters"] == {"q": 'say "hi"\n\\ é'}


def test_media_message_fields_and_types():
    frame = bytes(range(160))
    b64 = base64.b64encode(frame).decode()
    assert len(b64) == 216
    msg = _load(tw.media_message(STREAM, 7, 5, 80, b64))
    assert msg == {
        "event": "media",
        "sequenceNumber": "7",
        "media": {"track": "inbound", "chunk": "5", "timestamp": "80", "payload": b64},
        "streamSid": STREAM,
    }
    assert base64.b64decode(msg["media"]["payload"], validate=True) == frame


def test_dtmf_message_fields():
    msg = _load(tw.dtmf_message(STREAM, 9, "#"))
    assert msg == {
        "event": "dtmf", "streamSid": STREAM, "sequenceNumber": "9",
        "dtmf": {"track": "inbound_track", "digit": "#"},
    }


def test_mark_echo_message_fields_and_name_round_trip():
    name = 'reply "1" — part\\2\n'
    msg = _load(tw.mark_message(STREAM, 4, name))
    assert msg == {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM, "mark": {"name": name}}


def test_stop_message_fields():
    msg = _load(tw.stop_message(IDENT, 12))
    assert msg == {
        "event": "stop", "sequenceNumber": "12",
        "stop": {"accountSid": ACCOUNT, "callSid": CALL},
        "streamSid": STREAM,
    }


# ------------------------------------------------------ app -> Twilio (1.3)


def _j(obj) -> str:
    return json.dumps(obj)


def test_valid_media_parses_to_decoded_bytes():
    out = tw.parse_outbound(_j({"event": "media", "streamSid": STREAM, "media": {"payload": AUDIO_B64}}), STREAM)
    assert out == tw.OutMedia(AUDIO)


def test_valid_media_with_empty_payload_is_empty_audio():
    out = tw.parse_outbound(_j({"event": "media", "streamSid": STREAM, "media": {"payload": ""}}), STREAM)
    assert out == tw.OutMedia(b"")


def test_valid_mark_parses_to_its_name():
    out = tw.parse_outbound(_j({"event": "mark", "streamSid": STREAM, "mark": {"name": "end of reply"}}), STREAM)
    assert out == tw.OutMark("end of reply")


def test_valid_clear_parses():
    assert tw.parse_outbound(_j({"event": "clear", "streamSid": STREAM}), STREAM) == tw.OutClear()


def test_key_order_does_not_matter():
    text = '{"media":{"payload":"%s"},"streamSid":"%s","event":"media"}' % (AUDIO_B64, STREAM)
    assert tw.parse_outbound(text, STREAM) == tw.OutMedia(AUDIO)


@pytest.mark.parametrize("data", [b'{"event":"clear"}', bytearray(b"\x00\x01\x02"), memoryview(b"abc"), b""])
def test_binary_frame_is_31950(data):
    out = tw.parse_outbound(data, STREAM)
    assert isinstance(out, tw.Invalid)
    assert out.code == tw.WARN_MALFORMED == 31950
    assert out.reason == f"binary frame of {len(data)} bytes; Twilio accepts JSON text frames only"
    assert out.salvaged is None


INVALID_31951 = [
    # (id, message text, substring the reason must contain, event reported)
    ("invalid-json", '{"event": "media", ', "invalid JSON", None),
    ("empty-text", "", "invalid JSON", None),
    ("lone-surrogate", '{"event":"clear","streamSid":"\ud800"}', "invalid JSON", None),
    ("nan", '{"event":"clear","streamSid":NaN}', "invalid JSON", None),
    ("json-list", _j([{"event": "clear", "streamSid": STREAM}]), "JSON list instead of an object", None),
    ("json-string", _j("clear"), "JSON str instead of an object", None),
    ("json-number", "42", "JSON int instead of an object", None),
    ("json-null", "null", "JSON NoneType instead of an object", None),
    ("no-event", _j({"streamSid": STREAM}), "no string 'event' field", None),
    ("event-not-string", _j({"event": 1, "streamSid": STREAM}), "no string 'event' field", None),
    ("unknown-event", _j({"event": "start", "streamSid": STREAM}),
     "unknown event 'start'; Twilio accepts media, mark, clear", "start"),
    ("unknown-event-case", _j({"event": "Media", "streamSid": STREAM, "media": {"payload": ""}}),
     "unknown event 'Media'", "Media"),
    ("missing-streamsid", _j({"event": "clear"}), "clear without streamSid", "clear"),
    ("null-streamsid", _j({"event": "mark", "streamSid": None, "mark": {"name": "x"}}),
     "mark without streamSid", "mark"),
    ("wrong-streamsid", _j({"event": "media", "streamSid": OTHER_STREAM, "media": {"payload": AUDIO_B64}}),
     f"media with wrong streamSid '{OTHER_STREAM}' (active stream is {STREAM})", "media"),
    ("streamsid-not-string", _j({"event": "clear", "streamSid": 7}), "clear with wrong streamSid 7", "clear"),
    ("media-without-media", _j({"event": "media", "streamSid": STREAM}), "media without a 'media' object", "media"),
    ("media-not-object", _j({"event": "media", "streamSid": STREAM, "media": AUDIO_B64}),
     "media without a 'media' object", "media"),
    ("media-without-payload", _j({"event": "media", "streamSid": STREAM, "media": {"track": "outbound"}}),
     "media without a string 'payload' (keys: ['track'])", "media"),
    ("payload-not-string", _j({"event": "media", "streamSid": STREAM, "media": {"payload": [1, 2]}}),
     "media without a string 'payload'", "media"),
    ("payload-bad-char", _j({"event": "media", "streamSid": STREAM, "media": {"payload": "ab!d"}}),
     "media payload is not base64", "media"),
    ("payload-bad-padding", _j({"event": "media", "streamSid": STREAM, "media": {"payload": "YQ"}}),
     "media payload is not base64", "media"),
    ("payload-one-char", _j({"event": "media", "streamSid": STREAM, "media": {"payload": "AAAAA"}}),
     "media payload is not base64", "media"),
    ("payload-newline", _j({"event": "media", "streamSid": STREAM, "media": {"payload": AUDIO_B64[:8] + "\n"}}),
     "media payload is not base64", "media"),
    ("payload-non-ascii", _j({"event": "media", "streamSid": STREAM, "media": {"payload": "ÿÿÿÿ"}}),
     "media payload is not base64", "media"),
    ("mark-without-mark", _j({"event": "mark", "streamSid": STREAM}),
     "mark without a 'mark': {'name': <non-empty string>} object", "mark"),
    ("mark-without-name", _j({"event": "mark", "streamSid": STREAM, "mark": {}}), "mark without a 'mark'", "mark"),
    ("mark-name-int", _j({"event": "mark", "streamSid": STREAM, "mark": {"name": 3}}), "mark without a 'mark'", "mark"),
    ("mark-name-null", _j({"event": "mark", "streamSid": STREAM, "mark": {"name": None}}),
     "mark without a 'mark'", "mark"),
    ("mark-name-empty", _j({"event": "mark", "streamSid": STREAM, "mark": {"name": ""}}),
     "mark without a 'mark'", "mark"),
    ("mark-not-object", _j({"event": "mark", "streamSid": STREAM, "mark": "x"}), "mark without a 'mark'", "mark"),
]


@pytest.mark.parametrize(("text", "reason", "event"), [c[1:] for c in INVALID_31951],
                         ids=[c[0] for c in INVALID_31951])
def test_invalid_messages_are_31951_with_reason(text, reason, event):
    out = tw.parse_outbound(text, STREAM)
    assert isinstance(out, tw.Invalid)
    assert out.code == tw.WARN_INVALID == 31951
    assert reason in out.reason
    assert out.event == event
    assert out.salvaged is None
    # The strict policy and the lenient one agree on everything but extra fields.
    assert tw.parse_outbound(text, STREAM, tw.WirePolicy(act_on_extra_fields=True)) == out


EXTRA_FIELDS = [
    # (id, message, sorted extra field names, what a lenient Twilio would act on)
    ("media-top-level", {"event": "media", "streamSid": STREAM, "media": {"payload": AUDIO_B64}, "track": "outbound"},
     ["track"], tw.OutMedia(AUDIO)),
    ("media-nested", {"event": "media", "streamSid": STREAM,
                      "media": {"payload": AUDIO_B64, "track": "outbound", "chunk": "1", "timestamp": "0"}},
     ["chunk", "timestamp", "track"], tw.OutMedia(AUDIO)),
    ("mark-nested-and-top", {"event": "mark", "streamSid": STREAM, "mark": {"name": "m", "at": 3}, "sequenceNumber": "2"},
     ["at", "sequenceNumber"], tw.OutMark("m")),
    ("clear-with-body", {"event": "clear", "streamSid": STREAM, "clear": {}}, ["clear"], tw.OutClear()),
]


@pytest.mark.parametrize(("msg", "extra", "salvage"), [c[1:] for c in EXTRA_FIELDS], ids=[c[0] for c in EXTRA_FIELDS])
def test_extra_fields_are_31951_and_salvaged_only_by_policy(msg, extra, salvage):
    strict = tw.parse_outbound(_j(msg), STREAM)
    assert strict == tw.Invalid(31951, f"{msg['event']} with unexpected fields {extra}", msg["event"], None)
    lenient = tw.parse_outbound(_j(msg), STREAM, tw.WirePolicy(act_on_extra_fields=True))
    assert isinstance(lenient, tw.Invalid)
    assert lenient.code == 31951 and lenient.reason == strict.reason
    assert lenient.salvaged == salvage


def test_default_policy_is_strict():
    assert tw.WirePolicy().act_on_extra_fields is False


def test_invalid_json_reason_quotes_the_start_of_the_message():
    text = "not json at all " * 10
    out = tw.parse_outbound(text, STREAM)
    assert out.code == 31951
    assert out.reason.startswith("invalid JSON: ")
    assert repr(text[:60]) in out.reason
