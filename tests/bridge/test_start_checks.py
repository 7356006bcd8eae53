"""Twilio ``start`` messages of every malformed shape, against the call core alone.

Issue 18 items 1 and 9: ``"callSid": 123`` reached the token check as an int and
killed the process; ``"mediaFormat": "x"`` set the stream id before failing, so
the call never opened OpenAI and refused every later (valid) start as a second
one. Here each field of a real start (protocols.md 1.2) is given a value of the
wrong type, alone and by Hypothesis: no exception may leave ``twilio_message``,
the call must be exactly as before, and a valid start must still work after it.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from callsim.bridge.call import CallCore, CallStarted, ConnectOpenAI, Hangup
from callsim.bridge.realtime import SessionParams
from callsim.bridge.twilio_start import (
    MAX_PARAMETER_VALUE,
    MAX_PARAMETERS,
    SID,
    BadStart,
    parse_start,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ACCOUNT_SID = "AC" + "00112233445566778899aabbccddeeff"
CALL_SID = "CA" + "fedcba9876543210fedcba9876543210"
STREAM_SID = "MZ" + "0123456789abcdef0123456789abcdef"


def good_start() -> dict[str, Any]:
    return {"event": "start", "sequenceNumber": "1",
            "start": {"accountSid": ACCOUNT_SID, "streamSid": STREAM_SID, "callSid": CALL_SID,
                      "tracks": ["inbound"],
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                      "customParameters": {"token": "t0k3n", "from": "+15550001111"}},
            "streamSid": STREAM_SID}


def with_value(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    msg = good_start()
    node = msg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return msg


def snapshot(core: CallCore) -> tuple[Any, ...]:
    return (core.stream_sid, core.call_sid, dict(core.parameters), core.openai_open, core.ending, core.ended)


def assert_refused_and_unchanged(core: CallCore, msg: Any) -> None:
    before, bad = snapshot(core), core.stats["twilio_bad"]
    text = msg if isinstance(msg, str) else json.dumps(msg)
    assert core.twilio_message(5, text) == [], text
    assert core.stats["twilio_bad"] == bad + 1, text
    assert snapshot(core) == before, text


def assert_a_good_start_still_works(core: CallCore) -> None:
    acts = core.twilio_message(10, json.dumps(good_start()))
    assert [type(a) for a in acts] == [CallStarted, ConnectOpenAI]
    assert acts[0] == CallStarted(CALL_SID, STREAM_SID, {"token": "t0k3n", "from": "+15550001111"})
    assert (core.stream_sid, core.call_sid) == (STREAM_SID, CALL_SID)


MALFORMED: list[tuple[tuple[str, ...], Any]] = [
    (("start", "callSid"), 123),  # item 1: an int where Twilio sends a string
    (("start", "mediaFormat"), "x"),  # item 9: the half-started call
    (("start", "customParameters"), {"token": 5}),
    (("start", "customParameters"), ["token", "x"]),
    (("start", "customParameters"), "token=x"),
    (("start", "customParameters"), {f"k{i}": "v" for i in range(MAX_PARAMETERS + 1)}),
    (("start", "customParameters"), {"token": "x" * (MAX_PARAMETER_VALUE + 1)}),
    (("start", "callSid"), ["CA1"]),
    (("start", "callSid"), "CA1\nINFO forged line"),
    (("start", "callSid"), "x" * 65),
    (("start", "callSid"), ""),
    (("start", "streamSid"), 7),
    (("start", "streamSid"), 'MZ"}'),
    (("start", "streamSid"), "MZ" + "9" * 32),  # differs from the top-level streamSid
    (("streamSid",), {"sid": STREAM_SID}),
    (("start", "accountSid"), True),
    (("start", "tracks"), "inbound"),
    (("start", "tracks"), [1]),
    (("start", "mediaFormat"), ["audio/x-mulaw", 8000]),
    (("start", "mediaFormat", "encoding"), 0),
    (("start", "mediaFormat", "encoding"), "audio/x-mulaw\r\n"),
    (("start", "mediaFormat", "sampleRate"), "8000"),
    (("start", "mediaFormat", "sampleRate"), 8000.5),
    (("start", "mediaFormat", "sampleRate"), True),
    (("start", "mediaFormat", "channels"), "1"),
    (("start", "mediaFormat", "channels"), -1),
    (("start",), "x"),
    (("start",), []),
    (("start",), None),
]


@pytest.mark.parametrize("path,value", MALFORMED, ids=[f"{'.'.join(p)}={v!r:.30}" for p, v in MALFORMED])
def test_a_malformed_start_changes_nothing_and_a_good_one_still_starts(path: tuple[str, ...], value: Any) -> None:
    core = CallCore(SessionParams(), peer="192.0.2.7:5060")
    assert_refused_and_unchanged(core, with_value(path, value))
    assert_a_good_start_still_works(core)


def test_a_start_missing_its_stream_sid_is_refused() -> None:
    msg = good_start()
    del msg["streamSid"], msg["start"]["streamSid"]
    core = CallCore(SessionParams())
    assert_refused_and_unchanged(core, msg)
    assert_a_good_start_still_works(core)


def test_optional_fields_may_be_absent_or_null() -> None:
    msg = good_start()
    for key in ("accountSid", "tracks", "mediaFormat", "callSid"):
        del msg["start"][key]
    msg["start"]["customParameters"] = None
    assert parse_start(msg) == parse_start({"start": {"streamSid": STREAM_SID}})
    got = parse_start(msg)
    assert (got.stream_sid, got.call_sid, got.parameters, got.playable) == (STREAM_SID, None, {}, True)
    only_inner = good_start()
    del only_inner["streamSid"]
    assert parse_start(only_inner).stream_sid == STREAM_SID


@pytest.mark.parametrize("fmt", [
    {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
])
def test_a_well_formed_start_the_bridge_cannot_play_ends_the_stream(fmt: dict[str, Any], caplog) -> None:
    """Decided behaviour: log it and close the stream at once — no OpenAI session
    (it would be paid for and could not be heard), no silent line; Twilio moves on."""
    core = CallCore(SessionParams(), peer="192.0.2.7:5060")
    acts = core.twilio_message(5, json.dumps(with_value(("start", "mediaFormat"), fmt)))
    assert acts == [Hangup("unsupported media format")]
    assert core.stream_sid is None and core.ending and not core.openai_open
    assert core.stats["twilio_bad"] == 0
    assert any("refusing stream" in r.getMessage() and STREAM_SID in r.getMessage() for r in caplog.records)
    # nothing starts after that either
    assert core.twilio_message(6, json.dumps(good_start())) == []
    assert core.stats["twilio_bad"] == 1


def test_bad_start_reports_say_which_field() -> None:
    with pytest.raises(BadStart, match="callSid is a number, not a string"):
        parse_start(with_value(("start", "callSid"), 123))
    with pytest.raises(BadStart, match="mediaFormat is a string, not an object"):
        parse_start(with_value(("start", "mediaFormat"), "x"))
    with pytest.raises(BadStart, match="customParameters value is a number"):
        parse_start(with_value(("start", "customParameters"), {"token": 5}))


# ------------------------------------------------------------------ Hypothesis

# every field of a start, with the values that are NOT of its documented type
_any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
_not_str = _any_json.filter(lambda v: not isinstance(v, str))
_not_int = _any_json.filter(lambda v: not isinstance(v, int) or isinstance(v, bool))
_not_dict = _any_json.filter(lambda v: not isinstance(v, dict))
# a SID of the wrong type, or a string that is not an id (newlines, quotes, too long, empty...)
_bad_sid = _not_str.filter(lambda v: v is not None) | st.text(max_size=80).filter(lambda s: not SID.fullmatch(s))

FIELDS: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    ("start",): _not_dict,
    ("streamSid",): _bad_sid,
    ("start", "streamSid"): _bad_sid,
    ("start", "callSid"): _bad_sid,
    ("start", "accountSid"): _bad_sid,
    ("start", "tracks"): _any_json.filter(lambda v: v is not None and not (
        isinstance(v, list) and all(isinstance(t, str) for t in v))),
    ("start", "customParameters"): _any_json.filter(lambda v: v is not None and not (
        isinstance(v, dict) and all(isinstance(x, str) for x in v.values()))),
    ("start", "mediaFormat"): _not_dict.filter(lambda v: v is not None),
    ("start", "mediaFormat", "encoding"): _not_str.filter(lambda v: v is not None),
    ("start", "mediaFormat", "sampleRate"): _not_int.filter(lambda v: v is not None),
    ("start", "mediaFormat", "channels"): _not_int.filter(lambda v: v is not None),
}


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data(), n=st.integers(1, 3))
def test_wrong_types_in_any_fields_never_escape_and_change_nothing(data: st.DataObject, n: int) -> None:
    msg = good_start()
    paths = data.draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=n, max_size=n, unique=True))
    for path in sorted(paths, key=len):  # a parent replaced first; its children then have nowhere to go
        node: Any = msg
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[path[-1]] = data.draw(FIELDS[path], label=".".join(path))
    if msg == good_start():
        return
    core = CallCore(SessionParams(), peer="192.0.2.7:5060")
    assert_refused_and_unchanged(core, copy.deepcopy(msg))
    assert_a_good_start_still_works(core)


_valid_or_any = {
    "streamSid": st.just(STREAM_SID) | _any_json, "callSid": st.just(CALL_SID) | _any_json,
    "accountSid": st.just(ACCOUNT_SID) | _any_json, "tracks": st.just(["inbound"]) | _any_json,
    "customParameters": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3) | _any_json,
    "mediaFormat": st.fixed_dictionaries({}, optional={
        "encoding": st.sampled_from(["audio/x-mulaw", "audio/x-l16"]) | _any_json,
        "sampleRate": st.sampled_from([8000, 16000]) | _any_json,
        "channels": st.sampled_from([1, 2]) | _any_json}) | _any_json,
}


@settings(max_examples=400, deadline=None, derandomize=True)  # CI sees the same 400 bodies every run
@given(body=st.fixed_dictionaries({}, optional=_valid_or_any) | _any_json)
def test_any_start_body_is_answered_never_raised(body: Any) -> None:
    """Whatever ``start`` holds, the core answers — a start, a refusal of the format, or a
    counted bad message with nothing changed — and never raises."""
    core = CallCore(SessionParams())
    acts = core.twilio_message(5, json.dumps({"event": "start", "start": body}))
    if acts and isinstance(acts[0], CallStarted):
        # any safe id is a stream SID (Hypothesis found "0"): what was accepted is what was sent
        assert core.stream_sid == body["streamSid"] and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", core.stream_sid)
        assert isinstance(core.call_sid, (str, type(None)))
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in core.parameters.items())
    elif acts:
        assert acts == [Hangup("unsupported media format")] and core.stream_sid is None
    else:
        assert snapshot(core) == (None, None, {}, False, False, False) and core.stats["twilio_bad"] == 1
