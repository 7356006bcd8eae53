"""Session renewal end to end: what the new OpenAI session knows of the conversation at the switch.

The next session is opened (and seeded) early, while the assistant's greeting is still to come;
the switch waits for the quiet moment after it. The greeting's transcript is saved in between, so
only the catch-up at the switch can bring it to the new session: the mock records the conversation
items each session received. Real time.
"""

from __future__ import annotations

import logging

from callsim.simulator.caller.script import Hangup, Pause, WaitForReply
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime

from .test_e2e import stack


def _texts(session) -> list[tuple[str, str]]:
    """(role, text) of the session's message items, in conversation order."""
    out = []
    for iid in session.order:
        item = session.items[iid]
        if item.type == "message":
            texts = [c.get("text") or c.get("transcript") for c in item.content or []]
            out.append((item.role, " ".join(t for t in texts if t)))
    return out


async def test_the_exchange_between_the_seed_and_the_switch_reaches_the_new_session(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="callsim.bridge.renewal")
    # the next session opens 0.5 s into the first; the greeting starts after 1.5 s of thinking and
    # plays for a second or so: the switch comes at the quiet moment after it, long before the limit
    behaviour = Behaviour(think=ThinkTime("fixed", 1500.0), seed=7, max_session_s=30)
    async with stack(tmp_path, behaviour, ai_greeting="Greet the caller warmly.",
                     openai_session_max_s=8.0, openai_renew_before_s=7.5) as (mock, app, base):
        result = await place_call(base + "/incoming-call", [WaitForReply(timeout_ms=8000), Pause(1500), Hangup()])
        assert await mock.wait_all_closed(2.0)
    assert result.ok, result.error
    lines = [r.getMessage() for r in caplog.records if "OpenAI session renewed" in r.getMessage()]
    # each new session is renewed in turn half a second after it opens: the later ones are seeded;
    # the call's last session may have been opened and not switched to before the hang-up
    first, second, *later = sorted(mock.sessions.values(), key=lambda s: s.index)[:len(lines) + 1]
    (said,) = [text for role, text in _texts(first) if role == "assistant"]  # the greeting
    assert said
    for sess in [second, *later]:
        assert _texts(sess)[:1] == [("assistant", said)], _texts(sess)
    assert "0 item(s) seeded when it connected, 1 new or changed since sent now" in lines[0], lines[0]
