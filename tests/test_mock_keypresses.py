"""The mock hears a bridge's keypress items (mock/keypresses.py) and answers dtmf:/instructions: rules."""

from __future__ import annotations

import pytest
from callsim.simulator.mock.behaviour import Behaviour
from callsim.simulator.mock.keypresses import key_named
from callsim.simulator.tableread import DataError


def _text(t: str) -> list[dict]:
    return [{"type": "input_text", "text": t}]


@pytest.mark.parametrize("text,key", [
    ("The caller pressed 1 on the phone keypad.", "1"), ("DTMF: #", "#"), ("Caller entered key 5", "5"),
    ("keypress *", "*"),
    # wordings of other bridges: the verdict must not depend on the phrase
    ("User dialed digit 3", "3"), ("Keypad input: 9", "9"), ("The caller selected 2", "2"),
    ("[DTMF 4]", "4"), ("Caller pushed the # button", "#"), ("digit=7", "7"), ("Touch-tone received: 0", "0"),
    ("The user typed 8 on the phone", "8"), ("Caller hit *", "*"),
    ("Press 1 for sales, 2 for support", None),  # offers keys: two keys, and no report of a press
    ("Greet the caller and offer the menu: press 1 for the weather.", None),  # an instruction, not a press
    ("The caller pressed 1 and 2", None), ("Hello", None), ("pressed 12", None),
])
def test_which_key_a_user_item_names(text, key):
    assert key_named(_text(text)) == key


def test_rules_on_keys_and_on_instructions():
    b = Behaviour.from_dict({"rules": [
        {"when": "instructions:Still There", "reply": "assistant_still_there"},
        {"when": "dtmf:1", "reply": "assistant_long_reply"},
        {"when": "caller_goodbye", "reply": "assistant_goodbye"}]})
    assert b.reply_to_request("Ask whether they are still there.", None) == "assistant_still_there"
    assert b.reply_to_request(None, "1") == "assistant_long_reply"
    assert b.reply_to_request(None, "2") is None and b.reply_to_request("Say hi", None) is None
    assert b.reply_for(0, "caller_goodbye") == "assistant_goodbye"
    # only fixture rules name fixtures: a spoken rule's `when` does, a request rule's does not
    names = b.fixture_names()
    assert ("rules[3] when", "caller_goodbye") in names
    assert not [n for _, n in names if n.startswith(("dtmf:", "instructions:"))]
    assert not [w for w, _ in names if w in ("rules[1] when", "rules[2] when")]


@pytest.mark.parametrize("when", ["dtmf:12", "dtmf:x", "instructions:"])
def test_bad_request_rules_are_refused(when):
    with pytest.raises(DataError, match="when"):
        Behaviour.from_dict({"rules": [{"when": when, "reply": "assistant_short_reply"}]})
