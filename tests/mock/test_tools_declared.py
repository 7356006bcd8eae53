"""The mock calls only tools the session (or the response) declared, as the real model must.

A behaviour rule that calls ``get_weather`` on a session that never declared
it must not emit a function call (the harness would then blame the bridge for
never answering it): the mock plays the rule's ``then`` reply as a normal
audio response and records why in the response record.
"""

from __future__ import annotations

import logging

from callsim.simulator.mock.audio import fixture_audio
from callsim.simulator.mock.behaviour import Behaviour, Rule, ThinkTime, ToolCall

from .session_helpers import (
    GA_REPLY,
    GA_USER_TURN,
    LONG,
    audio_of,
    configure,
    declared,
    shape,
    sil,
    since,
    ulaw,
)

WEATHER = Behaviour(think=ThinkTime("fixed", 100), seed=31,
                    rules=(Rule("caller_weather_question",
                                tool=ToolCall("get_weather", {"city": "Paris"}, then=LONG)),))


def _ask(d) -> list:
    n = len(d.events)
    d.append(ulaw("caller_weather_question") + sil(800))
    d.settle()
    return since(d, n)


def test_undeclared_tool_plays_the_then_reply_instead(drive, caplog):
    d = drive(WEATHER)
    configure(d)  # no tools
    with caplog.at_level(logging.INFO, logger="callsim.mock"):
        ev = _ask(d)
    assert d.types(ev)[:5] == GA_USER_TURN
    assert shape(d.types(ev[5:])) == GA_REPLY
    assert not [e for e in ev if e["type"].startswith("response.function_call")]
    assert audio_of(ev) == fixture_audio(LONG, "pcmu")
    rec = d.s.response_records[0]
    assert rec["reply"] == LONG and rec["status"] == "completed"
    assert rec["tool_not_declared"] == "get_weather" and rec["tools_declared"] == []
    assert d.s.snapshot()["responses"][0]["tool_not_declared"] == "get_weather"
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(d.s.id in m and "get_weather" in m and "did not declare" in m for m in msgs), msgs


def test_other_declared_tools_are_listed(drive):
    d = drive(WEATHER)
    configure(d, tools=declared("lookup", "book_table"))
    _ask(d)
    rec = d.s.response_records[0]
    assert (rec["tool_not_declared"], rec["tools_declared"]) == ("get_weather", ["lookup", "book_table"])
    assert rec["reply"] == LONG


def test_declared_tool_is_called_and_the_record_says_nothing_more(drive):
    d = drive(WEATHER)
    configure(d, tools=declared("get_weather"))
    ev = _ask(d)
    assert d.one("response.function_call_arguments.done", ev)["name"] == "get_weather"
    assert audio_of(ev) == b""
    rec = d.s.response_records[0]
    assert rec["reply"] == "tool:get_weather"
    assert "tool_not_declared" not in rec and "tools_declared" not in rec


def test_response_tools_override_the_session_tools(drive):
    """``response.create`` may carry its own ``tools``: for that response they are what counts."""
    d = drive(WEATHER)
    configure(d, turn_detection=None)  # no session tools
    d.append(ulaw("caller_weather_question"))
    d.send({"type": "input_audio_buffer.commit"})
    d.send({"type": "response.create", "response": {"tools": declared("get_weather")}})
    d.settle()
    assert d.s.response_records[0]["reply"] == "tool:get_weather"

    d2 = drive(WEATHER)
    configure(d2, turn_detection=None, tools=declared("get_weather"))
    d2.append(ulaw("caller_weather_question"))
    d2.send({"type": "input_audio_buffer.commit"})
    d2.send({"type": "response.create", "response": {"tools": []}})
    d2.settle()
    rec = d2.s.response_records[0]
    assert (rec["reply"], rec["tool_not_declared"], rec["tools_declared"]) == (LONG, "get_weather", [])
